"""Speed and accuracy of bits/dim evaluation.

    python benchmarks/likelihood_speed.py --workdir runs/digits [--examples 128]
        [--ml-workdir runs/digits_ml]

Prints two markdown tables:

1. the trained digits model (`configs/vp_digits.py`, the checkpoint in `--workdir`): examples/s,
   NFE and bits/dim with standard error of the PF-ODE likelihood on test digits, for
   Hutchinson at two tolerances and the exact divergence, and the likelihood bound; with
   `--ml-workdir`, the same rows for the maximum-likelihood run (`configs/vp_digits_ml.py`)
   and its bound under the learned dequantizer;
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


def row(model, method, tol, rate, nfe, bits) -> None:
    import numpy as np

    bits = np.asarray(bits)
    tol = "-" if tol is None else f"{tol:g}"
    print(
        f"| {model} | {method} | {tol} | {rate:.1f} | {nfe} | {bits.mean():.4f} | "
        f"{bits.std(ddof=1) / math.sqrt(len(bits)):.4f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/digits", help="a trained vp_digits run")
    parser.add_argument("--ml-workdir", default=None, help="a trained vp_digits_ml run")
    parser.add_argument("--examples", type=int, default=128)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from absl import logging

    from configs.toy_2d import get_config as toy_config
    from configs.vp_digits import get_config as digits_config
    from configs.vp_digits_ml import get_config as digits_ml_config
    from sde_gen import data, experiments, log_likelihood, nll_bound
    from sde_gen.dequantization import dequantize
    from sde_gen.experiments.state import DEQUANTIZER
    from sde_gen.experiments.evaluate import latest_params
    from sde_gen.experiments.kinds import make_experiment

    logging.set_verbosity(logging.WARNING)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{jax.default_backend()}; jax {jax.__version__}\n"
    )

    print("| model | method | rtol=atol | examples/s | mean NFE | bits/dim | std. error |")
    print("|---|---|---:|---:|---:|---:|---:|")
    runs = [("vp_digits", digits_config, args.workdir)]
    if args.ml_workdir:
        runs.append(("vp_digits_ml", digits_ml_config, args.ml_workdir))
    for label, get_config, workdir in runs:
        experiment = make_experiment(experiments.load(get_config()))
        sde = experiment.sde
        step, params = latest_params(experiment, workdir)
        score_fn = experiment.score_fn(params)
        x = jnp.asarray(experiment.load_split("test", args.examples, dequantize=True)[0])
        tag = f"{label} (step {step})"
        rows = [("hutchinson", 1e-3, len(x)), ("hutchinson", 1e-4, len(x)), ("exact", 1e-3, 16)]
        for divergence, tol, n in rows:
            run = lambda xs: log_likelihood(
                jax.random.key(0), sde, score_fn, xs, divergence=divergence, rtol=tol, atol=tol
            )
            jax.block_until_ready(run(x[:n]))  # compile (and warm up) at the timed shape
            start = time.perf_counter()
            logp, _, nfe = jax.block_until_ready(run(x[:n]))
            seconds = time.perf_counter() - start
            row(tag, f"PF-ODE, {divergence} ({n} digits)", tol, n / seconds, int(nfe),
                experiment.bits(logp, x[:n].shape))  # fmt: skip
        bound = lambda xs: nll_bound(jax.random.key(0), sde, score_fn, xs, num_samples=16)[0]
        jax.block_until_ready(bound(x))
        start = time.perf_counter()
        nll = jax.block_until_ready(bound(x))
        seconds = time.perf_counter() - start
        row(tag, f"bound, 16 draws of t ({len(x)} digits)", None, len(x) / seconds, 16,
            experiment.bits(-nll, x.shape))  # fmt: skip
        if experiment.dequantizer is None:
            continue
        # the learned dequantizer: -log p(y) + log q(u | k) on the discrete test digits
        k = jnp.asarray(experiment.load_split("test", args.examples, dequantize=False)[0])
        info = experiment.info

        def learned(xs):
            y, log_q = dequantize(
                experiment.dequantizer, {"params": params[DEQUANTIZER]}, jax.random.key(3), xs,
                info.n_levels, info.data_range,
            )  # fmt: skip
            logp, _, nfe = log_likelihood(jax.random.key(0), sde, score_fn, y, rtol=1e-4, atol=1e-4)
            return logp - log_q, nfe

        jax.block_until_ready(learned(k))
        start = time.perf_counter()
        logp, nfe = jax.block_until_ready(learned(k))
        seconds = time.perf_counter() - start
        row(tag, f"PF-ODE, hutchinson, learned dequantization ({len(k)} digits)", 1e-4,
            len(k) / seconds, int(nfe), experiment.bits(logp, k.shape))  # fmt: skip

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
