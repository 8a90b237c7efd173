"""The 2015 chain as an experiment kind: snapshots during training, `--mode=eval` (the
bound K on the test split, the entropy bounds of each reverse step, samples and their
quality) and `--mode=sample` (samples, trajectories, inpainting).

Figures: for 2-D data the paper's first figure (forward trajectories of the data at
t = 0, T/2, T above the reverse chain's samples at T, T/2, 0), for binary sequences the
samples as rows of black and white bins, for images a sample grid.
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from matplotlib.figure import Figure

from .. import data as data_lib
from .. import plotting
from ..experiments.base import AbstractExperiment
from ..experiments.inverse import task_mask
from ..experiments.quality import FeatureSpace, sample_quality
from ..experiments.reporting import write_report
from ..likelihood import nats_to_bits_per_dim
from .conditioning import inpaint_factor
from .net import reverse_fn
from .objective import loss


def _save_samples(path, x, info, title=""):
    if info.n_levels is not None:  # images
        x = x.reshape(len(x), *info.shape)
        plotting.save_image_grid(path, x, info.data_range, scale=max(1, 64 // x.shape[1]))
    elif x.shape[1] == 2:
        plotting.save_scatter(path, x, title=title)
    else:  # binary sequences
        fig = Figure(figsize=(6, 0.12 * len(x) + 0.6), dpi=100)
        ax = fig.add_subplot()
        ax.imshow(x, cmap="gray_r", aspect="auto", interpolation="nearest")
        ax.set_xlabel("bin")
        ax.set_ylabel("sample")
        ax.set_title(title)
        fig.savefig(path, bbox_inches="tight")


def save_trajectories(path, forward, reverse):
    """The paper's Fig. 1: `forward` `(T + 1, N, 2)` (x_0 first) and `reverse` `(T + 1, N, 2)`
    (x_T first) at t = 0, T/2, T."""
    big_t = forward.shape[0] - 1
    fig = Figure(figsize=(9, 6), dpi=100)
    for row, (states, label) in enumerate(((forward, "forward q"), (reverse, "reverse p"))):
        for col, t in enumerate((0, big_t // 2, big_t)):
            index = t if row == 0 else big_t - t
            ax = fig.add_subplot(2, 3, 3 * row + col + 1)
            ax.scatter(states[index, :, 0], states[index, :, 1], s=1)
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_aspect("equal")
            ax.set_title(f"{label}, t = {t}", fontsize=9)
    fig.savefig(path, bbox_inches="tight")


def heartbeat_metrics(samples) -> dict:
    """How many binary samples are exact heartbeat sequences, and the K a perfect model of
    the heartbeat data reaches (`-log2` of the number of phases)."""
    period = data_lib.HEARTBEAT_PERIOD
    bins = np.arange(samples.shape[1])
    valid = [
        any(np.array_equal(s, (bins - p) % period == 0) for p in range(period))
        for s in samples.astype(bool)
    ]
    return {
        "valid_sequence_fraction": float(np.mean(valid)),
        "data_log_likelihood_bits": -math.log2(period),
    }


class ChainExperiment(AbstractExperiment):
    """A learned 2015 reverse chain (`dpm2015.ReverseMLP`), trained on `-K`."""

    tag = "dpm2015"

    def loss_fn(self):
        network = self.network

        def loss_fn(params, x, labels, example_keys, dropout_key):
            return loss(network, params, x, example_keys)

        return loss_fn

    def _flat_split(self, split: str, limit: int | None = None):
        x, _ = self.load_split(split, limit)
        return x.reshape(len(x), -1)

    def snapshot(self, workdir, step, ema_params, key, writer) -> None:
        """Samples of the EMA reverse chain: `samples/step_<n>.npz` and a PNG."""
        chain, reverse = reverse_fn(self.network, ema_params)
        n = self.settings.training.snapshot_samples
        x = np.asarray(chain.sample(key, reverse, (n, self.network.dim)))
        path = os.path.join(workdir, "samples", f"step_{step}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(path + ".npz", samples=x)
        _save_samples(path + ".png", x, self.info, title=f"step {step}")

    def bound_report(self, params, x, key) -> dict:
        """K over `x` (every step summed, one draw of x_t per step and example): mean and
        standard error per example in nats and bits, bits per dimension, and the entropy of
        each learned reverse step (mean over the examples) with its bounds."""
        chain, reverse = reverse_fn(self.network, params)
        bound = jax.jit(lambda k, x: chain.bound(k, reverse, x))
        terms = {}
        for i in range(0, len(x), 512):
            out = bound(jax.random.fold_in(key, i), jnp.asarray(x[i : i + 512]))
            for name, value in out.items():
                terms.setdefault(name, []).append(np.asarray(value))
        terms = {name: np.concatenate(v) for name, v in terms.items()}
        k, d = terms["K"], x.shape[1]
        report = {
            "K_nats": float(k.mean()),
            "K_nats_stderr": float(k.std(ddof=1) / math.sqrt(len(k))),
            "K_bits": float(nats_to_bits_per_dim(k.mean())),
            "K_bits_per_dim": float(nats_to_bits_per_dim(k.mean(), d)),
            **{f"{name}_nats": float(v.mean()) for name, v in terms.items() if name != "K"},
            "examples": int(len(k)),
            "num_steps": chain.num_steps,
            "betas": np.asarray(chain.betas).tolist(),
        }
        ts = np.arange(2, chain.num_steps + 1)
        lower, upper = (np.asarray(b).tolist() for b in chain.entropy_bounds(jnp.asarray(ts), d))
        xs = jnp.asarray(x[:512])
        learned = []
        for t in ts:
            tb = jnp.full((len(xs),), t)
            xt = chain.sample_marginal(jax.random.fold_in(key, int(t)), xs, tb)
            learned.append(float(jnp.mean(chain.kernel_entropy(reverse(xt, tb)))))
        report["entropy_bounds_nats"] = {
            "t": ts.tolist(), "lower": lower, "upper": upper, "learned": learned,
        }  # fmt: skip
        return report

    def evaluate(self, workdir: str, step: int, ema_params) -> dict:
        """K on the eval split (its first `eval.bpd_num_examples`; 0: all), samples and their
        quality: `eval/report_<step>_dpm2015.json`."""
        t0 = time.perf_counter()
        ev = self.settings.eval
        x = self._flat_split(ev.reference_split, ev.bpd_num_examples)
        key = jax.random.fold_in(jax.random.key(self.settings.seed + 5), step)
        report = {"step": step, **self.bound_report(ema_params, x, key)}
        chain, reverse = reverse_fn(self.network, ema_params)
        n = ev.num_samples
        samples = np.asarray(
            chain.sample(jax.random.fold_in(key, 1), reverse, (n, self.network.dim))
        )
        folder = os.path.join(workdir, "eval")
        os.makedirs(folder, exist_ok=True)
        np.savez(os.path.join(folder, f"samples_{step}_dpm2015.npz"), samples=samples)
        _save_samples(os.path.join(folder, f"samples_{step}_dpm2015.png"), samples[:400], self.info)
        if self.info.name == "heartbeat":
            report.update(heartbeat_metrics(samples))
        else:
            space = FeatureSpace(
                ev.features, self.info, folder, lambda split, limit: self.load_split(split, limit),
                data_key={"dataset": self.info.name}, inception_weights=ev.inception_weights,
                classifier_steps=ev.classifier_steps,
            )  # fmt: skip
            reference = space.reference(
                ev.reference_split, ev.reference_examples, ev.reference_stats
            )
            images = samples.reshape(n, *self.info.shape)
            density = data_lib.exact_density(self.info.name)
            report.update(sample_quality(images, space, reference, exact_density=density))
        report["seconds"] = time.perf_counter() - t0
        write_report(os.path.join(folder, f"report_{step}_dpm2015.json"), report)
        logging.info("step %d: K = %.3f bits (%s)", step, report["K_bits"], self.info.name)
        return report

    def sample(self, workdir: str, step: int, ema_params) -> str:
        """Samples, the forward / reverse trajectories (2-D data), and for images,
        inpainting of the test split's left halves by multiplied reverse steps."""
        x = self._flat_split("test")
        chain, reverse = reverse_fn(self.network, ema_params)
        key = jax.random.fold_in(jax.random.key(self.settings.seed + 6), step)
        folder = os.path.join(workdir, "eval", f"sample_{step}_dpm2015")
        os.makedirs(folder, exist_ok=True)
        n, dim, info = self.settings.eval.num_samples, self.network.dim, self.info
        states = np.asarray(chain.sample(key, reverse, (n, dim), trajectory=True))
        np.savez(os.path.join(folder, "samples.npz"), samples=states[-1])
        _save_samples(os.path.join(folder, "samples.png"), states[-1][:400], info)
        if dim == 2:
            forward = np.asarray(
                chain.forward_trajectory(jax.random.fold_in(key, 1), jnp.asarray(x))
            )
            save_trajectories(os.path.join(folder, "trajectories.png"), forward, states)
        if info.n_levels is not None:
            images = x[:32].reshape(-1, *info.shape)
            known = np.broadcast_to(task_mask("left_half", *info.shape[:2])[..., None], info.shape)
            factor = inpaint_factor(known.reshape(-1), jnp.asarray(x[:32]), chain)
            restored = np.asarray(
                chain.sample(jax.random.fold_in(key, 2), reverse, (32, dim), perturb=factor)
            ).reshape(images.shape)
            observed = np.where(known, images, 0.5 * sum(info.data_range))
            rows = []
            for i in range(0, 32, 8):
                rows += [images[i : i + 8], observed[i : i + 8], restored[i : i + 8]]
            plotting.save_image_grid(
                os.path.join(folder, "inpainting.png"), np.concatenate(rows), info.data_range,
                scale=8, cols=8,
            )  # fmt: skip
        logging.info("step %d: samples and figures -> %s", step, folder)
        return folder
