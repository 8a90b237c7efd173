"""The training loop: `train_and_evaluate(settings, workdir)`.

It reads like the recipe: lock the workdir, build the experiment, restore the newest
verified checkpoint (or start fresh), then step; periodic work (progress lines, verified
checkpoints, snapshots) happens in small hooks. The experiment object supplies the loss
and the snapshot, so the loop is the same for every kind of experiment.
"""

from __future__ import annotations

import collections
import os
import time

import jax
import jax.numpy as jnp
from absl import logging

from .. import data as data_lib
from ..models import count_params
from .checkpoints import CheckpointStore, NonFiniteStateError, WorkdirLock
from .config import Settings, check_same_experiment, load
from .kinds import make_experiment
from .reporting import MetricsWriter, format_seconds, save_loss_curve, write_text
from .state import DEQUANTIZER, TrainState, pmap_train_step, replicate, unreplicate

MAX_IN_FLIGHT = 2  # train steps dispatched ahead of the host


def steps_in_flight() -> int:
    """How many train steps may run ahead of the host. XLA's CPU collectives rendezvous on a
    shared thread pool, and two overlapping executions of the pmapped step over several
    forced CPU devices can starve each other until the rendezvous times out and aborts the
    process (seen on 2 busy cores): there, each step is waited for before the next."""
    cpu_devices = jax.default_backend() == "cpu" and jax.local_device_count() > 1
    return 0 if cpu_devices else MAX_IN_FLIGHT


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite loss, gradient or state; nothing was saved after it."""


def train_and_evaluate(settings: Settings, workdir: str) -> TrainState:
    """Train the experiment in `workdir`, resuming from its newest verified checkpoint.

    Writes `config.json`, `checkpoints/` and `checkpoints-meta/` (verified orbax steps),
    `metrics.jsonl`, `tensorboard/`, `loss.png` and the experiment's snapshots (sample grids
    `samples/step_<n>.png`). Logs a progress line every `training.log_freq` steps. A
    non-finite loss, gradient or state raises `NonFiniteLossError` and leaves the last good
    checkpoint as the latest. A second training on the same workdir is refused at once
    (`WorkdirLockedError`). Returns the final (host) train state.
    """
    settings = load(settings)
    os.makedirs(workdir, exist_ok=True)
    with WorkdirLock(workdir):
        return _train(settings, workdir)


def _train(settings: Settings, workdir: str) -> TrainState:
    training = settings.training
    is_main = jax.process_index() == 0
    experiment = make_experiment(settings)
    store = CheckpointStore(workdir, training.max_to_keep)
    check_same_experiment(settings, workdir, has_checkpoints=store.has_checkpoints())
    if is_main:
        write_text(os.path.join(workdir, "config.json"), settings.config_json)

    d = settings.data
    train_it, _ = data_lib.get_dataset(
        d.dataset, "train", training.batch_size, seed=settings.seed, **d.options("train")
    )
    init_key, train_key, sample_key = jax.random.split(jax.random.key(settings.seed), 3)
    state = experiment.init_state(init_key)
    logging.info("model %s: %s parameters", settings.model.name, f"{count_params(state.params):,}")
    if DEQUANTIZER in state.params:
        n = count_params(state.params[DEQUANTIZER])
        logging.info("dequantizer %s: %s parameters", settings.dequantizer.name, f"{n:,}")

    start = 0
    restored = store.restore_latest(state)
    if restored is not None:
        start, state, data_state = restored
        train_it.set_state(data_state)
        logging.info("resumed from step %d in %s", start, workdir)
    writer = MetricsWriter(workdir, start, enabled=is_main)
    p_step = pmap_train_step(experiment.train_step())
    p_state = replicate(state)
    finite = jax.jit(lambda ok, m: ok & jnp.isfinite(m["loss"][0]) & jnp.isfinite(m["grad_norm"][0]))
    ok, last_good = jnp.asarray(True), start

    def stop_if_not_finite(step: int, cause: str = "loss or gradient") -> None:
        where = f"step {last_good} in {workdir}" if last_good else "none was written"
        raise NonFiniteLossError(
            f"non-finite {cause} between steps {last_good + 1} and {step}; stopped without "
            f"saving. The last good checkpoint is kept ({where}). Try a lower optim.lr (now "
            f"{settings.optim.lr}), optim.grad_clip, or a larger training.eps."
        )

    n_iters = training.n_iters
    pending, t_log, step_log = [], time.perf_counter(), start
    in_flight, limit = collections.deque(), steps_in_flight()
    try:
        for step in range(start + 1, n_iters + 1):
            p_state, metrics = p_step(p_state, next(train_it), train_key)
            ok = finite(ok, metrics)
            pending.append(metrics)
            in_flight.append(metrics["loss"])
            while len(in_flight) > limit:
                jax.block_until_ready(in_flight.popleft())
            if step == start + 1:  # the rate and ETA leave out compilation
                jax.block_until_ready(metrics)
                t_log, step_log = time.perf_counter(), step

            if step % training.log_freq == 0 or step == n_iters:
                if not bool(ok):
                    stop_if_not_finite(step)
                means = {k: float(jnp.mean(jnp.stack([m[k][0] for m in pending]))) for k in pending[0]}
                now = time.perf_counter()
                rate = (step - step_log) / (now - t_log) if step > step_log else float("nan")
                extra = "".join(
                    f"  {k} {v:.4f}" for k, v in means.items() if k not in ("loss", "grad_norm")
                )
                logging.info(
                    "step %d/%d  loss %.5f  grad_norm %.3f%s  %.2f steps/s  %.0f examples/s  ETA %s",
                    step, n_iters, means["loss"], means["grad_norm"], extra, rate,
                    rate * training.batch_size, format_seconds((n_iters - step) / rate),
                )  # fmt: skip
                writer.write(step, {**means, "steps_per_sec": rate})
                pending, t_log, step_log = [], time.perf_counter(), step

            snapshot = step % training.snapshot_freq == 0 or step == n_iters
            preempt = step % training.snapshot_freq_for_preemption == 0
            if snapshot or preempt:
                if not bool(ok):
                    stop_if_not_finite(step)
                host_state = jax.device_get(unreplicate(p_state))
                try:
                    store.save("snapshot" if snapshot else "preemption", step, host_state, train_it.get_state())
                except NonFiniteStateError as error:
                    stop_if_not_finite(step, f"train state ({'; '.join(error.leaves[:3])})")
                last_good = step
            if snapshot and is_main:
                t_snapshot = time.perf_counter()
                save_loss_curve(workdir, writer.path)
                if training.snapshot_sampling:
                    key = jax.random.fold_in(sample_key, step)
                    experiment.snapshot(workdir, step, host_state.ema_params, key, writer)
                t_log += time.perf_counter() - t_snapshot  # plots and samples are not training
    finally:
        writer.close()
    return jax.device_get(unreplicate(p_state))
