"""Training throughput: the bare train step, the full loop, and device scaling.

    python benchmarks/train_throughput.py [--steps 60] [--cifar-batch 8] [--skip-cifar]
        [--skip-scaling]

Prints four markdown tables:

1. bare step: steps/s and examples/s of the pmapped train step alone (synthetic batch already
   on the device, no logging or checkpoints) for the digits model (`configs/vp_digits.py`)
   and the full-size DDPM++ CIFAR-10 model (`configs/vp_cifar.py`, a small batch on a CPU;
   the config's batch of 128 when a GPU is present);
2. loop overhead: the digits model through `train.train_and_evaluate` (real data pipeline,
   progress lines, metrics, two checkpoints, no sample grids) against the bare step;
3. scaling: the digits step over 1, 2, 4 and 8 devices at a fixed global batch. On a CPU
   the devices are forced (`--xla_force_host_platform_device_count`) and share its cores,
   so this measures the cost of splitting the batch, not a speed-up; each count runs in a
   fresh process because the device count is fixed when JAX starts.

4. processes: the digits loop as one process and as a localhost cluster of 2 processes
   (`--coordinator_address`, one CPU device each, gloo collectives) at the same global
   batch, examples/s from each run's metrics.

Timings exclude compilation (warm-up steps are discarded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def bare_step_rate(config, batch_size: int, steps: int, warmup: int = 20) -> float:
    """Steps per second of the pmapped train step over all local devices."""
    import jax
    import numpy as np

    from sde_gen import experiments
    from sde_gen.experiments import state as train
    from sde_gen.experiments.kinds import make_experiment

    experiment = make_experiment(experiments.load(config))
    shape = experiment.info.shape
    n = jax.local_device_count()
    batch = np.random.default_rng(0).standard_normal((n, batch_size // n, *shape), np.float32)
    state = experiment.init_state(jax.random.key(0))
    step = experiment.train_step()
    p_step, p_state, key = train.pmap_train_step(step), train.replicate(state), jax.random.key(0)
    for _ in range(warmup):
        p_state, metrics = p_step(p_state, batch, key)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        p_state, metrics = p_step(p_state, batch, key)
    jax.block_until_ready(metrics)
    return steps / (time.perf_counter() - start)


def loop_rate(config, steps: int) -> float:
    """Steps per second of the whole loop, from its own metrics (first interval dropped)."""
    from sde_gen.experiments import train
    from sde_gen.experiments.reporting import read_metrics

    t = config.training
    t.n_iters, t.log_freq = steps, max(steps // 6, 1)
    t.snapshot_freq, t.snapshot_freq_for_preemption = steps, steps // 2
    t.snapshot_sampling = False
    with tempfile.TemporaryDirectory() as workdir:
        train.train_and_evaluate(config, workdir)
        records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    rates = [r["steps_per_sec"] for r in records[1:]]
    return len(rates) / sum(1.0 / r for r in rates)  # harmonic mean: equal step counts


def cluster_rate(processes: int, steps: int) -> float:
    """Steps per second of the digits loop run by `processes` processes of the command
    line on this machine (one CPU device each), from process 0's metrics."""
    import socket

    from sde_gen.experiments.reporting import read_metrics

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        args = [
            sys.executable, "-m", "sde_gen", "--config=configs/vp_digits.py", "--mode=train",
            f"--workdir={workdir}", f"--config.training.n_iters={steps}",
            f"--config.training.log_freq={max(steps // 6, 1)}",
            f"--config.training.snapshot_freq={steps}",
            f"--config.training.snapshot_freq_for_preemption={steps // 2}",
            "--config.training.snapshot_sampling=False",
        ]  # fmt: skip
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
        procs = []
        try:
            for i in range(processes):
                flags = [] if processes == 1 else [
                    f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}",
                    f"--process_id={i}",
                ]  # fmt: skip
                procs.append(subprocess.Popen(
                    args + flags, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ))  # fmt: skip
            if any(p.wait(1800) for p in procs):
                raise RuntimeError(f"the {processes}-process run failed")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    rates = [r["steps_per_sec"] for r in records[1:]]
    return len(rates) / sum(1.0 / r for r in rates)


