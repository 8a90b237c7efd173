"""Multi-process runs on JAX's multi-controller runtime.

The same command runs once per host (or per group of accelerators); `initialize` joins
the processes through `jax.distributed.initialize`, called once, from the entry point
(`sde-gen --coordinator_address=HOST:PORT --num_processes=N --process_id=I`, or
`--distributed` for JAX's own detection of SLURM, TPU and Kubernetes clusters). After it,
`jax.pmap` steps span the devices of every process; on CPU the processes talk through
JAX's CPU collectives (gloo). No launcher or parameter server of our own: the rest of
this module is what the loops need around pmap:

- `is_main()`: process 0, the one that writes logs, metrics, images and reports;
- `barrier(name)`, `broadcast(name, value)`: a rendezvous, and a JSON value of process 0
  given to every process, through the runtime's key-value store;
- `map_chunks(fn, n)`: chunk i computed by process i mod P and every chunk's result on
  every process, in order, so that evaluation splits its work and ends with what one
  process would have computed alone;
- a watchdog: every process beats a heartbeat into the key-value store and watches the
  others'. When one stops (killed, crashed, hung, its host gone) the others log which one
  was lost and exit with `EXIT_LOST` within `lost_after` seconds, instead of waiting in a
  collective for the runtime's own timeout. Process 0 holds the runtime's coordination
  service: when it dies the runtime itself stops the others at once ("Terminating process
  because the JAX distributed service detected fatal errors", naming the lost
  `coordination_service`), before any watchdog could. Restarting every process with the
  same command resumes from the newest verified checkpoint.

With one process every function here is a no-op or a plain call.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

EXIT_LOST = 75  # the exit status of a process that stopped because another was lost
HEARTBEAT_SECONDS = 1.0
LOST_AFTER_SECONDS = 20.0  # silence after which a process counts as lost
_PREFIX = "sde_gen"
_ADDRESS = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:[0-9]{1,5}$")

_watchdog: _Watchdog | None = None
_counters: dict[str, itertools.count] = {}


class DistributedSetupError(ValueError):
    """The multi-process flags do not describe a run (one line, before anything starts)."""


def check_flags(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Refuse an incomplete or impossible set of flags in one line."""
    given = {
        "--coordinator_address": coordinator_address,
        "--num_processes": num_processes,
        "--process_id": process_id,
    }
    missing = [k for k, v in given.items() if v is None]
    if len(missing) not in (0, 3):
        raise DistributedSetupError(
            f"a multi-process run needs all of --coordinator_address, --num_processes and "
            f"--process_id (or --distributed alone on a SLURM/TPU/Kubernetes cluster); "
            f"missing {', '.join(missing)}"
        )
    if missing:
        return
    if not _ADDRESS.match(coordinator_address):
        raise DistributedSetupError(
            f"--coordinator_address={coordinator_address!r} is not HOST:PORT "
            "(e.g. 10.0.0.1:1234 or localhost:1234)"
        )
    if num_processes < 1:
        raise DistributedSetupError(f"--num_processes={num_processes} must be at least 1")
    if not 0 <= process_id < num_processes:
        raise DistributedSetupError(
            f"--process_id={process_id} must lie in [0, {num_processes - 1}] "
            f"(--num_processes={num_processes})"
        )


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    lost_after: float = LOST_AFTER_SECONDS,
) -> None:
    """Join this process to a multi-process run: `jax.distributed.initialize` with these
    arguments (all three, or none with `auto=True` for JAX's cluster detection), before
    any other use of JAX; CPU collectives through gloo; the watchdog started. Call it once,
    from the entry point."""
    check_flags(coordinator_address, num_processes, process_id)
    if coordinator_address is None and not auto:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address,
        num_processes,
        process_id,
        # the runtime's own heartbeats are the backstop, after the watchdog's
        heartbeat_timeout_seconds=int(lost_after) + 20,
    )
    if jax.process_count() > 1:
        start_watchdog(lost_after)


def _report_lost(process: str, why: str) -> None:
    """Say which process was lost and stop this one (from any thread)."""
    me, processes = jax.process_index(), jax.process_count()
    message = (
        f"FATAL: lost process {process} of {processes} ({why}); process {me} stops. "
        "Restart every process with the same command to resume from the newest verified "
        "checkpoint."
    )
    print(message, file=sys.stderr, flush=True)
    try:
        from absl import logging

        logging.error(message)
    finally:
        os._exit(EXIT_LOST)


def is_main() -> bool:
    """Whether this is process 0, the one that writes."""
    return jax.process_index() == 0


def _client():
    from jax._src import distributed as jax_distributed

    client = jax_distributed.global_state.client
    if client is None:
        raise RuntimeError("jax.distributed is not initialized")
    return client


def _key(name: str) -> str:
    """A key for the `name`d collective call: numbered, as every process calls the same
    sequence of them."""
    n = next(_counters.setdefault(name, itertools.count()))
    return f"{_PREFIX}/{name}/{n}"


