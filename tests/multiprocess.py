"""Runs of the command line as a localhost cluster: N processes of `python -m sde_gen`
joined by `--coordinator_address` on a free port, each with its own forced CPU devices.
Every process a helper starts is stopped by it (killed on a timeout or an error)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def overrides(values: dict) -> list[str]:
    return [f"--config.{k}={v}" for k, v in values.items()]


class Cluster:
    """`processes` processes of `python -m sde_gen ARGS`, `devices` CPU devices each
    (one process: no multi-process flags). Logs go to `<log_prefix>.p<i>.log`."""

    def __init__(
        self,
        args: list[str],
        processes: int,
        devices: int,
        log_prefix: str,
        command: list[str] | None = None,
    ):
        env = {
            **os.environ,
            "PYTHONPATH": ROOT,
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "JAX_PLATFORMS": "cpu",
        }
        port = free_port()
        self.logs = [f"{log_prefix}.p{i}.log" for i in range(processes)]
        self.procs: list[subprocess.Popen] = []
        try:
            for i in range(processes):
                flags = []
                if processes > 1:
                    flags = [
                        f"--coordinator_address=127.0.0.1:{port}",
                        f"--num_processes={processes}",
                        f"--process_id={i}",
                    ]
                with open(self.logs[i], "wb") as log:
                    self.procs.append(subprocess.Popen(
                        [*(command or [sys.executable, "-m", "sde_gen"]), *args, *flags],
                        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    ))  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def log(self, i: int) -> str:
        with open(self.logs[i], errors="replace") as f:
            return f.read()

    def wait(self, timeout: float) -> list[int]:
        """Every process's exit status; all are killed if any is still running after
        `timeout` seconds (then AssertionError)."""
        deadline = time.monotonic() + timeout
        try:
            for p in self.procs:
                p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            tails = "\n".join(self.log(i)[-1500:] for i in range(len(self.procs)))
            raise AssertionError(f"the cluster ran past {timeout} s:\n{tails}") from None
        return [p.returncode for p in self.procs]

    def check(self, timeout: float) -> None:
        codes = self.wait(timeout)
        if any(codes):
            tails = "\n".join(f"--- process {i} ({c}):\n{self.log(i)[-3000:]}"
                              for i, c in enumerate(codes))  # fmt: skip
            raise AssertionError(f"exit statuses {codes}:\n{tails}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run(args, processes: int, devices: int, log_prefix: str, timeout=600.0, **kw) -> None:
    """Run the cluster to its end; AssertionError with the logs if a process fails."""
    with Cluster(args, processes, devices, log_prefix, **kw) as cluster:
        cluster.check(timeout)


def restore(workdir: str, step: int):
    """`(state, data_state)` of a workdir's step, restored in this process."""
    from sde_gen.experiments import config as cfg
    from sde_gen.experiments.checkpoints import CheckpointStore
    from sde_gen.experiments.kinds import make_experiment

    config = cfg.load_file(os.path.join(workdir, "config.json"))
    abstract = make_experiment(cfg.load(config, num_devices=1)).init_state(jax.random.key(0))
    return CheckpointStore(workdir, read_only=True).restore(step, abstract)


def max_difference(a, b) -> float:
    """The largest |a - b| over every leaf of two pytrees, relative to max(1, |b|)."""
    worst = 0.0
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.size:
            worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(1.0, np.abs(y)))))
    return worst
