"""Per-step cost of the CIFAR-10 train step from XLA's cost analysis, and what it predicts
for data-parallel training on 8 and 64 accelerators.

    python benchmarks/scaling_cost.py [--batches 16 128] [--lowered-only] [--mfu 0.4]

For DDPM++ cont. (`configs/vp_cifar.py`) and NCSN++ cont. (`configs/ve_cifar.py`), the
real data-parallel step (`experiment.train_step()` under `state.pmap_train_step`, one
device) is lowered with abstract inputs at each per-device batch: the 62M-parameter state
comes from `jax.eval_shape`, so nothing is initialised or run. Prints three markdown
tables:

1. cost: XLA's FLOPs and bytes accessed per step of the compiled program, and per example
   (the slope between the two batches; the intercept is the per-step optimizer and EMA
   update), and its memory (arguments, outputs, temporaries) on this backend;
2. communication: the bytes the step all-reduces, summed over the `all_reduce` operations
   of the lowered program (the gradients and the averaged metrics), beside 4 x parameters;
3. prediction: steps/s, examples/s and the time for score_sde's 1.3M steps at global batch
   128 on 1, 4, 8 and 64 accelerators of a few kinds, from the per-example FLOPs at an
   assumed model-FLOPs utilisation (`--mfu`) plus a ring all-reduce that moves
   2 (n - 1) / n of the bytes per device over the slowest link, not overlapped with compute.

With `--lowered-only` the costs are XLA's analysis of the un-optimised program (no
compile; memory is then not reported). Each compile of the full model takes about a minute
on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SCORE_SDE_STEPS = 1_300_000  # score_sde's CIFAR-10 `training.n_iters` (1300001)
GLOBAL_BATCH = 128  # score_sde's CIFAR-10 `training.batch_size`
DTYPE_BYTES = {"f64": 8, "f32": 4, "i32": 4, "ui32": 4, "f16": 2, "bf16": 2, "i64": 8, "i1": 1}


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """One kind of accelerator and the links a data-parallel step all-reduces over.

    `link_gbs`: one device's bandwidth per direction inside a node (GPU: half the NVLink
    total, which counts both directions); `network_gbs`: the same between nodes, used
    once the devices span more than `per_node` of them.
    """

    name: str
    tflops: float
    link_gbs: float
    network_gbs: float
    per_node: int


ACCELERATORS = (
    # NVLink totals 300 and 600 GB/s (both directions); 8 GPUs a node, one 200 Gb/s
    # InfiniBand adapter (25 GB/s) per GPU between nodes.
    Accelerator("V100 fp32 (15.7 TFLOP/s)", 15.7, 150.0, 25.0, 8),
    Accelerator("A100 fp32 (19.5 TFLOP/s)", 19.5, 300.0, 25.0, 8),
    Accelerator("A100 TF32 (156 TFLOP/s)", 156.0, 300.0, 25.0, 8),
    Accelerator("A100 bf16 (312 TFLOP/s)", 312.0, 300.0, 25.0, 8),
    # Cloud TPU v3 docs: all-reduce bandwidth 340 TB/s over a 1024-chip pod, ~332 GB/s a
    # chip; 64 chips (v3-128) stay on the inter-chip interconnect.
    Accelerator("TPU v3 chip bf16 (123 TFLOP/s)", 123.0, 340e3 / 1024, 340e3 / 1024, 1024),
)


@dataclasses.dataclass(frozen=True)
class StepCost:
    per_device: int
    flops: float
    bytes_accessed: float
    allreduce_bytes: int
    params: int
    memory: dict | None  # argument, output, temp bytes (None when not compiled)


def allreduce_bytes(hlo_text: str) -> int:
    """Bytes of all operands of the `stablehlo.all_reduce` operations in a lowered program."""
    total = 0
    for match in re.finditer(r'"stablehlo\.all_reduce"\(.*?\}\) : \((.*?)\) ->', hlo_text, re.S):
        for dims, dtype in re.findall(r"tensor<((?:\d+x)*)(\w+)>", match.group(1)):
            n = 1
            for d in filter(None, dims.split("x")):
                n *= int(d)
            total += n * DTYPE_BYTES[dtype]
    return total


def step_cost(config, per_device: int, *, compile: bool = True) -> StepCost:
    """XLA's cost of the pmapped train step of `config` at `per_device` examples on one
    device, lowered from abstract inputs (no parameters are initialised)."""
    import jax
    import jax.numpy as jnp
    import tensorflow_datasets as tfds

    from sde_gen import experiments
    from sde_gen.experiments import state as train
    from sde_gen.experiments.kinds import make_experiment

    config.training.batch_size = per_device
    # CIFAR-10's records need not be prepared: only the data set's shape is read
    with tfds.testing.mock_data(num_examples=per_device, policy=tfds.testing.MockPolicy.USE_CODE):
        experiment = make_experiment(experiments.load(config, num_devices=1))
    state = jax.eval_shape(experiment.init_state, jax.random.key(0))
    stacked = jax.tree.map(lambda s: jax.ShapeDtypeStruct((1, *s.shape), s.dtype), state)
    batch = jax.ShapeDtypeStruct((1, per_device, *experiment.info.shape), jnp.float32)
    key = jax.eval_shape(lambda: jax.random.key(0))
    p_step = train.pmap_train_step(experiment.train_step(), devices=jax.local_devices()[:1])
    lowered = p_step.lower(stacked, batch, key)
    params = sum(leaf.size for leaf in jax.tree.leaves(state.params))
    reduced = allreduce_bytes(lowered.as_text())
    program, memory = lowered, None
    if compile:
        program = lowered.compile()
        m = program.memory_analysis()
        memory = {
            "argument": m.argument_size_in_bytes,
            "output": m.output_size_in_bytes,
            "temp": m.temp_size_in_bytes,
        }
    cost = program.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return StepCost(
        per_device, float(cost["flops"]), float(cost["bytes accessed"]), reduced, params, memory
    )


def per_example(small: StepCost, large: StepCost) -> tuple[float, float]:
    """`(flops per example, flops per step independent of the batch)` from two batches."""
    slope = (large.flops - small.flops) / (large.per_device - small.per_device)
    return slope, small.flops - slope * small.per_device


def predicted_step_time(
    flops_per_example: float,
    fixed_flops: float,
    allreduced: int,
    accelerator: Accelerator,
    devices: int,
    *,
    mfu: float,
    global_batch: int = GLOBAL_BATCH,
) -> tuple[float, float]:
    """`(compute seconds, all-reduce seconds)` of one step of `global_batch` examples split
    over `devices`: FLOPs at `mfu` of the peak, and a ring all-reduce moving
    2 (n - 1) / n of `allreduced` bytes per device over the slowest link it crosses."""
    per_device = global_batch / devices
    compute = (flops_per_example * per_device + fixed_flops) / (accelerator.tflops * 1e12 * mfu)
    if devices == 1:
        return compute, 0.0
    link = accelerator.link_gbs if devices <= accelerator.per_node else accelerator.network_gbs
    return compute, 2 * (devices - 1) / devices * allreduced / (link * 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs=2, default=(16, 128))
    parser.add_argument("--devices", type=int, nargs="+", default=(1, 4, 8, 64))
    parser.add_argument("--mfu", type=float, default=0.4)
    parser.add_argument("--lowered-only", action="store_true")
    args = parser.parse_args()

    import jax
    from absl import logging

    from configs.ve_cifar import get_config as ve_config
    from configs.vp_cifar import get_config as vp_config

    logging.set_verbosity(logging.ERROR)
    analysed = "lowered (un-optimised) program" if args.lowered_only else "compiled program"
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{jax.default_backend()} x{jax.local_device_count()}; jax {jax.__version__}; "
        f"cost analysis of the {analysed}\n"
    )
    models = {
        "DDPM++ cont. (vp_cifar)": vp_config,
        "NCSN++ cont. (ve_cifar)": ve_config,
    }
    costs = {
        name: [step_cost(get(), b, compile=not args.lowered_only) for b in args.batches]
        for name, get in models.items()
    }

    gb = 1e9
    print("| model | parameters | batch | GFLOP/step | GFLOP/example | GB accessed/step "
          "| arguments GB | outputs GB | temporaries GB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, pair in costs.items():
        for c in pair:
            m = c.memory or {}
            mem = " | ".join(
                f"{m[k] / gb:.2f}" if m else "-" for k in ("argument", "output", "temp")
            )
            print(
                f"| {name} | {c.params:,} | {c.per_device} | {c.flops / gb:,.0f} "
                f"| {c.flops / c.per_device / gb:.2f} | {c.bytes_accessed / gb:.1f} | {mem} |"
            )
    print("\n| model | GFLOP/example (slope) | GFLOP/step fixed | at batch 128: GFLOP/step |")
    print("|---|---:|---:|---:|")
    fits = {}
    for name, (small, large) in costs.items():
        slope, fixed = fits[name] = per_example(small, large)
        print(f"| {name} | {slope / gb:.2f} | {fixed / gb:.2f} "
              f"| {(slope * GLOBAL_BATCH + fixed) / gb:,.0f} |")  # fmt: skip

    print("\n| model | all-reduced MB/step (HLO) | 4 x parameters MB | metrics bytes |")
    print("|---|---:|---:|---:|")
    for name, (c, _) in costs.items():
        grads = 4 * c.params
        print(f"| {name} | {c.allreduce_bytes / 1e6:.2f} | {grads / 1e6:.2f} "
              f"| {c.allreduce_bytes - grads} |")  # fmt: skip

    print(f"\nPredicted at global batch {GLOBAL_BATCH}, MFU {args.mfu:.0%}, no overlap of "
          "compute and all-reduce:\n")  # fmt: skip
    print("| model | accelerator | devices | batch/device | compute ms | all-reduce ms "
          "| bound | steps/s | examples/s | 1.3M steps take |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for name, (slope, fixed) in fits.items():
        reduced = costs[name][0].allreduce_bytes
        for acc in ACCELERATORS:
            for n in args.devices:
                compute, comm = predicted_step_time(slope, fixed, reduced, acc, n, mfu=args.mfu)
                step = compute + comm
                bound = "communication" if comm > compute else "compute"
                hours = SCORE_SDE_STEPS * step / 3600
                took = f"{hours / 24:.1f} days" if hours > 48 else f"{hours:.1f} hours"
                print(
                    f"| {name} | {acc.name} | {n} | {GLOBAL_BATCH // n} | {compute * 1e3:.1f} "
                    f"| {comm * 1e3:.1f} | {bound} | {1 / step:.2f} "
                    f"| {GLOBAL_BATCH / step:,.0f} | {took} |"
                )


if __name__ == "__main__":
    main()
