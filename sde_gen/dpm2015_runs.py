"""Runs of the 2015 discrete models through `launch.py`: snapshots during training,
`--mode=eval` (the bound K on the test split, the entropy bounds of each reverse step,
samples and their quality) and `--mode=sample` (samples, trajectories, inpainting).

Figures: for 2-D data the paper's first figure (forward trajectories of the data at
t = 0, T/2, T above the reverse chain's samples at T, T/2, 0), for binary sequences the
samples as rows of black and white bins, for images a sample grid.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from matplotlib.figure import Figure

from . import plotting
from .dpm2015 import inpaint_factor, reverse_fn
from .likelihood import nats_to_bits_per_dim


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


def snapshot(workdir, step, model, ema_params, key, n, info):
    """Samples of the EMA reverse chain at a snapshot: `samples/step_<n>.npz` and a PNG."""
    chain, reverse = reverse_fn(model, ema_params)
    x = np.asarray(chain.sample(key, reverse, (n, model.dim)))
    path = os.path.join(workdir, "samples", f"step_{step}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path + ".npz", samples=x)
    _save_samples(path + ".png", x, info, title=f"step {step}")


def bound_report(config, model, params, x, key) -> dict:
    """K over `x` (every step summed, one draw of x_t per step and example): mean and
    standard error per example in nats and bits, bits per dimension, and the entropy of
    each learned reverse step (mean over the examples) with its bounds."""
    chain, reverse = reverse_fn(model, params)
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
    report["entropy_bounds_nats"] = {"t": ts.tolist(), "lower": lower, "upper": upper}
    xs = jnp.asarray(x[:512])
    entropies = []
    for t in ts:
        tb = jnp.full((len(xs),), t)
        kernel = reverse(chain.sample_marginal(jax.random.fold_in(key, int(t)), xs, tb), tb)
        entropies.append(float(jnp.mean(chain.kernel_entropy(kernel))))
    report["entropy_bounds_nats"]["learned"] = entropies
    return report


def _arrays(config, split, limit=None):
    from .evaluate import _dataset_arrays

    x, _, info = _dataset_arrays(config, split, limit)
    return x.reshape(len(x), -1), info


def _heartbeat_metrics(samples) -> dict:
    from .data import HEARTBEAT_PERIOD

    bins = np.arange(samples.shape[1])
    valid = [
        any(np.array_equal(s, (bins - p) % HEARTBEAT_PERIOD == 0) for p in range(HEARTBEAT_PERIOD))
        for s in samples.astype(bool)
    ]
    return {
        "valid_sequence_fraction": float(np.mean(valid)),
        "data_log_likelihood_bits": -math.log2(HEARTBEAT_PERIOD),  # the K a perfect model gets
    }


def evaluate(config, workdir, step, model, params) -> dict:
    """`--mode=eval` of a 2015 model: K on the test split (its first `eval.bpd_num_examples`;
    0: all), samples and their quality."""
    from . import evaluate as ev

    t0 = time.perf_counter()
    limit = int(config.eval.get("bpd_num_examples", 0)) or None
    x, info = _arrays(config, config.eval.get("reference_split", "test"), limit)
    key = jax.random.fold_in(jax.random.key(int(config.seed) + 5), step)
    report = {"step": step, **bound_report(config, model, params, x, key)}
    chain, reverse = reverse_fn(model, params)
    n = int(config.eval.num_samples)
    samples = np.asarray(chain.sample(jax.random.fold_in(key, 1), reverse, (n, model.dim)))
    folder = os.path.join(workdir, "eval")
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, f"samples_{step}_dpm2015.npz"), samples=samples)
    _save_samples(os.path.join(folder, f"samples_{step}_dpm2015.png"), samples[:400], info)
    if info.name == "heartbeat":
        report.update(_heartbeat_metrics(samples))
    else:
        images = samples.reshape(n, *info.shape)
        report.update(ev.sample_quality(config, workdir, images, info))
    report["seconds"] = time.perf_counter() - t0
    path = os.path.join(folder, f"report_{step}_dpm2015.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    logging.info("step %d: K = %.3f bits (%s) -> %s", step, report["K_bits"], info.name, path)
    return report


def sample(config, workdir, step, model, params) -> str:
    """`--mode=sample`: samples, the forward / reverse trajectories (2-D data), and for
    images, inpainting of the test split's right halves by multiplied reverse steps."""
    x, info = _arrays(config, "test")
    chain, reverse = reverse_fn(model, params)
    key = jax.random.fold_in(jax.random.key(int(config.seed) + 6), step)
    folder = os.path.join(workdir, "eval", f"sample_{step}_dpm2015")
    os.makedirs(folder, exist_ok=True)
    n = int(config.eval.num_samples)
    states = np.asarray(chain.sample(key, reverse, (n, model.dim), trajectory=True))
    np.savez(os.path.join(folder, "samples.npz"), samples=states[-1])
    _save_samples(os.path.join(folder, "samples.png"), states[-1][:400], info)
    if model.dim == 2:
        forward = np.asarray(chain.forward_trajectory(jax.random.fold_in(key, 1), jnp.asarray(x)))
        save_trajectories(os.path.join(folder, "trajectories.png"), forward, states)
    if info.n_levels is not None:
        from .evaluate import task_mask

        images = x[:32].reshape(-1, *info.shape)
        known = np.broadcast_to(task_mask("left_half", *info.shape[:2])[..., None], info.shape)
        factor = inpaint_factor(known.reshape(-1), jnp.asarray(x[:32]), chain)
        restored = np.asarray(
            chain.sample(jax.random.fold_in(key, 2), reverse, (32, model.dim), perturb=factor)
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
