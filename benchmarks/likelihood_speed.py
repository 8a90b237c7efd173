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
    from sde_gen import build, data, evaluate, log_likelihood, nll_bound

    logging.set_verbosity(logging.WARNING)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{jax.default_backend()}; jax {jax.__version__}\n"
    )

    config = digits_config()
    sde, model = build.get_sde(config), build.get_model(config)
    (step,) = evaluate.checkpoint_steps(config, args.workdir)
    params = evaluate.load_ema_params(config, args.workdir, step, (8, 8, 1))
    score_fn = build.get_score_fn(config, model, params, sde)
    dq = config.copy_and_resolve_references()
    dq.data.uniform_dequantization = True
    x_all, _, info = evaluate._dataset_arrays(dq, "test", args.examples)
    x = jnp.asarray(x_all)

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
        bits = evaluate.to_bits(logp, x[:n].shape, info)
        print(
            f"| {divergence} ({n} digits) | {tol:g} | {n / seconds:.1f} | {int(nfe)} | "
            f"{bits.mean():.4f} | {bits.std(ddof=1) / math.sqrt(len(bits)):.4f} |"
        )
    bound = lambda xs: nll_bound(jax.random.key(0), sde, score_fn, xs, num_samples=16)[0]
    jax.block_until_ready(bound(x))
    start = time.perf_counter()
    nll = jax.block_until_ready(bound(x))
    seconds = time.perf_counter() - start
    bits = evaluate.to_bits(-nll, x.shape, info)
    print(
        f"| bound (16 draws of t) | - | {len(x) / seconds:.1f} | 16 | {bits.mean():.4f} | "
        f"{bits.std(ddof=1) / math.sqrt(len(bits)):.4f} |"
    )

    toy = toy_config()
    sde, density = build.get_sde(toy), data.toy_density()
    x_toy, _, toy_info = evaluate._dataset_arrays(toy, "test", 2000)
    x_toy = jnp.asarray(x_toy)
    exact = np.asarray(-density.log_prob(x_toy) / (2 * math.log(2)))
    print("\nGaussian-mixture ring (2-D), exact score, 2000 test points, rtol=atol=1e-5:\n")
    print("| divergence | per-example MAE (bits/dim) | error of the mean | mean NFE |")
    print("|---|---:|---:|---:|")
    for divergence in ("hutchinson", "exact"):
        logp, _, nfe = log_likelihood(
            jax.random.key(1), sde, density.score_fn(sde), x_toy, divergence=divergence
        )
        bits = evaluate.to_bits(logp, x_toy.shape, toy_info)
        print(
            f"| {divergence} | {np.abs(bits - exact).mean():.2e} | "
            f"{abs(bits.mean() - exact.mean()):.2e} | {int(nfe)} |"
        )


if __name__ == "__main__":
    main()