def scaling_child(devices: int, steps: int) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    from configs.vp_digits import get_config

    config = get_config()
    rate = bare_step_rate(config, config.training.batch_size, steps)
    print(json.dumps({"devices": devices, "steps_per_sec": rate}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--cifar-batch", type=int, default=8)
    parser.add_argument("--skip-cifar", action="store_true", help="leave out the CIFAR row")
    parser.add_argument("--skip-scaling", action="store_true", help="leave out the device table")
    parser.add_argument("--scaling-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scaling_child:
        scaling_child(args.scaling_child, args.steps)
        return

    import jax
    from absl import logging

    from configs.vp_cifar import get_config as cifar_config
    from configs.vp_digits import get_config as digits_config
    from sde_gen import models
    from sde_gen.experiments import config as config_lib

    logging.set_verbosity(logging.WARNING)
    on_gpu = jax.default_backend() == "gpu"
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{jax.default_backend()} x{jax.local_device_count()}; jax {jax.__version__}\n"
    )

    def params(config):
        with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
            model = config_lib.load(config).model.network()
        shape = (1, 8, 8, 1) if config.data.dataset == "digits" else (1, 32, 32, 3)
        x, labels = jax.numpy.zeros(shape), jax.numpy.ones((1,))
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, labels))
        return models.count_params(variables)

    digits = digits_config()
    cifar = cifar_config()
    cifar_batch = cifar.training.batch_size if on_gpu else args.cifar_batch
    rows = [
        ("digits DDPM++ (vp_digits)", digits, digits.training.batch_size, args.steps),
        ("CIFAR-10 DDPM++ cont. (vp_cifar)", cifar, cifar_batch, max(args.steps // 10, 3)),
    ][: 1 if args.skip_cifar else 2]
    print("| model | parameters | batch | steps/s | examples/s |")
    print("|---|---:|---:|---:|---:|")
    bare = {}
    import tensorflow_datasets as tfds

    for name, config, batch, steps in rows:
        config.training.batch_size = batch
        # the bare step is timed on random batches: CIFAR-10's records need not be prepared
        with tfds.testing.mock_data(num_examples=batch, policy=tfds.testing.MockPolicy.USE_CODE):
            rate = bare_step_rate(config, batch, steps, warmup=5 if "CIFAR" in name else 20)
        bare[name] = rate
        print(f"| {name} | {params(config):,} | {batch} | {rate:.2f} | {rate * batch:.0f} |")

    print("\n| digits model | steps/s | overhead vs bare step |")
    print("|---|---:|---:|")
    loop = loop_rate(digits_config(), steps=max(args.steps * 5, 120))
    base = bare[rows[0][0]]
    print(f"| bare pmapped step | {base:.2f} | - |")
    print(
        f"| full loop (data, logging, checkpoints) | {loop:.2f} | {100 * (base / loop - 1):.1f}% |"
    )

    steps = max(args.steps * 5, 120)
    print("\n| digits loop, global batch 64 | steps/s | examples/s | relative to 1 process |")
    print("|---|---:|---:|---:|")
    single = cluster_rate(1, steps)
    for n in (1, 2):
        rate = single if n == 1 else cluster_rate(n, steps)
        print(f"| {n} process{'es' if n > 1 else ''} x 1 CPU device | {rate:.2f} | "
              f"{rate * digits.training.batch_size:.0f} | {rate / single:.2f} |")  # fmt: skip
    if args.skip_scaling:
        return

    print("\n| devices | global batch | steps/s | relative to 1 device |")
    print("|---:|---:|---:|---:|")
    first = None
    for n in (1, 2, 4, 8):
        out = subprocess.run(
            [sys.executable, __file__, f"--scaling-child={n}", f"--steps={args.steps}"],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip
        rate = json.loads(out.stdout.strip().splitlines()[-1])["steps_per_sec"]
        first = first or rate
        print(f"| {n} | {digits.training.batch_size} | {rate:.2f} | {rate / first:.2f} |")


if __name__ == "__main__":
    main()
