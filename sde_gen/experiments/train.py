"""The training loop: `train_and_evaluate(settings, workdir)`.

It reads like the recipe: lock the workdir, build the experiment, restore the newest
verified checkpoint (or start fresh), then step; periodic work (progress lines, verified
checkpoints, snapshots) happens in small hooks. The experiment object supplies the loss
and the snapshot, so the loop is the same for every kind of experiment.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from .. import data as data_lib
from .. import distributed
from ..models import count_params
from .checkpoints import CheckpointStore, NonFiniteStateError, WorkdirLock
from .config import Settings, check_same_experiment, load
from .kinds import make_experiment
from .reporting import MetricsWriter, format_seconds, save_loss_curve, write_text
from .state import AXIS, DEQUANTIZER, TrainState, replicate, unreplicate

MAX_IN_FLIGHT = 2  # train steps dispatched ahead of the host


def steps_in_flight() -> int:
    """How many train steps may run ahead of the host. XLA's CPU collectives rendezvous on a
    shared thread pool, and two overlapping executions of the pmapped step over several
    forced CPU devices can starve each other until the rendezvous times out and aborts the
    process (seen on 2 busy cores): there, each step is waited for before the next."""
    cpu_devices = jax.default_backend() == "cpu" and jax.local_device_count() > 1
    return 0 if cpu_devices else MAX_IN_FLIGHT


PREFETCH = 2  # batches put on the devices ahead of the step (accelerators)


def prefetch_depth() -> int:
    """Batches to put on the devices ahead of the step: `PREFETCH` on an accelerator, none
    on a CPU, where the "device" is host memory and the copy onto a device sharding only
    adds work on the cores that run the step."""
    return 0 if jax.default_backend() == "cpu" else PREFETCH


class DevicePrefetcher:
    """Batches of a data iterator, put on the local devices `size` steps ahead of the
    one being consumed (so the host-to-device copy overlaps the step; `size=0`: host
    batches, read one at a time), with the iterator state of the last batch consumed
    (what a checkpoint must save, not the read-ahead)."""

    def __init__(self, iterator, size: int = PREFETCH, devices=None):
        self._it, self._size = iterator, size
        self._devices = jax.local_devices() if devices is None else list(devices)
        mesh = jax.sharding.Mesh(np.array(self._devices), (AXIS,))  # as pmap lays out its inputs
        self._sharding = jax.NamedSharding(mesh, jax.P(AXIS))
        self._queue: collections.deque = collections.deque()
        self._state = iterator.get_state()

    def _fill(self) -> None:
        if self._size == 0 and not self._queue:  # host batches as they are
            self._queue.append((next(self._it), self._it.get_state()))
        while len(self._queue) < self._size:
            batch = next(self._it)
            on_device = jax.tree_util.tree_map(
                lambda x: jax.device_put(np.asarray(x), self._sharding), batch
            )
            self._queue.append((on_device, self._it.get_state()))

    def peek(self):
        """The next batch, not consumed."""
        self._fill()
        return self._queue[0][0]

    def __iter__(self):
        return self

    def __next__(self):
        self._fill()
        batch, self._state = self._queue.popleft()
        if self._size:
            self._fill()
        return batch

    def get_state(self) -> dict:
        return self._state


def accumulating_step(step_fn):
    """The pmapped step that also keeps the interval's totals on the devices:
    `(state, totals, batch, key) -> (state, totals)`, totals `{"ok": every loss and
    gradient norm finite, "count": steps, "sums": metric sums}`. Nothing is read back per
    step; the loop reads the totals at log and checkpoint steps."""

    def step(state, totals, batch, key):
        state, metrics = step_fn(state, batch, key)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
        sums = {k: totals["sums"][k] + v for k, v in metrics.items()}
        return state, {"ok": totals["ok"] & finite, "count": totals["count"] + 1, "sums": sums}

    return jax.pmap(step, axis_name=AXIS, in_axes=(0, 0, 0, None), donate_argnums=(0,))


def empty_totals(step_fn, state, batch, key) -> dict:
    """Zero totals for `accumulating_step`, one sum per metric of `step_fn`."""
    one = jax.tree_util.tree_map(lambda x: x[:1], batch)
    _, metrics = jax.eval_shape(
        jax.vmap(step_fn, in_axes=(None, 0, None), axis_name=AXIS), state, one, key
    )
    return {
        "ok": np.asarray(True),
        "count": np.asarray(0, np.int32),
        "sums": {k: np.zeros((), v.dtype) for k, v in metrics.items()},
    }


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

    In a multi-process run (`sde_gen.distributed`) every process calls this with the same
    settings and workdir (on a shared filesystem): each reads its rows of every global
    batch, the step averages over the devices of all processes, process 0 holds the lock
    and writes files, and checkpoints are written and restored together.
    """
    settings = load(settings)
    os.makedirs(workdir, exist_ok=True)
    lock = WorkdirLock(workdir) if distributed.is_main() else contextlib.nullcontext()
    with lock:
        return _train(settings, workdir)


