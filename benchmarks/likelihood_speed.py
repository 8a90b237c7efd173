"""Speed and accuracy of bits/dim evaluation.

    python benchmarks/likelihood_speed.py --workdir runs/digits [--examples 128]

Prints two markdown tables:

1. the trained digits model (`configs/vp_digits.py`, the checkpoint in `--workdir`): examples/s,
   NFE and bits/dim with standard error of the PF-ODE likelihood on test digits, for
   Hutchinson at two tolerances and the exact divergence, and the likelihood bound;
2. accuracy on the 2-D Gaussian-mixture ring with its exact score: mean absolute error
   against the closed-form `-log p(x)` per example and of the mean, in bits/dim, for
   Hutchinson and exact divergence.

Timings exclude compilation (each setting runs once at the same shape first).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/digits", help="a trained vp_digits run")
    parser.add_argument("--examples", type=int, default=128)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from absl import logging

    from configs.toy_2d import get_config as toy_config
    from configs.vp_digits import get_config as digits_config
    from sde_gen import data, experiments, log_likelihood, nll_bound
    from sde_gen.experiments.evaluate import latest_params
    from sde_gen.experiments.kinds import make_experiment

    logging.set_verbosity(logging.WARNING)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{jax.default_backend()}; jax {jax.__version__}\n"
    )

    experiment = make_experiment(experiments.load(digits_config()))
    sde = experiment.sde
    step, params = latest_params(experiment, args.workdir)
    score_fn = experiment.score_fn(params)
    x_all, _ = experiment.load_split("test", args.examples, dequantize=True)
    x = jnp.asarray(x_all)
    to_bits = lambda logp, shape: experiment.bits(logp, shape)

    print(f"Digits DDPM++ (step {step}), {len(x)} test digits, one dequantization draw:\n")
    print("| method | rtol=atol | examples/s | mean NFE | bits/dim | std. error |")
    print("|---|---:|---:|---:|---:|---:|")
    # The exact divergence costs D = 64 JVPs per evaluation: timed on 16 digits only.
    for divergence, tol, n in [
        ("hutchinson", 1e-3, len(x)),
        ("hutchinson", 1e-4, len(x)),
        ("exact", 1e-3, 16),
    ]:
        run = lambda xs: log_likelihood(
            jax.random.key(0), sde, score_fn, xs, divergence=divergence, rtol=tol, atol=tol
        )
        jax.block_until_ready(run(x[:n]))  # compile (and warm up) at the timed shape
        start = time.perf_counter()
        logp, _, nfe = jax.block_until_ready(run(x[:n]))
        seconds = time.perf_counter() - start
        bits = to_bits(logp, x[:n].shape)
        print(
            f"| {divergence} ({n} digits) | {tol:g} | {n / seconds:.1f} | {int(nfe)} | "
            f"{bits.mean():.4f} | {bits.std(ddof=1) / math.sqrt(len(bits)):.4f} |"
        )
    bound = lambda xs: nll_bound(jax.random.key(0), sde, score_fn, xs, num_samples=16)[0]
    jax.block_until_ready(bound(x))
    start = time.perf_counter()
    nll = jax.block_until_ready(bound(x))
    seconds = time.perf_counter() - start
    bits = to_bits(-nll, x.shape)
    print(
        f"| bound (16 draws of t) | - | {len(x) / seconds:.1f} | 16 | {bits.mean():.4f} | "
        f"{bits.std(ddof=1) / math.sqrt(len(bits)):.4f} |"
    )

    toy = make_experiment(experiments.load(toy_config()))
    sde, density = toy.sde, data.toy_density()
    x_toy = jnp.asarray(toy.load_split("test", 2000)[0])
    exact = np.asarray(-density.log_prob(x_toy) / (2 * math.log(2)))
    print("\nGaussian-mixture ring (2-D), exact score, 2000 test points, rtol=atol=1e-5:\n")
    print("| divergence | per-example MAE (bits/dim) | error of the mean | mean NFE |")
    print("|---|---:|---:|---:|")
    for divergence in ("hutchinson", "exact"):
        logp, _, nfe = log_likelihood(
            jax.random.key(1), sde, density.score_fn(sde), x_toy, divergence=divergence
        )
        bits = toy.bits(logp, x_toy.shape)
        print(
            f"| {divergence} | {np.abs(bits - exact).mean():.2e} | "
            f"{abs(bits.mean() - exact.mean()):.2e} | {int(nfe)} |"
        )


if __name__ == "__main__":
    main()
