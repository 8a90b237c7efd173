"""Evaluation of a training run's checkpoints: `--mode=sample` and `--mode=eval`.

- **Samples** from the EMA parameters with the config's sampler, in batches of
  `eval.batch_size` sharded over local devices with `pmap`. Each finished batch is written
  to `eval/samples_<run>/batch_<i>.npz` at once, so an interrupted evaluation resumes
  without redoing it; a PNG grid of the first batch sits beside them. `<run>` is
  `<step>_<sampler>_<hash>` (`run_name`): each sampler keeps its own samples and report.
- **Sample quality** in a feature space chosen by `eval.features`: "inception" (FID, KID,
  Inception Score with the standard FID network, weights from `eval.inception_weights`),
  "classifier" (a small CNN trained by the framework on the data set's labels: FID/KID in
  its feature space and a classifier score; the default for digits and grayscale data) or
  "data" (the raw coordinates: 2-D toy data, plus exact metrics against the known density
  of `gmm`). Reference statistics of the data are computed once and cached in `eval/`.
- **Likelihood**: bits/dim over `eval.bpd_dataset` with the probability-flow ODE
  (Hutchinson or exact divergence), uniform dequantization repeated `eval.bpd_repeats`
  times, mean and standard error.
- **Report**: `eval/report_<run>.json` with the metrics, sampler, NFE, number of samples
  and timings, for the latest, a given, or every checkpoint (`eval.checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from . import build, data, models, plotting
from . import metrics as metrics_lib
from ._checks import choose
from .likelihood import bits_per_dim, log_likelihood, nats_to_bits_per_dim
from .losses import nll_bound
from .score import ModelClassifier
from .train import Checkpoints, _format_seconds, init_state, replicate

FEATURES = ("auto", "inception", "classifier", "data")
# Report keys of each feature space start with its prefix: fid, classifier_fid, data_fid.
METRIC_PREFIX = {"inception": "", "classifier": "classifier_", "data": "data_"}


def _progress(what: str, done: int, total: int, start: float) -> None:
    rate = done / max(time.perf_counter() - start, 1e-9)
    logging.info(
        "%s: %d/%d  %.3g/s  ETA %s", what, done, total, rate, _format_seconds((total - done) / rate)
    )


def checkpoint_steps(config, workdir: str) -> list[int]:
    """The checkpoint steps `eval.checkpoint` selects: "latest", "all", or a step number."""
    ckpts = Checkpoints(workdir, 1000)
    steps = sorted(set(ckpts.snapshots.all_steps()) | set(ckpts.preemption.all_steps()))
    ckpts.close()
    if not steps:
        raise FileNotFoundError(f"no checkpoints in {workdir}: train first (--mode=train)")
    which = config.eval.get("checkpoint", "latest")
    if which == "latest":
        return steps[-1:]
    if which == "all":
        return steps
    if isinstance(which, int) or (isinstance(which, str) and which.isdigit()):
        if int(which) not in steps:
            raise ValueError(
                f"config.eval.checkpoint={which!r}: no such checkpoint in {workdir}; have {steps}"
            )
        return [int(which)]
    raise ValueError(
        f"config.eval.checkpoint must be 'latest', 'all' or a step number; got {which!r}"
    )


def load_ema_params(config, workdir: str, step: int, shape: tuple[int, ...]):
    """The EMA parameters of checkpoint `step`."""
    model, optimizer = build.get_model(config), build.get_optimizer(config)
    abstract = init_state(jax.random.key(0), model, optimizer, jnp.zeros((1, *shape)))
    ckpts = Checkpoints(workdir, 1000)
    state, _ = ckpts.restore(step, abstract)
    ckpts.close()
    return state.ema_params


def load_classifier(config, sde) -> ModelClassifier:
    """The noise-conditional classifier of `config.sampling.classifier_workdir`: its saved
    config, the EMA parameters of its latest checkpoint, without labels (bind them with
    `dataclasses.replace(classifier, labels=y)`). Refuses a classifier trained on another
    SDE or data set, whose `p_t(y | x)` belongs to other marginals."""
    import ml_collections

    workdir = build.guidance_settings(config)["classifier_workdir"]
    path = os.path.join(workdir or "", "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"config.sampling.classifier_workdir={workdir!r} holds no config.json: train a "
            "classifier there first (launch.py --config=configs/classifier_digits.py)"
        )
    with open(path) as f:
        cfg = ml_collections.ConfigDict(json.load(f))
    if not build.is_classifier(cfg):
        raise build.ConfigError(f"{workdir} holds a {cfg.model.name!r} run, not a classifier")
    if build.get_sde(cfg) != sde or cfg.data.dataset != config.data.dataset:
        raise build.ConfigError(
            f"the classifier in {workdir} was trained for {build.get_sde(cfg)} on "
            f"{cfg.data.dataset!r}; sampling uses {sde} on {config.data.dataset!r}"
        )
    step = checkpoint_steps(cfg, workdir)[-1]
    shape = _info(cfg).shape
    params = load_ema_params(cfg, workdir, step, shape)
    logging.info("classifier guidance: %s step %d", workdir, step)
    return build.get_classifier_fn(cfg, build.get_model(cfg), params, sde)


def sample_labels(config, start: int, n: int):
    """The classes of samples `start .. start + n - 1` of an evaluation: sample i is drawn
    for class `i mod classes` (balanced classes); None when sampling is unconditional."""
    classes = build.sample_classes(config)
    return None if not classes else (start + np.arange(n)) % classes


def run_name(config, step: int) -> str:
    """`<step>_<sampler>_<hash>`: names the samples folder and the report of one evaluation.

    The hash covers everything the sample batches depend on (sampler settings, batch size,
    seed), so another sampler never reuses, or overwrites, another's samples or report.
    """
    settings = build.sampler_settings(config)
    key = json.dumps([settings, int(config.eval.batch_size), int(config.seed)], sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:6]
    return f"{step}_{build.sampler_name(settings)}_{digest}"


def samples_folder(config, workdir: str, step: int) -> str:
    return os.path.join(workdir, "eval", f"samples_{run_name(config, step)}")


def generate_samples(config, workdir: str, step: int, ema_params, info) -> tuple[np.ndarray, dict]:
    """`eval.num_samples` samples from checkpoint `step`, resumable per batch."""
    sde, model = build.get_sde(config), build.get_model(config)
    sampler = build.get_sampler(config, sde)
    n_dev = jax.local_device_count()
    batch = int(config.eval.batch_size)
    if batch % n_dev:
        raise ValueError(f"config.eval.batch_size={batch} must be divisible by {n_dev} devices")
    num_batches = math.ceil(int(config.eval.num_samples) / batch)
    folder = samples_folder(config, workdir, step)
    os.makedirs(folder, exist_ok=True)

    classifier = None
    if build.guidance_settings(config)["classifier_scale"]:
        classifier = load_classifier(config, sde)

    def sample_one(key, params, labels, classifier):
        score_fn = build.get_score_fn(
            config, model, params, sde, labels=labels, guided=True, classifier=classifier
        )
        return sampler(key, score_fn, (batch // n_dev, *info.shape))

    p_sample = jax.pmap(sample_one, in_axes=(0, 0, 0, 0))
    p_params, p_classifier = replicate(ema_params), replicate(classifier)
    base = jax.random.fold_in(jax.random.key(int(config.seed) + 1), step)
    start, nfe, done_now = time.perf_counter(), None, 0
    for i in range(num_batches):
        path = os.path.join(folder, f"batch_{i}.npz")
        if os.path.exists(path):
            continue
        keys = jax.random.split(jax.random.fold_in(base, i), n_dev)
        labels = sample_labels(config, i * batch, batch)
        p_labels = None if labels is None else labels.reshape(n_dev, -1)
        x, nfe_i = p_sample(keys, p_params, p_labels, p_classifier)
        x = np.asarray(x).reshape(batch, *info.shape)
        tmp = path + ".tmp.npz"
        extra = {} if labels is None else {"labels": labels}
        np.savez(tmp, samples=x, nfe=int(nfe_i[0]), **extra)
        os.replace(tmp, path)  # a batch file exists only once complete
        done_now += 1
        _progress(f"sampling step {step} (batches of {batch})", i + 1, num_batches, start)
    files = [np.load(os.path.join(folder, f"batch_{i}.npz")) for i in range(num_batches)]
    samples = np.concatenate([f["samples"] for f in files])[: int(config.eval.num_samples)]
    nfe = int(files[0]["nfe"])
    if samples.ndim == 4:
        plotting.save_image_grid(
            os.path.join(folder, "grid.png"), samples[:100], info.data_range,
            scale=max(1, 64 // samples.shape[1]),
        )  # fmt: skip
    else:
        plotting.save_scatter(os.path.join(folder, "scatter.png"), samples[:4000])
    elapsed = time.perf_counter() - start
    return samples, {"nfe": nfe, "batches_sampled_now": done_now, "sampling_seconds": elapsed}


def _dataset_arrays(config, split: str, limit: int | None = None, seed: int = 0):
    """A whole split (or its first `limit` examples) as `(x, labels)` arrays, in order."""
    it, info = build.get_dataset(config, split, 1, shuffle=False, num_epochs=1, num_devices=1)
    n = info.num_examples if limit is None else min(limit, info.num_examples)
    batch = math.gcd(n, 256) or 1
    it, info = build.get_dataset(
        config, split, batch, shuffle=False, num_epochs=1, num_devices=1, seed=seed
    )
    xs, ys, count = [], [], 0
    for b in it:
        xs.append(b["x"][0])
        ys.append(b["label"][0] if "label" in b else np.zeros(len(b["x"][0]), np.int64))
        count += len(xs[-1])
        if count >= n:
            break
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n], info


def _feature_kind(config, info) -> str:
    kind = config.eval.get("features", "auto")
    choose("config.eval.features", kind, dict.fromkeys(FEATURES))
    if kind != "auto":
        return kind
    if len(info.shape) == 1:
        return "data"
    return "inception" if info.shape[-1] == 3 and info.shape[0] >= 32 else "classifier"


def _to_unit(x, data_range):
    lo, hi = data_range
    return np.clip((np.asarray(x) - lo) / (hi - lo), 0.0, 1.0)


class FeatureSpace:
    """Features and logits of samples or data, in the space `eval.features` names."""

    def __init__(self, config, workdir: str, info):
        self.kind = _feature_kind(config, info)
        self.info, self.extra = info, {}
        cache = os.path.join(workdir, "eval")
        if self.kind == "inception":
            from .metrics import inception

            variables = inception.load_inception(config.eval.get("inception_weights", None))
            net = inception.FIDInception()
            self._apply = jax.jit(lambda x: net.apply(variables, x))
        elif self.kind == "classifier":
            from .metrics.classifier import get_classifier

            def load(split):
                x, y, _ = _dataset_arrays(config, split)
                return x, y

            self.classifier = get_classifier(
                os.path.join(cache, f"classifier_{info.name}.npz"),
                load,
                steps=int(config.eval.get("classifier_steps", 1500)),
            )
            self.extra["classifier_test_accuracy"] = self.classifier.accuracy

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.kind == "data":
            return {"features": np.asarray(x).reshape(len(x), -1)}
        if self.kind == "classifier":
            return self.classifier(np.asarray(x, np.float32))
        images = _to_unit(x, self.info.data_range)
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        outs = [self._apply(jnp.asarray(images[i : i + 64])) for i in range(0, len(images), 64)]
        return {
            "features": np.concatenate([np.asarray(o["pool3"]) for o in outs]),
            "logits": np.concatenate([np.asarray(o["logits"]) for o in outs]),
        }


def reference_stats(config, workdir: str, space: FeatureSpace):
    """Feature statistics (and features, for KID) of the data's eval split, cached."""
    split = config.eval.get("reference_split", "test")
    path = os.path.join(workdir, "eval", f"reference_{space.kind}_{space.info.name}_{split}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return metrics_lib.FeatureStats(f["mu"], f["sigma"], int(f["n"])), f["features"]
    x, _, _ = _dataset_arrays(config, split, int(config.eval.get("reference_examples", 10_000)))
    features = space(x)["features"]
    stats = metrics_lib.feature_stats(features)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, mu=stats.mu, sigma=stats.sigma, n=stats.n, features=features)
    return stats, features


