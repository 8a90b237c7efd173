"""Imputation against exact conditionals: error against cost for each `sample_impute` method.

    python benchmarks/inpainting.py [--obs 4000] [--steps 100,500] [--particles 4,16,64]

Problems (VP SDE, reverse-diffusion predictor, exact scores):

1. Gaussian: 2-D, unit variances, correlation 0.8; x1 observed (one draw of N(0, 1) per
   observation), x0 imputed. Exact: x0 | x1 ~ N(0.8 x1, 0.6^2). Reported: the error of the
   least-squares slope of the imputed x0 on x1 (s.e. 0.6 / sqrt(obs)) and the relative
   error of the residual std (s.e. 1 / sqrt(2 obs)).
2. Mixture: two components, x0 at -2 / 2 (std 0.5), x1 at -1 / 1 (std 1), weights
   0.7 / 0.3; x1 = 1 observed. Exact posterior weight of the second component
   sigmoid(log(3/7) + 2) = 0.760; reported: the error of the share of imputed x0 > 0
   (s.e. 0.0068 for 4000 observations).

Rows: replacement without and with the Langevin corrector (snr 0.16), reconstruction
guidance (weight 1 and 2, no corrector), and SMC for each particle count. NFE is score
evaluations per returned sample. The time is the Gaussian problem's, after a compiling run.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import sde_gen as sg

RHO, COND_STD = 0.8, 0.6
MASK = jnp.asarray([0.0, 1.0])
Y_MIX = 1.0
MIX_EXACT = 1 / (1 + np.exp(-(np.log(0.3 / 0.7) + 2 * Y_MIX)))


def problems(n):
    gaussian = sg.MultivariateGaussian(np.zeros(2), np.array([[1.0, RHO], [RHO, 1.0]]))
    x1 = jax.random.normal(jax.random.key(5), (n,))
    mixture = sg.GaussianMixture(
        means=[[-2.0, -1.0], [2.0, 1.0]], variances=[[0.25, 1.0], [0.25, 1.0]], weights=[0.7, 0.3]
    )
    return (
        (gaussian, jnp.stack([jnp.zeros(n), x1], axis=1)),
        (mixture, jnp.tile(jnp.asarray([0.0, Y_MIX]), (n, 1))),
    )


def slope_and_std(x, x_obs):
    x, x1 = np.asarray(x, np.float64), np.asarray(x_obs, np.float64)[:, 1]
    design = np.stack([np.ones(len(x1)), x1], axis=1)
    coef, *_ = np.linalg.lstsq(design, x[:, 0], rcond=None)
    return coef[1], np.std(x[:, 0] - design @ coef, ddof=2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--obs", type=int, default=4000)
    parser.add_argument("--steps", default="100,500")
    parser.add_argument("--particles", default="4,16,64")
    args = parser.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    particles = [int(k) for k in args.particles.split(",")]
    sde = sg.VPSDE()
    (gaussian, x_gauss), (mixture, x_mix) = problems(args.obs)
    print(
        f"# {platform.processor() or platform.machine()}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}; {args.obs} observations per problem; s.e.: slope "
        f"{COND_STD / np.sqrt(args.obs):.4f}, std {1 / np.sqrt(2 * args.obs):.2%}, weight "
        f"{np.sqrt(MIX_EXACT * (1 - MIX_EXACT) / args.obs):.4f}\n"
    )
    columns = "method | steps | particles | NFE | slope (0.8) | std error | weight error | time (s)"
    print(f"| {columns} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for n in steps:
        rows += [
            ("replacement", n, dict(corrector=None)),
            ("replacement + Langevin", n, dict(corrector="langevin")),
            ("reconstruction guidance, w=1", n, dict(corrector=None, guidance_weight=1.0)),
            ("reconstruction guidance, w=2", n, dict(corrector=None, guidance_weight=2.0)),
        ]
        rows += [("smc", n, dict(num_particles=k)) for k in particles]
    for name, n, kwargs in rows:
        method = name.split(",")[0].split(" +")[0].replace(" ", "_")

        def run(density, x_obs, key=jax.random.key(1)):
            out = sg.sample_impute(
                key, sde, density.score_fn(sde), x_obs, MASK, method=method, num_steps=n, **kwargs
            )
            return jax.block_until_ready(out)

        run(gaussian, x_gauss, jax.random.key(0))  # compile
        start = time.perf_counter()
        x, nfe = run(gaussian, x_gauss)
        seconds = time.perf_counter() - start
        slope, std = slope_and_std(x, x_gauss)
        x, _ = run(mixture, x_mix)
        weight = float(np.mean(np.asarray(x)[:, 0] > 0))
        print(
            f"| {name} | {n} | {kwargs.get('num_particles', '-')} | {nfe} | {slope:.3f} | "
            f"{std / COND_STD - 1:+.1%} | {weight - MIX_EXACT:+.3f} | {seconds:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