def barrier(name: str, timeout: float = 3600.0) -> None:
    """Wait until every process reaches this barrier."""
    if jax.process_count() > 1:
        _client().wait_at_barrier(_key(name), int(timeout * 1000))


def broadcast(name: str, value: Any = None, timeout: float = 3600.0) -> Any:
    """Process 0's `value` (JSON-able) on every process."""
    if jax.process_count() == 1:
        return value
    key = _key(name)
    if is_main():
        _client().key_value_set(key, json.dumps(value))
        return value
    return json.loads(_client().blocking_key_value_get(key, int(timeout * 1000)))


def gather_rows(x: np.ndarray) -> np.ndarray:
    """Every process's `x` (same shape everywhere) concatenated along the first axis in
    process order: the rows of a pmapped output over all devices of the run."""
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=True))


def map_chunks(fn: Callable[[int], dict], num_chunks: int) -> list[dict]:
    """`[fn(0), ..., fn(num_chunks - 1)]` on every process, chunk i computed by process
    i mod P. Each result is a dict of arrays whose shapes may differ only in the leading
    axis of the last chunk. Process p computes its chunks in order and each round's
    results are gathered (padded to chunk 0's shapes) after the round, so memory holds
    one round."""
    processes = jax.process_count()
    if processes == 1:
        return [fn(i) for i in range(num_chunks)]
    from jax.experimental import multihost_utils

    out: list[dict] = []
    me = jax.process_index()
    template = None
    for start in range(0, num_chunks, processes):
        mine = start + me
        result = fn(mine) if mine < num_chunks else None
        if template is None:  # the keys and shapes of a full chunk: process 0's first
            template = broadcast("map_chunks", _shapes(result) if me == 0 else None)
        lengths, padded = _pad(result, template)
        counts, arrays = multihost_utils.process_allgather((lengths, padded), tiled=False)
        for p in range(min(processes, num_chunks - start)):
            out.append({
                key: np.asarray(a[p][: int(n[p])])
                for (key, _, _), a, n in zip(template, arrays, counts, strict=True)
            })  # fmt: skip
    return out


def _shapes(result: dict) -> list:
    return [[k, list(np.shape(v)), str(np.asarray(v).dtype)] for k, v in result.items()]


def _pad(result: dict | None, template: list) -> tuple[list, list]:
    """`(lengths, padded)`: each entry's leading length and the entry padded to the full
    chunk's shape (zeros for a process without a chunk this round)."""
    lengths, padded = [], []
    for key, shape, dtype in template:
        if result is None:
            x = np.zeros([0, *shape[1:]], dtype)
        else:
            x = np.asarray(result[key]).astype(dtype)
        pad = [(0, shape[0] - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
        lengths.append(np.int32(x.shape[0]))
        padded.append(np.pad(x, pad))
    return lengths, padded


# -- the watchdog -------------------------------------------------------------------------


def start_watchdog(lost_after: float = LOST_AFTER_SECONDS) -> None:
    """Beat this process's heartbeat and watch the others' (idempotent)."""
    global _watchdog
    if _watchdog is None:
        _watchdog = _Watchdog(lost_after)
        _watchdog.start()


def stop_watchdog() -> None:
    """Stop watching (a finished run: the others may now exit in any order)."""
    global _watchdog
    if _watchdog is not None:
        _watchdog.stop()
        _watchdog = None


class _Watchdog(threading.Thread):
    def __init__(self, lost_after: float):
        super().__init__(name="sde_gen-watchdog", daemon=True)
        self.lost_after = float(lost_after)
        self.me, self.processes = jax.process_index(), jax.process_count()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        client = _client()
        beat = 0
        last = {p: (None, time.monotonic()) for p in range(self.processes) if p != self.me}
        coordinator_since = time.monotonic()
        while not self._stop.wait(HEARTBEAT_SECONDS):
            beat += 1
            now = time.monotonic()
            try:
                client.key_value_set(f"{_PREFIX}/heartbeat/{self.me}", str(beat), True)
                coordinator_since = now
            except Exception as e:  # the coordination service (in process 0) is gone
                if self.me != 0 and now - coordinator_since > self.lost_after:
                    self._lost(0, f"the coordinator stopped answering ({_brief(e)})")
                continue
            for p, (value, since) in last.items():
                try:
                    seen = client.key_value_try_get(f"{_PREFIX}/heartbeat/{p}")
                except Exception:  # not written yet
                    seen = value
                if seen != value:
                    last[p] = (seen, now)
                elif now - since > self.lost_after:
                    self._lost(p, f"no heartbeat for {now - since:.0f} s")

    def _lost(self, process: int, why: str) -> None:
        if not self._stop.is_set():
            _report_lost(str(process), why)


def _brief(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:160]}"