def sample_quality(
    config,
    workdir: str,
    samples: np.ndarray,
    info,
    space: FeatureSpace | None = None,
    labels: np.ndarray | None = None,
) -> dict:
    """FID / KID, improved precision and recall (and IS or the classifier score) of
    `samples` against the data, in `space` (built from the config when not given). With
    the classes the samples were drawn for (`labels`) and the classifier feature space, also
    `classifier_accuracy`: how often the domain classifier recognises the intended class."""
    space = FeatureSpace(config, workdir, info) if space is None else space
    ref_stats, ref_features = reference_stats(config, workdir, space)
    out = space(samples)
    stats = metrics_lib.feature_stats(out["features"])
    kid, kid_std = metrics_lib.kernel_distance(
        out["features"], ref_features, num_subsets=50, subset_size=min(1000, len(samples))
    )
    prefix = METRIC_PREFIX[space.kind]
    n_pr = min(len(samples), len(ref_features), 5000)
    precision, recall = metrics_lib.precision_recall(ref_features[:n_pr], out["features"][:n_pr])
    report = {
        f"{prefix}fid": metrics_lib.frechet_distance(stats, ref_stats),
        f"{prefix}kid": kid,
        f"{prefix}kid_std": kid_std,
        f"{prefix}precision": precision,
        f"{prefix}recall": recall,
        "features": space.kind,
        **space.extra,
    }
    if labels is not None and space.kind == "classifier":
        report["classifier_accuracy"] = float(np.mean(out["logits"].argmax(-1) == labels))
    if "logits" in out:
        name = "inception_score" if space.kind == "inception" else "classifier_score"
        splits = min(10, len(samples) // 2)
        report[name], report[name + "_std"] = metrics_lib.inception_score(out["logits"], splits)
    if info.name == "gmm":  # exact: the known density of the ring of Gaussians
        density = data.toy_density()
        x = jnp.asarray(samples)
        report["exact_mean_log_density"] = float(jnp.mean(density.log_prob(x)))
        reference = density.sample(jax.random.key(0), len(samples))
        report["exact_mean_log_density_of_data"] = float(jnp.mean(density.log_prob(reference)))
        weights = np.bincount(np.asarray(density.responsibilities(x)).argmax(1), minlength=8)
        report["component_weights_tv"] = float(0.5 * np.abs(weights / len(samples) - 1 / 8).sum())
    return report


def likelihood(config, workdir: str, score_fn, sde, key, score_fn_for_labels=None) -> dict:
    """Bits/dim over the eval split: PF-ODE log-likelihood of dequantized data, mean and
    standard error over examples x `eval.bpd_repeats` dequantizations. For a
    class-conditional model pass `score_fn_for_labels(labels) -> score_fn` instead of
    `score_fn`: the bits/dim of `p(x | y)` at each example's own label."""
    ev = config.eval
    split = ev.get("bpd_dataset", "test")
    repeats = int(ev.get("bpd_repeats", 1))
    limit = int(ev.get("bpd_num_examples", 0)) or None
    batch = int(ev.get("bpd_batch_size", 256))
    values, bounds, nfes, start = [], [], [], time.perf_counter()
    for r in range(repeats):
        dq = config.copy_and_resolve_references()
        dq.data.uniform_dequantization = True  # fresh dequantization noise per repeat:
        x_all, y_all, info = _dataset_arrays(dq, split, limit, seed=int(config.seed) + r)
        for i in range(0, len(x_all), batch):
            x = jnp.asarray(x_all[i : i + batch])
            if score_fn_for_labels is not None:
                score_fn = score_fn_for_labels(jnp.asarray(y_all[i : i + batch]))
            logp, _, nfe = log_likelihood(
                jax.random.fold_in(key, r * 100_000 + i), sde, score_fn, x,
                divergence=ev.get("divergence", "hutchinson"),
                rtol=float(ev.get("bpd_rtol", 1e-5)), atol=float(ev.get("bpd_atol", 1e-5)),
            )  # fmt: skip
            values.append(to_bits(logp, x.shape, info))
            nfes.append(int(nfe))
            if ev.get("enable_bound", False):
                bound_key = jax.random.fold_in(jax.random.fold_in(key, 1), r * 100_000 + i)
                nll, _ = nll_bound(
                    bound_key, sde, score_fn, x, num_samples=int(ev.get("bound_samples", 16))
                )
                bounds.append(to_bits(-nll, x.shape, info))
            done = r * len(x_all) + min(i + batch, len(x_all))
            _progress("bits/dim (examples)", done, repeats * len(x_all), start)
    values = np.concatenate(values)
    key_name = "bpd" if info.n_levels is not None else "nll_bits_per_dim"
    extra = {}
    if bounds:
        bounds = np.concatenate(bounds)
        extra = {
            f"bound_{key_name}": float(bounds.mean()),
            f"bound_{key_name}_stderr": float(bounds.std(ddof=1) / math.sqrt(len(bounds))),
        }
    return {
        **extra,
        key_name: float(values.mean()),
        key_name + "_stderr": float(values.std(ddof=1) / math.sqrt(len(values))),
        "bpd_examples": int(len(values)),
        "bpd_repeats": repeats,
        "bpd_mean_nfe": float(np.mean(nfes)),
        "bpd_divergence": ev.get("divergence", "hutchinson"),
        "bpd_class_conditional": score_fn_for_labels is not None,
        "bpd_seconds": time.perf_counter() - start,
    }


def to_bits(logp, x_shape, info) -> np.ndarray:
    """Bits/dim of discrete (dequantized) data, or `-log p / (D ln 2)` for continuous data."""
    if info.n_levels is not None:
        return np.asarray(bits_per_dim(logp, x_shape, info.data_range, info.n_levels))
    return np.asarray(nats_to_bits_per_dim(-logp, math.prod(x_shape[1:])))


def _info(config):
    _, info = build.get_dataset(config, "test", 1, shuffle=False, num_epochs=1, num_devices=1)
    return info


def task_mask(name: str, height: int, width: int, seed: int = 0) -> np.ndarray:
    """An `(H, W)` inpainting mask, 1 where pixels are known: "left_half" ... "bottom_half"
    (that half known), "center" (a centered square of half the size unknown), "random"
    (half of the pixels known, drawn with `seed`)."""
    choose("config.sampling.inpaint_mask", name, dict.fromkeys(build.INPAINT_MASKS))
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    known = {
        "left_half": np.broadcast_to(cols < width // 2, (height, width)),
        "right_half": np.broadcast_to(cols >= width // 2, (height, width)),
        "top_half": np.broadcast_to(rows < height // 2, (height, width)),
        "bottom_half": np.broadcast_to(rows >= height // 2, (height, width)),
        "center": ~(
            (abs(rows - (height - 1) / 2) < height / 4) & (abs(cols - (width - 1) / 2) < width / 4)
        ),
        "random": np.random.default_rng(seed).random((height, width)) < 0.5,
    }[name]
    return known.astype(np.float32)


def solve_inverse_problem(config, workdir: str, step: int, params, info) -> str:
    """`--mode=sample` with `sampling.task` "inpaint" or "colorize": the first
    `sampling.task_examples` images of `sampling.task_split`, degraded (a mask of
    `sampling.inpaint_mask`, or the channel mean), restored by `sample_inpaint` /
    `sample_colorize` with the config's PC predictor, corrector, snr and steps.

    Writes `eval/<task>_<step>_<hash>/`: `before_after.png` (rows of 8 in threes: the
    original, what the sampler sees, the result), `results.npz` and `report.json` (mean
    squared error on the restored coordinates). A class-conditional network is given each
    image's own label."""
    from .sampling import sample_colorize, sample_inpaint

    s, task = config.sampling, config.sampling.task
    settings = build.inverse_problem_settings(config)
    digest = hashlib.sha1(json.dumps([settings, int(config.seed)]).encode()).hexdigest()[:6]
    folder = os.path.join(workdir, "eval", f"{task}_{step}_{digest}")
    os.makedirs(folder, exist_ok=True)
    x, y, _ = _dataset_arrays(config, s.get("task_split", "test"), settings["examples"])
    sde, model = build.get_sde(config), build.get_model(config)
    labels = jnp.asarray(y) if models.num_classes(model) else None
    score_fn = build.get_score_fn(config, model, params, sde, labels=labels)
    kw = {k: settings[k] for k in ("predictor", "corrector", "snr", "num_steps", "eps")}
    kw.update(n_corrector_steps=settings["n_steps_each"], denoise=settings["denoise"])
    key = jax.random.fold_in(jax.random.key(int(config.seed) + 4), step)
    low, high = info.data_range
    t0 = time.perf_counter()
    if task == "inpaint":
        mask = task_mask(settings["mask"], *x.shape[1:3], seed=int(config.seed))[None, :, :, None]
        result, nfe = sample_inpaint(key, sde, score_fn, jnp.asarray(x), mask, **kw)
        observed = x * mask + 0.5 * (low + high) * (1 - mask)  # unknown pixels shown gray
        unknown = np.broadcast_to(1 - mask, x.shape)
    else:
        gray = x.mean(-1)
        result, nfe = sample_colorize(key, sde, score_fn, jnp.asarray(gray), **kw)
        observed = np.repeat(gray[..., None], x.shape[-1], -1)
        unknown = np.ones_like(x)
    result = np.asarray(result)
    seconds = time.perf_counter() - t0
    rows = []
    for i in range(0, len(x), 8):
        rows += [x[i : i + 8], observed[i : i + 8], result[i : i + 8]]
    plotting.save_image_grid(
        os.path.join(folder, "before_after.png"), np.concatenate(rows), info.data_range,
        scale=max(1, 64 // x.shape[1]), cols=min(8, len(x)),
    )  # fmt: skip
    np.savez(os.path.join(folder, "results.npz"), original=x, observed=observed, result=result)
    report = {
        "step": step,
        "task": task,
        **settings,
        "nfe": int(nfe),
        "mse_restored": float(np.sum((result - x) ** 2 * unknown) / np.sum(unknown)),
        "mse_observed_baseline": float(np.sum((observed - x) ** 2 * unknown) / np.sum(unknown)),
        "seconds": seconds,
    }
    with open(os.path.join(folder, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    logging.info("step %d: %s of %d images in %.1fs -> %s", step, task, len(x), seconds, folder)
    return folder


def _for_checkpoints(config, workdir: str, info, run) -> list:
    """`run(step, ema_params)` for every checkpoint `eval.checkpoint` selects."""
    return [
        run(step, load_ema_params(config, workdir, step, info.shape))
        for step in checkpoint_steps(config, workdir)
    ]


def sample(config, workdir: str) -> list[str]:
    """`--mode=sample`: samples (npz + PNG grid) from the selected checkpoints, or with
    `sampling.task` "inpaint" / "colorize" the restorations of `solve_inverse_problem`."""
    build.check_config(config)
    if build.is_classifier(config):
        raise build.ConfigError(
            f"config.model.name={config.model.name!r} is a classifier: it has nothing to sample "
            "(--mode=eval reports its accuracy; guide a score model with it through "
            "config.sampling.classifier_workdir)"
        )
    info, folders = _info(config), []
    if build.is_dpm2015(config):
        from . import dpm2015_runs

        model = build.get_model(config)
        run = lambda step, params: dpm2015_runs.sample(config, workdir, step, model, params)
        return _for_checkpoints(config, workdir, info, run)
    task = config.sampling.get("task", "generate")
    for step in checkpoint_steps(config, workdir):
        params = load_ema_params(config, workdir, step, info.shape)
        if task != "generate":
            folders.append(solve_inverse_problem(config, workdir, step, params, info))
            continue
        generate_samples(config, workdir, step, params, info)
        folders.append(samples_folder(config, workdir, step))
        logging.info("samples of step %d in %s", step, folders[-1])
    return folders


# Times (fractions of T) at which a noise-conditional classifier is evaluated.
CLASSIFIER_TIMES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def classifier_quality(config, workdir: str, step: int, params, info) -> dict:
    """Accuracy and cross-entropy of a noise-conditional classifier on the eval split
    (`eval.reference_split`), noised to `x_t` by the SDE at each of `CLASSIFIER_TIMES`
    (t = 0 is read as `training.eps`), and their mean over t (the training objective's
    average); a plot `eval/classifier_<step>.png` of accuracy against t."""
    import optax

    sde, model = build.get_sde(config), build.get_model(config)
    classifier = build.get_classifier_fn(config, model, params, sde)
    x_all, y_all, _ = _dataset_arrays(config, config.eval.get("reference_split", "test"))
    eps = float(config.training.get("eps", 1e-5))
    logits_fn = jax.jit(lambda c, x, t: c.logits(x, t))
    key = jax.random.key(int(config.seed) + 3)
    accuracy, cross_entropy = [], []
    for t_frac in CLASSIFIER_TIMES:
        t = max(t_frac * sde.T, eps)
        correct = losses = 0.0
        for i in range(0, len(x_all), 256):
            x, y = jnp.asarray(x_all[i : i + 256]), jnp.asarray(y_all[i : i + 256])
            z = jax.random.normal(jax.random.fold_in(key, i), x.shape)
            xt = sde.perturb(x, jnp.full((len(x),), t), z)
            logits = logits_fn(classifier, xt, jnp.full((len(x),), t))
            correct += float(jnp.sum(jnp.argmax(logits, -1) == y))
            losses += float(jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)))
        accuracy.append(correct / len(x_all))
        cross_entropy.append(losses / len(x_all))
    plotting.save_curve(
        os.path.join(workdir, "eval", f"classifier_{step}.png"),
        CLASSIFIER_TIMES, {"test accuracy": accuracy}, xlabel="t / T", log_y=False,
    )  # fmt: skip
    return {
        "times": list(CLASSIFIER_TIMES),
        "accuracy": accuracy,
        "cross_entropy": cross_entropy,
        "mean_accuracy": float(np.mean(accuracy)),
        "mean_cross_entropy": float(np.mean(cross_entropy)),
        "examples": int(len(x_all)),
    }


def evaluate(config, workdir: str) -> list[dict]:
    """`--mode=eval`: a report per selected checkpoint, `eval/report_<run name>.json`
    (for a classifier config: its accuracy against the noise level,
    `eval/report_<step>_classifier.json`; for a 2015 discrete model: the bound K,
    `eval/report_<step>_dpm2015.json`)."""
    build.check_config(config)
    info, reports = _info(config), []
    if build.is_dpm2015(config):
        from . import dpm2015_runs

        model = build.get_model(config)
        run = lambda step, params: dpm2015_runs.evaluate(config, workdir, step, model, params)
        return _for_checkpoints(config, workdir, info, run)
    if build.is_classifier(config):

        def run(step, params):
            report = {"step": step, **classifier_quality(config, workdir, step, params, info)}
            path = os.path.join(workdir, "eval", f"report_{step}_classifier.json")
            with open(path, "w") as f:
                json.dump(report, f, indent=2)
            logging.info("step %d: %s -> %s", step, json.dumps(report), path)
            return report

        return _for_checkpoints(config, workdir, info, run)
    sde, model = build.get_sde(config), build.get_model(config)
    space = None  # built once, at the first checkpoint that needs it
    for step in checkpoint_steps(config, workdir):
        t0 = time.perf_counter()
        params = load_ema_params(config, workdir, step, info.shape)
        report = {"step": step, "sampler": build.sampler_settings(config)}
        if config.eval.get("enable_sampling", True):
            samples, timing = generate_samples(config, workdir, step, params, info)
            report.update(num_samples=int(len(samples)), **timing)
            space = space or FeatureSpace(config, workdir, info)
            labels = sample_labels(config, 0, len(samples))
            report.update(sample_quality(config, workdir, samples, info, space, labels))
        if config.eval.get("enable_bpd", False):
            key = jax.random.fold_in(jax.random.key(int(config.seed) + 2), step)
            if models.num_classes(model):
                for_labels = lambda y: build.get_score_fn(config, model, params, sde, labels=y)
                report.update(likelihood(config, workdir, None, sde, key, for_labels))
            else:
                score_fn = build.get_score_fn(config, model, params, sde)
                report.update(likelihood(config, workdir, score_fn, sde, key))
        report["seconds"] = time.perf_counter() - t0
        path = os.path.join(workdir, "eval", f"report_{run_name(config, step)}.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        logging.info("step %d: %s -> %s", step, json.dumps(report), path)
        reports.append(report)
    return reports
