"""Data-parallel training of score networks: the train state, the optimizer and the step.

One pure function, `train_step(state, batch, key)`, `jax.pmap`-ed over local devices with
`axis_name="batch"`: per-example losses from `dsm_loss`, gradients and metrics averaged
with `lax.pmean`, an optax update, and an EMA of the parameters.

Randomness is keyed by `(step, global example index)`: example i of the global batch
draws from `fold_in(split(fold_in(key, step))[0], i)`. Each example's time and noise
therefore do not depend on how the batch is split over devices, so a step on 8 devices
equals the same global batch on one, and a resumed run repeats the uninterrupted one.
(Dropout, where a model has it, draws per device:
`fold_in(split(fold_in(key, step))[1], device index)`.)
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from . import dpm2015, models
from ._checks import check_positive, check_steps
from .losses import AbstractTimeSampler, Weighting, draw_times_and_noise, dsm_losses
from .models import count_params, num_classes
from .score import ModelClassifier, ModelScore
from .sde import AbstractLinearSDE

AXIS = "batch"
MAX_IN_FLIGHT = 2  # train steps dispatched ahead of the host


class TrainState(flax.struct.PyTreeNode):
    """Everything a training run needs to continue exactly: step, parameters, EMA, optimizer."""

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any


def make_optimizer(
    lr: float = 2e-4,
    warmup: int = 5000,
    grad_clip: float | None = 1.0,
    beta1: float = 0.9,
    eps: float = 1e-8,
    weight_decay: float | None = None,
) -> optax.GradientTransformation:
    """score_sde's optimizer: gradient clipping by global norm, then Adam with a linear
    learning-rate warm-up over `warmup` steps (none if 0); AdamW if `weight_decay` is given."""
    check_positive("make_optimizer", lr=lr, eps=eps)
    if warmup:
        check_steps("warmup", warmup)
        schedule = optax.linear_schedule(0.0, lr, warmup)
    else:
        schedule = lr
    if weight_decay is None:
        adam = optax.adam(schedule, b1=beta1, eps=eps)
    else:
        adam = optax.adamw(schedule, b1=beta1, eps=eps, weight_decay=weight_decay)
    if grad_clip is None:
        return adam
    check_positive("make_optimizer", grad_clip=grad_clip)
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam)


def init_state(
    key: jax.Array, model: nn.Module, optimizer: optax.GradientTransformation, x_example
) -> TrainState:
    """A fresh state; the EMA starts at the initial parameters."""
    kw = {"y": jnp.zeros((x_example.shape[0],), jnp.int32)} if num_classes(model) else {}
    params = model.init(key, x_example, jnp.zeros((x_example.shape[0],)), **kw)
    return TrainState(jnp.zeros((), jnp.int32), params, params, optimizer.init(params))


LossFn = Callable[..., tuple[jax.Array, dict]]


def _make_step(loss_fn: LossFn, optimizer, ema_decay: float, ema_warmup: bool):
    """The step around `loss_fn(params, x, labels, example_keys, dropout_key) -> (loss,
    metrics)`: per-example keys, gradients and metrics averaged over devices, the optax
    update and the EMA."""
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1); got {ema_decay}")

    def train_step(state: TrainState, batch, key: jax.Array):
        x, labels = (batch["x"], batch.get("label")) if isinstance(batch, dict) else (batch, None)
        example_base, dropout_base = jax.random.split(jax.random.fold_in(key, state.step))
        device = jax.lax.axis_index(AXIS)
        per_device = x.shape[0]
        global_index = device * per_device + jnp.arange(per_device)
        example_keys = jax.vmap(lambda i: jax.random.fold_in(example_base, i))(global_index)
        dropout_key = jax.random.fold_in(dropout_base, device)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, x, labels, example_keys, dropout_key
        )
        grads = jax.lax.pmean(grads, AXIS)
        loss, metrics = jax.lax.pmean((loss, metrics), AXIS)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        decay = jnp.asarray(ema_decay, jnp.float32)
        if ema_warmup:
            n = state.step.astype(jnp.float32)
            decay = jnp.minimum(decay, (1.0 + n) / (10.0 + n))
        ema = optax.incremental_update(params, state.ema_params, 1.0 - decay)
        new_state = state.replace(
            step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state
        )
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}

    return train_step


def make_train_step(
    sde: AbstractLinearSDE,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    weighting: Weighting,
    time_sampler: AbstractTimeSampler,
    reduce_mean: bool = True,
    ema_decay: float = 0.9999,
    ema_warmup: bool = False,
    output: str = "noise",
    time_input: str = "t",
    time_scale: float = 999.0,
    label_dropout: float = 0.0,
):
    """`train_step(state, batch, key) -> (state, metrics)` for use under `pmap(axis_name=AXIS)`.

    `batch` is this device's slice of the global batch: the data `(per_device, *dims)`, or a
    dict `{"x": data, "label": class labels}` (needed by a class-conditional network), and
    `key` the run's base key. Metrics (`loss`, `grad_norm`) are averaged over all devices.
    `label_dropout`: the probability that an example's label is replaced by the null class
    (`num_classes`), which trains the unconditional score of classifier-free guidance
    alongside the conditional one (the network needs `null_class=True`).
    """
    classes = num_classes(model)
    if not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"label_dropout must lie in [0, 1); got {label_dropout}")
    if label_dropout and not (classes and getattr(model, "null_class", False)):
        raise ValueError(
            f"label_dropout={label_dropout} needs a class-conditional network with a null class "
            "(num_classes > 0, null_class=True)"
        )

    def loss_fn(params, x, labels, example_keys, dropout_key):
        if not classes:
            labels = None
        elif labels is None:
            raise ValueError(
                f"the network is class-conditional ({classes} classes): the batch "
                "must be a dict with 'label'"
            )
        elif label_dropout:
            drop = jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(k, 1), label_dropout))
            labels = jnp.where(drop(example_keys), classes, labels)
        score_fn = ModelScore(
            model, params, sde, output=output, time_input=time_input, time_scale=time_scale,
            train=True, dropout_key=dropout_key, labels=labels,
        )  # fmt: skip
        losses = dsm_losses(example_keys, sde, score_fn, x, weighting, time_sampler, reduce_mean)
        return jnp.mean(losses), {}

    return _make_step(loss_fn, optimizer, ema_decay, ema_warmup)


def make_classifier_train_step(
    sde: AbstractLinearSDE,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    time_sampler: AbstractTimeSampler,
    ema_decay: float = 0.9999,
    ema_warmup: bool = False,
    time_input: str = "t",
    time_scale: float = 999.0,
):
    """The step of a noise-conditional classifier `p_t(y | x_t)` (Dhariwal & Nichol 2021):
    each example `x_0` with label y is noised to `x_t = a(t) x_0 + std(t) z`, t from
    `time_sampler`, and the loss is the cross-entropy of the network's logits at `(x_t, t)`.
    `batch` is `{"x", "label"}`; metrics add the batch `accuracy`. Keys, devices and the
    EMA are as in `make_train_step`."""

    def loss_fn(params, x, labels, example_keys, dropout_key):
        if labels is None:
            raise ValueError("a classifier trains on labelled batches: {'x', 'label'}")
        t, w, z = draw_times_and_noise(example_keys, sde, time_sampler, x)
        t, w = t.astype(x.dtype), w.astype(x.dtype)
        xt = sde.perturb(x, t, z)
        classifier = ModelClassifier(
            model, params, sde, time_input=time_input, time_scale=time_scale, train=True,
            dropout_key=dropout_key,
        )  # fmt: skip
        logits = classifier.logits(xt, t)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
        return jnp.mean(w * losses), {"accuracy": accuracy}

    return _make_step(loss_fn, optimizer, ema_decay, ema_warmup)


def make_dpm2015_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    ema_decay: float = 0.9999,
    ema_warmup: bool = False,
):
    """The step of a 2015 discrete diffusion model (`dpm2015.ReverseMLP`): the loss is
    `dpm2015.loss`, `-K` in bits per dimension (each example's sum over t estimated from
    one draw of t). Metrics add `K_bits`, the batch mean of K in bits per example."""

    def loss_fn(params, x, labels, example_keys, dropout_key):
        return dpm2015.loss(model, params, x, example_keys)

    return _make_step(loss_fn, optimizer, ema_decay, ema_warmup)


def pmap_train_step(train_step, devices=None):
    """The step compiled over `devices` (default: all local ones): state and batch carry a
    leading device axis, the key is shared."""
    return jax.pmap(
        train_step, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=(0,), devices=devices
    )


def replicate(tree, devices=None):
    """One copy of a pytree per device along a new leading axis (pmap shards it)."""
    n = len(jax.local_devices() if devices is None else devices)
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), tree)


def unreplicate(tree):
    """The first device's copy of a replicated pytree."""
    return jax.tree_util.tree_map(lambda x: x[0], tree)


