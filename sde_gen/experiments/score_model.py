"""The score-model kind: a network trained by denoising score matching, sampled by the
configured sampler (with guidance), evaluated by sample quality and bits/dim, and used for
inpainting and colorization."""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from .. import data as data_lib
from .. import distributed, models, plotting
from ..dequantization import dequantize
from ..guidance import classifier_free_guidance, classifier_guidance
from ..likelihood import bits_per_dim, log_likelihood, nats_to_bits_per_dim
from ..losses import nll_bound
from ..score import ModelScore, ScoreFn
from .base import AbstractExperiment, balanced_labels
from .classifier import LoadedClassifier, load_guidance_classifier
from .config import ConfigError
from .inverse import solve_inverse_problem, task_folder
from .quality import FeatureSpace, cache_key, sample_quality
from .reporting import Progress, write_report
from .state import (
    DEQUANTIZER,
    TrainState,
    dequantized_loss_fn,
    dsm_loss_fn,
    init_state,
    local_rows,
    replicate,
)


class ScoreExperiment(AbstractExperiment):
    """A score network (`models.MODELS`): DSM training, sampling, quality and likelihood."""

    tag = "score"
    multi_process_modes = ("eval", "sample")  # sampling, features and bits/dim shared out

    def __init__(self, settings):
        super().__init__(settings)
        self.classes = models.num_classes(self.network)
        self.dequantizer = settings.dequantizer.module()
        self.guidance_classifier: LoadedClassifier | None = None
        self._space: FeatureSpace | None = None

    # --- score functions ---------------------------------------------------------------

    def score_fn(self, variables, labels=None, *, guided: bool = False, classifier=None) -> ScoreFn:
        """The network with `variables` as a score function (of `p_t(x | labels)` for a
        class-conditional network). With `guided=True`, the sampling guidance of the
        settings: classifier-free guidance (the null class is the unconditional model) and
        classifier guidance by `classifier` (a `ModelClassifier`), both for `labels`."""
        m = self.settings.model
        make = lambda y: ModelScore(
            model=self.network, variables=variables, sde=self.sde, output=m.output,
            time_input=m.time_input, time_scale=m.time_scale, labels=y,
        )  # fmt: skip
        if self.classes and labels is None:
            raise ValueError(
                f"the network is class-conditional ({self.classes} classes): pass labels"
            )
        score_fn = make(labels if self.classes else None)
        if not guided:
            return score_fn
        g = self.settings.sampling.guidance
        if g.cfg_weight:
            null = jnp.full_like(jnp.asarray(labels), self.classes)
            score_fn = classifier_free_guidance(score_fn, make(null), g.cfg_weight)
        if g.classifier_scale:
            if classifier is None or labels is None:
                raise ValueError("classifier guidance needs the classifier and the labels")
            guide = dataclasses.replace(classifier, labels=labels)
            score_fn = classifier_guidance(score_fn, guide, g.classifier_scale)
        return score_fn

    def sample_classes(self) -> int:
        """How many classes samples are drawn for: the network's, or the data's when a
        classifier guides an unconditional network; 0 for plain unconditional sampling."""
        if not self.classes and self.settings.sampling.guidance.classifier_scale:
            return self.info.num_classes
        return self.classes

    # --- training ----------------------------------------------------------------------

    def init_state(self, key: jax.Array) -> TrainState:
        """A fresh state; with a learned dequantizer, its parameters beside the network's."""
        x = jnp.zeros((1, *self.info.shape), jnp.float32)
        return init_state(key, self.network, self.optimizer(), x, self.dequantizer)

    def loss_fn(self):
        m, t = self.settings.model, self.settings.training
        if self.dequantizer is not None:
            return dequantized_loss_fn(
                self.sde, self.network, self.dequantizer, time_sampler=t.loss.time_sampler,
                n_levels=self.info.n_levels, data_range=self.info.data_range, output=m.output,
                time_input=m.time_input, time_scale=m.time_scale, compute_dtype=t.compute_dtype,
            )  # fmt: skip
        return dsm_loss_fn(
            self.sde, self.network, weighting=t.loss.weighting, time_sampler=t.loss.time_sampler,
            reduce_mean=t.loss.reduce_mean, output=m.output, time_input=m.time_input,
            time_scale=m.time_scale, label_dropout=t.label_dropout, compute_dtype=t.compute_dtype,
        )  # fmt: skip

    def snapshot(self, workdir, step, ema_params, key, writer) -> None:
        """Samples from the EMA parameters: `samples/step_<n>.npz` and a PNG grid (one row
        per class for a class-conditional network) or a scatter plot over the data (2-D)."""
        n, cols, labels = self.settings.training.snapshot_samples, None, None
        if self.classes:
            cols = -(-n // self.classes)  # one row of `cols` samples per class
            labels = jnp.repeat(jnp.arange(self.classes), cols)
            n = self.classes * cols
        t0 = time.perf_counter()
        sampler = self.settings.sampling.sampler
        x, nfe = sampler(key, self.sde, self.score_fn(ema_params, labels), (n, *self.info.shape))
        x = np.asarray(x)
        path = os.path.join(workdir, "samples", f"step_{step}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(path + ".npz", samples=x, **({} if labels is None else {"labels": labels}))
        if x.ndim == 4:
            scale = max(1, 64 // x.shape[1])
            plotting.save_image_grid(path + ".png", x, self.info.data_range, scale=scale, cols=cols)
            writer.image(step, "samples", plotting.image_grid(x, self.info.data_range, cols=cols))
        else:
            density = data_lib.exact_density(self.info.name)
            reference = (
                None if density is None else np.asarray(density.sample(jax.random.key(0), 2000))
            )
            plotting.save_scatter(path + ".png", x, reference, title=f"step {step}")
        logging.info(
            "step %d: %d samples (%d NFE) in %.1fs -> %s.png", step, n, nfe,
            time.perf_counter() - t0, path,
        )  # fmt: skip

    # --- evaluation ----------------------------------------------------------------------

    def prepare(self, workdir: str, mode: str) -> None:
        if mode == "eval":
            self.settings.eval.check_feature_weights()
        g = self.settings.sampling.guidance
        if g.classifier_scale and self.guidance_classifier is None:
            self.guidance_classifier = load_guidance_classifier(g, self.sde, self.info.name)

    def sampling_run(self, step: int) -> tuple[str, dict]:
        """`(name, description)` of one checkpoint's evaluation samples. The name is
        `<step>_<sampler>[-<guidance>]_<hash>`, the hash over everything the samples depend on
        (checkpoint, SDE, sampler, guidance and its classifier's checkpoint, count, batch,
        seed), so any changed setting samples afresh instead of reusing another's batches."""
        s, ev = self.settings, self.settings.eval
        g = s.sampling.guidance
        description = {
            "step": step,
            "sde": repr(s.sde),
            "sampler": s.sampling.sampler.describe(),
            "guidance": g.describe(),
            "classifier_step": None
            if self.guidance_classifier is None
            else self.guidance_classifier.step,
            "num_samples": ev.num_samples,
            "batch_size": ev.batch_size,
            "seed": s.seed,
        }
        digest = cache_key(**description)
        tag = "-".join(p for p in (s.sampling.sampler.run_name(), g.tag()) if p)
        return f"{step}_{tag}_{digest}", description

    def generate_samples(self, workdir: str, step: int, ema_params) -> tuple[np.ndarray, dict]:
        """`eval.num_samples` samples from checkpoint `step`, in batches of `eval.batch_size`
        sharded over the devices of every process (one key per device of the run); each
        finished batch is written at once (by process 0), so an interrupted evaluation
        resumes without redoing it."""
        ev, sampler = self.settings.eval, self.settings.sampling.sampler
        n_dev, n_local = jax.device_count(), jax.local_device_count()
        first = jax.process_index() * n_local  # this process's first device, globally
        main = distributed.is_main()
        batch = ev.batch_size
        if batch % n_dev:
            raise ValueError(f"config.eval.batch_size={batch} must be divisible by {n_dev} devices")
        num_batches = math.ceil(ev.num_samples / batch)
        name, description = self.sampling_run(step)
        folder = os.path.join(workdir, "eval", f"samples_{name}")
        manifest = os.path.join(folder, "manifest.json")
        if main:
            os.makedirs(folder, exist_ok=True)
            if not os.path.exists(manifest):
                write_report(manifest, description)
        # the batches an earlier, interrupted evaluation finished (process 0 decides)
        readable = lambda i: _readable(os.path.join(folder, f"batch_{i}.npz"))  # noqa: E731
        done = [i for i in range(num_batches) if readable(i)] if main else None
        done = distributed.broadcast("sampled-batches", done)
        classifier = (
            None if self.guidance_classifier is None else self.guidance_classifier.classifier
        )
        shape = (batch // n_dev, *self.info.shape)

        def sample_one(key, params, labels, classifier):
            score_fn = self.score_fn(params, labels, guided=True, classifier=classifier)
            x, nfe = sampler(key, self.sde, score_fn, shape)
            return x, jnp.asarray(nfe)  # a constant, or an adaptive solver's count

        p_sample = jax.pmap(sample_one, in_axes=(0, 0, 0, 0))
        p_params, p_classifier = replicate(ema_params), replicate(classifier)
        base = jax.random.fold_in(jax.random.key(self.settings.seed + 1), step)
        progress, done_now = Progress(f"sampling step {step} (batches of {batch})", num_batches), 0
        for i in range(num_batches):
            path = os.path.join(folder, f"batch_{i}.npz")
            if i in done:
                continue
            # one key per device of the run, each process sampling on its own devices
            keys = jax.random.split(jax.random.fold_in(base, i), n_dev)[first : first + n_local]
            labels = balanced_labels(self.sample_classes(), i * batch, batch)
            p_labels = None
            if labels is not None:
                p_labels = labels.reshape(n_dev, -1)[first : first + n_local]
            x, nfe = p_sample(keys, p_params, p_labels, p_classifier)
            x, nfe = (
                distributed.gather_rows(local_rows(x)),
                distributed.gather_rows(local_rows(nfe)),
            )
            x = x.reshape(batch, *self.info.shape)
            if main:
                tmp = path + ".tmp.npz"
                extra = {} if labels is None else {"labels": labels}
                np.savez(tmp, samples=x, nfe=int(np.max(nfe)), **extra)
                os.replace(tmp, path)  # a batch file exists only once complete
            done_now += 1
            progress(i + 1)
        distributed.barrier("samples-written")
        files = [np.load(os.path.join(folder, f"batch_{i}.npz")) for i in range(num_batches)]
        samples = np.concatenate([f["samples"] for f in files])[: ev.num_samples]
        nfe = int(files[0]["nfe"])
        if main and samples.ndim == 4:
            plotting.save_image_grid(
                os.path.join(folder, "grid.png"), samples[:100], self.info.data_range,
                scale=max(1, 64 // samples.shape[1]),
            )  # fmt: skip
        elif main:
            plotting.save_scatter(os.path.join(folder, "scatter.png"), samples[:4000])
        timing = {"nfe": nfe, "batches_sampled_now": done_now, "sampling_seconds": progress.seconds}
        return samples, {"samples_folder": folder, **timing}

    def feature_space(self, workdir: str) -> FeatureSpace:
        """The feature space of `eval.features`, built once."""
        if self._space is None:
            ev, d = self.settings.eval, self.settings.data
            data_key = {
                "dataset": d.dataset, "image_size": d.image_size, "centered": d.centered,
                "uniform_dequantization": d.uniform_dequantization,
            }  # fmt: skip
            self._space = FeatureSpace(
                ev.features, self.info, os.path.join(workdir, "eval"),
                lambda split, limit: self.load_split(split, limit),
                data_key=data_key, inception_weights=ev.inception_weights,
                classifier_steps=ev.classifier_steps,
            )  # fmt: skip
        return self._space

    def quality(self, workdir: str, samples: np.ndarray, labels=None) -> dict:
        """Sample quality of `samples` against the eval reference split."""
        ev = self.settings.eval
        space = self.feature_space(workdir)
        reference = space.reference(ev.reference_split, ev.reference_examples, ev.reference_stats)
        density = data_lib.exact_density(self.info.name)
        return sample_quality(samples, space, reference, labels, exact_density=density)

    def likelihood(self, key: jax.Array, params) -> dict:
        """Bits/dim over the eval split of the network with `params`: PF-ODE log-likelihood
        of uniformly dequantized data, mean and standard error over examples x
        `eval.bpd_repeats` dequantizations (for a class-conditional model, of `p(x | y)` at
        each example's own label). With a learned dequantizer, also its bound
        `-log p(y) + log q(u | k)` under the same keys prefixed `vardeq_`."""
        score_fn_for = lambda labels: self.score_fn(params, labels)
        out = self.likelihood_of(key, score_fn_for)
        if self.dequantizer is not None:
            flow = {"params": params[DEQUANTIZER]}
            learned = self.likelihood_of(key, score_fn_for, flow)
            name = self._bpd_name()
            keys = (name, f"{name}_stderr", f"bound_{name}", f"bound_{name}_stderr", "bpd_seconds")
            out.update({f"vardeq_{k}": learned[k] for k in keys if k in learned})
        return out

    def _bpd_name(self) -> str:
        return "bpd" if self.info.n_levels is not None else "nll_bits_per_dim"

    def likelihood_of(self, key: jax.Array, score_fn_for, flow_variables=None) -> dict:
        """Bits/dim over the eval split of the score `score_fn_for(labels)` (labels None for
        an unconditional network), under uniform dequantization or, with `flow_variables`,
        the experiment's learned dequantizer with those variables."""
        ev, info = self.settings.eval, self.info
        limit = ev.bpd_num_examples
        what = "uniform" if flow_variables is None else "learned"
        # fresh dequantization noise per repeat (uniform: drawn by the pipeline)
        splits = [
            self.load_split(
                ev.bpd_dataset, limit, seed=self.settings.seed + r,
                dequantize=flow_variables is None,
            )  # fmt: skip
            for r in range(ev.bpd_repeats)
        ]  # fmt: skip
        n = len(splits[0][0])
        starts = range(0, n, ev.bpd_batch_size)
        batches = [(r, i) for r in range(ev.bpd_repeats) for i in starts]
        progress = Progress(f"bits/dim, {what} dequantization (examples)", ev.bpd_repeats * n)

        def one_batch(j: int) -> dict:
            # the batches are shared out over the processes of a multi-process run
            r, i = batches[j]
            x_all, y_all = splits[r]
            x = jnp.asarray(x_all[i : i + ev.bpd_batch_size])
            log_q = 0.0
            if flow_variables is not None:
                flow_key = jax.random.fold_in(jax.random.fold_in(key, 2), r * 100_000 + i)
                x, log_q = dequantize(
                    self.dequantizer,
                    flow_variables,
                    flow_key,
                    x,
                    info.n_levels,
                    info.data_range,
                )
            labels = jnp.asarray(y_all[i : i + ev.bpd_batch_size]) if self.classes else None
            score_fn = score_fn_for(labels)
            logp, _, nfe = log_likelihood(
                jax.random.fold_in(key, r * 100_000 + i), self.sde, score_fn, x,
                divergence=ev.divergence, rtol=ev.bpd_rtol, atol=ev.bpd_atol,
            )  # fmt: skip
            out = {"values": self.bits(logp - log_q, x.shape), "nfe": np.asarray([nfe])}
            if ev.enable_bound:
                bound_key = jax.random.fold_in(jax.random.fold_in(key, 1), r * 100_000 + i)
                nll, _ = nll_bound(bound_key, self.sde, score_fn, x, num_samples=ev.bound_samples)
                out["bounds"] = self.bits(-nll - log_q, x.shape)
            progress(r * n + min(i + ev.bpd_batch_size, n))
            return out

        outs = distributed.map_chunks(one_batch, len(batches))
        values = np.concatenate([o["values"] for o in outs])
        nfes = [int(o["nfe"][0]) for o in outs]
        bounds = [o["bounds"] for o in outs if "bounds" in o]
        name = self._bpd_name()
        out = {}
        if bounds:
            bounds = np.concatenate(bounds)
            out = {
                f"bound_{name}": float(bounds.mean()),
                f"bound_{name}_stderr": float(bounds.std(ddof=1) / math.sqrt(len(bounds))),
            }
        return {
            **out,
            name: float(values.mean()),
            name + "_stderr": float(values.std(ddof=1) / math.sqrt(len(values))),
            "bpd_examples": int(len(values)),
            "bpd_repeats": ev.bpd_repeats,
            "bpd_mean_nfe": float(np.mean(nfes)),
            "bpd_divergence": ev.divergence,
            "bpd_class_conditional": bool(self.classes),
            "bpd_seconds": progress.seconds,
        }

    def bits(self, logp, x_shape) -> np.ndarray:
        """Bits/dim of discrete (dequantized) data, or `-log p / (D ln 2)` for continuous data."""
        if self.info.n_levels is not None:
            return np.asarray(bits_per_dim(logp, x_shape, self.info.data_range, self.info.n_levels))
        return np.asarray(nats_to_bits_per_dim(-logp, math.prod(x_shape[1:])))

    def evaluate(self, workdir: str, step: int, ema_params) -> dict:
        """Samples and their quality, bits/dim: `eval/report_<sampling run>.json`."""
        t0 = time.perf_counter()
        ev = self.settings.eval
        name, description = self.sampling_run(step)
        report = {
            "step": step,
            "sampler": description["sampler"],
            "guidance": description["guidance"],
        }
        if ev.enable_sampling:
            samples, timing = self.generate_samples(workdir, step, ema_params)
            report.update(num_samples=int(len(samples)), **timing)
            labels = balanced_labels(self.sample_classes(), 0, len(samples))
            report.update(self.quality(workdir, samples, labels))
        if ev.enable_bpd:
            key = jax.random.fold_in(jax.random.key(self.settings.seed + 2), step)
            report.update(self.likelihood(key, ema_params))
        report["seconds"] = time.perf_counter() - t0
        if distributed.is_main():
            write_report(os.path.join(workdir, "eval", f"report_{name}.json"), report)
        return report

    def sample(self, workdir: str, step: int, ema_params) -> str:
        """Samples (npz + PNG grid), or with `sampling.task` the restorations of
        `solve_inverse_problem` (a class-conditional network is given each image's label)."""
        task = self.settings.sampling.task
        if task is None:
            _, timing = self.generate_samples(workdir, step, ema_params)
            logging.info("samples of step %d in %s", step, timing["samples_folder"])
            return timing["samples_folder"]
        if jax.process_count() > 1:
            raise ConfigError(
                f"config.sampling.task={task.task!r} runs in one process: start it without "
                "--num_processes / --distributed"
            )
        x, y = self.load_split(task.split, task.examples)
        labels = jnp.asarray(y) if self.classes else None
        folder = task_folder(
            workdir, step, task, {"sde": repr(self.sde), "seed": self.settings.seed}
        )
        key = jax.random.fold_in(jax.random.key(self.settings.seed + 4), step)
        solve_inverse_problem(
            task, self.sde, self.score_fn(ema_params, labels), x, self.info.data_range, folder,
            key, seed=self.settings.seed, extra={"step": step},
        )  # fmt: skip
        return folder


def _readable(path: str) -> bool:
    """Whether a saved sample batch exists and loads (a torn file is sampled again)."""
    if not os.path.exists(path):
        return False
    try:
        with np.load(path) as f:
            f["samples"].shape, int(f["nfe"])
        return True
    except Exception:  # a file that does not load is redone, never trusted
        return False