def _train(settings: Settings, workdir: str) -> TrainState:
    training = settings.training
    is_main = distributed.is_main()
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
    if jax.process_count() > 1:
        logging.info(
            "process %d of %d: %d of %d devices, %d of the %d examples of each batch",
            jax.process_index(), jax.process_count(), jax.local_device_count(),
            jax.device_count(), training.batch_size // jax.process_count(), training.batch_size,
        )  # fmt: skip

    start = 0
    restored = store.restore_latest(state)
    if restored is not None:
        start, state, data_state = restored
        train_it.set_state(data_state)
        logging.info("resumed from step %d in %s", start, workdir)
    writer = MetricsWriter(workdir, start, enabled=is_main)
    step_fn = experiment.train_step()
    p_step = accumulating_step(step_fn)
    p_state = replicate(state)
    batches = DevicePrefetcher(train_it, prefetch_depth())
    zeros = empty_totals(step_fn, state, batches.peek(), train_key)
    p_totals = replicate(zeros)
    last_good = start

    def stop_if_not_finite(step: int, cause: str = "loss or gradient") -> None:
        where = f"step {last_good} in {workdir}" if last_good else "none was written"
        raise NonFiniteLossError(
            f"non-finite {cause} between steps {last_good + 1} and {step}; stopped without "
            f"saving. The last good checkpoint is kept ({where}). Try a lower optim.lr (now "
            f"{settings.optim.lr}), optim.grad_clip, or a larger training.eps."
        )

    def read_totals() -> tuple[bool, dict]:
        """The interval's finiteness and mean metrics (one transfer from the device)."""
        totals = jax.device_get(unreplicate(p_totals))
        n = max(int(totals["count"]), 1)
        return bool(totals["ok"]), {k: float(v) / n for k, v in totals["sums"].items()}

    n_iters = training.n_iters
    t_log, step_log = time.perf_counter(), start
    in_flight, limit = collections.deque(), steps_in_flight()
    try:
        for step in range(start + 1, n_iters + 1):
            p_state, p_totals = p_step(p_state, p_totals, next(batches), train_key)
            in_flight.append(p_totals["count"])
            while len(in_flight) > limit:
                jax.block_until_ready(in_flight.popleft())
            if step == start + 1:  # the rate and ETA leave out compilation
                jax.block_until_ready(p_totals)
                t_log, step_log = time.perf_counter(), step

            log_now = step % training.log_freq == 0 or step == n_iters
            snapshot = step % training.snapshot_freq == 0 or step == n_iters
            preempt = step % training.snapshot_freq_for_preemption == 0
            if log_now or snapshot or preempt:
                ok, means = read_totals()
                if not ok:
                    stop_if_not_finite(step)
            if log_now:
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
                p_totals = replicate(zeros)
                t_log, step_log = time.perf_counter(), step

            if snapshot or preempt:
                host_state = jax.device_get(unreplicate(p_state))
                try:
                    store.save(
                        "snapshot" if snapshot else "preemption",
                        step,
                        host_state,
                        batches.get_state(),
                    )
                except NonFiniteStateError as error:
                    stop_if_not_finite(step, f"train state ({'; '.join(error.leaves[:3])})")
                last_good = step
            if snapshot:
                t_snapshot = time.perf_counter()
                if is_main:
                    save_loss_curve(workdir, writer.path)
                    if training.snapshot_sampling:
                        key = jax.random.fold_in(sample_key, step)
                        experiment.snapshot(workdir, step, host_state.ema_params, key, writer)
                distributed.barrier("snapshot")  # the others wait here, not in a collective
                t_log += time.perf_counter() - t_snapshot  # plots and samples are not training
    finally:
        writer.close()
    return jax.device_get(unreplicate(p_state))