# --- The training loop -----------------------------------------------------------------------


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite loss or gradient; no checkpoint was written after it."""


SNAPSHOTS, PREEMPTION = "checkpoints", "checkpoints-meta"


class Checkpoints:
    """Two orbax `CheckpointManager`s in the workdir, as in score_sde: `checkpoints/` keeps
    the last `max_to_keep` snapshots, `checkpoints-meta/` only the latest frequent
    preemption checkpoint. Each step directory holds the train state (`state`) and the data
    iterator's position (`data`); orbax writes to a temporary directory and renames it when
    complete, so a killed save leaves no half checkpoint behind."""

    def __init__(self, workdir: str, max_to_keep: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        make = lambda sub, keep: ocp.CheckpointManager(
            os.path.join(os.path.abspath(workdir), sub),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )
        self.snapshots = make(SNAPSHOTS, max_to_keep)
        self.preemption = make(PREEMPTION, 1)

    @staticmethod
    def exist(workdir: str) -> bool:
        """Whether the workdir holds any checkpoint directories."""
        return any(
            os.path.isdir(os.path.join(workdir, sub)) and os.listdir(os.path.join(workdir, sub))
            for sub in (SNAPSHOTS, PREEMPTION)
        )

    def latest_step(self) -> int | None:
        steps = [m.latest_step() for m in (self.snapshots, self.preemption)]
        steps = [s for s in steps if s is not None]
        return max(steps) if steps else None

    def save(self, which: str, step: int, state: TrainState, data_state: dict) -> None:
        ocp = self._ocp
        manager = self.snapshots if which == SNAPSHOTS else self.preemption
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(jax.device_get(state)),
            data=ocp.args.JsonSave(data_state),
        )
        manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict]:
        ocp = self._ocp
        for manager in (self.snapshots, self.preemption):
            if step in manager.all_steps():
                restored = manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=ocp.args.JsonRestore(),
                    ),
                )
                # host arrays: the restored ones are committed to one device, which pmap
                # would refuse to re-shard
                return jax.device_get(restored["state"]), restored["data"]
        raise FileNotFoundError(f"no checkpoint for step {step}")

    def wait(self) -> None:
        self.snapshots.wait_until_finished()
        self.preemption.wait_until_finished()

    def close(self) -> None:
        self.snapshots.close()
        self.preemption.close()


class MetricsWriter:
    """Metrics as JSON lines (`metrics.jsonl`) and TensorBoard events (`tensorboard/`).

    On resume from step s, lines after s (written before a crash, then replayed) are dropped
    so that the file holds each step once."""

    def __init__(self, workdir: str, resume_step: int, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not enabled:
            return
        if os.path.exists(self.path):
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # optional: JSON lines are always written
            SummaryWriter = None
        if SummaryWriter is not None:
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        values = {k: v if np.isfinite(v) else None for k, v in values.items()}  # JSON null
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **values}) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if v is not None:
                    self._tb.add_scalar(f"train/{k}", v, int(step))

    def image(self, step: int, tag: str, image) -> None:
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, image, int(step), dataformats="HWC")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str) -> list[dict]:
    """The records of a `metrics.jsonl` file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _format_seconds(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def train_and_evaluate(config, workdir: str) -> TrainState:
    """Train the experiment `config` in `workdir`, resuming from its latest checkpoint.

    Writes `config.json`, `checkpoints/` and `checkpoints-meta/` (orbax), `metrics.jsonl`,
    `tensorboard/`, `loss.png` and sample grids `samples/step_<n>.png` (from the EMA
    parameters, `training.snapshot_sampling`). Logs a progress line every
    `training.log_freq` steps. A non-finite loss raises `NonFiniteLossError` and leaves the
    last good checkpoint as the latest. Returns the final (host) train state.
    """
    from . import build

    if config.get("distributed", False) and not jax.distributed.is_initialized():
        jax.distributed.initialize()
    build.check_config(config)
    training = config.training
    is_main = jax.process_index() == 0
    _check_same_experiment(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    sde = build.get_sde(config)
    model = build.get_model(config)
    optimizer = build.get_optimizer(config)
    loss = build.get_loss(config)
    train_it, info = build.get_dataset(config, "train", training.batch_size)
    sample_snapshots = training.snapshot_sampling and not build.is_classifier(config)
    sampler = None
    if sample_snapshots:
        sampler = "dpm2015" if build.is_dpm2015(config) else build.get_sampler(config, sde)

    key = jax.random.key(int(config.seed))
    init_key, train_key, sample_key = jax.random.split(key, 3)
    x_example = jnp.zeros((1, *info.shape), jnp.float32)
    state = init_state(init_key, model, optimizer, x_example)
    n_params = count_params(state.params)
    logging.info("model %s: %s parameters", config.model.name, f"{n_params:,}")

    checkpoints = Checkpoints(workdir, int(training.max_to_keep))
    start = checkpoints.latest_step() or 0
    if start:
        state, data_state = checkpoints.restore(start, state)
        train_it.set_state(data_state)
        logging.info("resumed from step %d in %s", start, workdir)
    writer = MetricsWriter(workdir, start, enabled=is_main)

    common = dict(
        ema_decay=float(config.model.ema_rate),
        ema_warmup=bool(config.model.get("ema_warmup", False)),
        time_input=config.model.time_input,
        time_scale=float(config.model.get("time_scale", 999.0)),
    )
    if models.is_classifier(model):
        step_fn = make_classifier_train_step(
            sde, model, optimizer, time_sampler=loss.time_sampler, **common
        )
    elif build.is_dpm2015(config):
        _check_dpm2015_dim(model, info)
        step_fn = make_dpm2015_train_step(
            model, optimizer, ema_decay=common["ema_decay"], ema_warmup=common["ema_warmup"]
        )
    else:
        step_fn = make_train_step(
            sde, model, optimizer, weighting=loss.weighting, time_sampler=loss.time_sampler,
            reduce_mean=loss.reduce_mean, output=config.model.output,
            label_dropout=float(training.get("label_dropout", 0.0)), **common,
        )  # fmt: skip
    p_step = pmap_train_step(step_fn)
    p_state = replicate(state)
    all_finite = jax.jit(
        lambda ok, m: ok & jnp.isfinite(m["loss"][0]) & jnp.isfinite(m["grad_norm"][0])
    )
    ok = jnp.asarray(True)
    last_good = start

    def check_finite(step):
        if not bool(ok):
            checkpoints.wait()
            checkpoints.close()
            writer.close()
            where = f"step {last_good} in {workdir}" if last_good else "none was written"
            raise NonFiniteLossError(
                f"non-finite loss or gradient between steps {last_good + 1} and {step}; stopped "
                f"without saving. The last good checkpoint is kept ({where}). Try a lower "
                f"optim.lr (now {config.optim.lr}), optim.grad_clip, or a larger training.eps."
            )

    n_iters = int(training.n_iters)
    pending, t_log, step_log = [], time.perf_counter(), start
    in_flight = collections.deque()
    for step in range(start + 1, n_iters + 1):
        batch = next(train_it)
        p_state, metrics = p_step(p_state, batch, train_key)
        ok = all_finite(ok, metrics)
        pending.append(metrics)
        # At most MAX_IN_FLIGHT steps queued: a long queue of pmapped steps can starve
        # XLA's CPU device threads and time out their collectives.
        in_flight.append(metrics["loss"])
        if len(in_flight) > MAX_IN_FLIGHT:
            jax.block_until_ready(in_flight.popleft())
        if step == start + 1:  # the rate and ETA leave out compilation
            jax.block_until_ready(metrics)
            t_log, step_log = time.perf_counter(), step

        if step % training.log_freq == 0 or step == n_iters:
            check_finite(step)
            means = {k: float(jnp.mean(jnp.stack([m[k][0] for m in pending]))) for k in pending[0]}
            now = time.perf_counter()
            rate = (step - step_log) / (now - t_log) if step > step_log else float("nan")
            extra = "".join(
                f"  {k} {v:.4f}" for k, v in means.items() if k not in ("loss", "grad_norm")
            )
            logging.info(
                "step %d/%d  loss %.5f  grad_norm %.3f%s  %.2f steps/s  %.0f examples/s  ETA %s",
                step, n_iters, means["loss"], means["grad_norm"], extra, rate,
                rate * training.batch_size, _format_seconds((n_iters - step) / rate),
            )  # fmt: skip
            writer.write(step, {**means, "steps_per_sec": rate})
            pending, t_log, step_log = [], time.perf_counter(), step

        snapshot = step % training.snapshot_freq == 0 or step == n_iters
        preempt = step % training.snapshot_freq_for_preemption == 0
        if snapshot or preempt:
            check_finite(step)
            host_state = unreplicate(p_state)
            data_state = train_it.get_state()
            checkpoints.save(SNAPSHOTS if snapshot else PREEMPTION, step, host_state, data_state)
            last_good = step
        if snapshot and is_main:
            t_snapshot = time.perf_counter()
            _save_loss_curve(workdir, writer.path)
            if sampler == "dpm2015":
                from . import dpm2015_runs

                n = int(training.get("snapshot_samples", 64))
                key_n = jax.random.fold_in(sample_key, step)
                dpm2015_runs.snapshot(workdir, step, model, host_state.ema_params, key_n, n, info)
            elif sampler is not None:
                sample_key_n = jax.random.fold_in(sample_key, step)
                _snapshot_samples(
                    config, workdir, step, sde, model, host_state.ema_params, sampler,
                    sample_key_n, info, writer,
                )  # fmt: skip
            t_log += time.perf_counter() - t_snapshot  # plots and samples are not training

    checkpoints.wait()
    checkpoints.close()
    writer.close()
    return jax.device_get(unreplicate(p_state))


def _check_dpm2015_dim(model, info) -> None:
    import math

    from .build import ConfigError

    if model.dim != math.prod(info.shape):
        raise ConfigError(
            f"config.model.dim={model.dim}, but data set {info.name!r} has examples of shape "
            f"{info.shape} ({math.prod(info.shape)} values)"
        )


# What a resumed run may not change: the network, the SDE and the data.
_FIXED_FOR_RESUME = ("model", "training.sde", "data.dataset", "data.image_size")


def _check_same_experiment(config, workdir: str) -> None:
    """Refuse to resume a workdir's checkpoints under a different model, SDE or data set
    (the saved `config.json` would be overwritten and the restore fail half-way)."""
    path = os.path.join(workdir, "config.json")
    if not (os.path.exists(path) and Checkpoints.exist(workdir)):
        return
    with open(path) as f:
        saved = json.load(f)
    current = json.loads(config.to_json_best_effort())
    for key in _FIXED_FOR_RESUME:
        old, new = saved, current
        for part in key.split("."):
            old, new = (old or {}).get(part), (new or {}).get(part)
        if old != new:
            from .build import ConfigError

            raise ConfigError(
                f"{workdir} holds checkpoints of a run with config.{key} = {old!r}; this config "
                f"has {new!r}. Use another --workdir, or the run's own config."
            )


def _save_loss_curve(workdir: str, metrics_path: str) -> None:
    from .plotting import save_curve

    if not os.path.exists(metrics_path):
        return
    records = read_metrics(metrics_path)
    if len(records) >= 2:
        steps = [r["step"] for r in records]
        losses = [r["loss"] for r in records]
        save_curve(os.path.join(workdir, "loss.png"), steps, {"training loss": losses})


def _snapshot_samples(config, workdir, step, sde, model, ema_params, sampler, key, info, writer):
    """Samples from the EMA parameters: `samples/step_<n>.npz` and a PNG grid (images; one
    row per class for a class-conditional network) or scatter plot over the data (2-D)."""
    from . import build, plotting

    n = int(config.training.get("snapshot_samples", 64))
    classes, cols = num_classes(model), None
    labels = None
    if classes:
        cols = -(-n // classes)  # one row of `cols` samples per class
        labels = jnp.repeat(jnp.arange(classes), cols)
        n = classes * cols
    score_fn = build.get_score_fn(config, model, ema_params, sde, labels=labels)
    t0 = time.perf_counter()
    x, nfe = sampler(key, score_fn, (n, *info.shape))
    x = np.asarray(x)
    path = os.path.join(workdir, "samples", f"step_{step}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path + ".npz", samples=x, **({} if labels is None else {"labels": labels}))
    if x.ndim == 4:
        low, high = info.data_range
        scale = max(1, 64 // x.shape[1])
        plotting.save_image_grid(path + ".png", x, (low, high), scale=scale, cols=cols)
        writer.image(step, "samples", plotting.image_grid(x, (low, high), cols=cols))
    else:
        reference = None
        if info.name == "gmm":
            from .data import toy_density

            reference = np.asarray(toy_density().sample(jax.random.key(0), 2000))
        plotting.save_scatter(path + ".png", x, reference, title=f"step {step}")
    logging.info(
        "step %d: %d samples (%s NFE) in %.1fs -> %s.png", step, n, int(nfe),
        time.perf_counter() - t0, path,
    )  # fmt: skip
