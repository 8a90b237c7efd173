"""Accuracy against cost of the probability-flow ODE solvers and likelihoods, with exact answers.

    python benchmarks/sampler_accuracy.py [--dim 256] [--batch 256]

Data: a D-dimensional diagonal Gaussian with power-law variances (1e-3 ... 1) under the VP
SDE, with its exact score, so the PF-ODE map from T to eps and log p_eps(x) are known in
closed form. Prints two markdown tables:

1. sampling: RMS error of x_eps against the closed-form flow map, against NFE, for fixed-step
   Euler and Heun and adaptive Tsit5 / Dopri5 at rtol = atol in {1e-3, 1e-4, 1e-5};
2. likelihood: mean absolute error of log p_eps(x) in nats/dim (and bits/dim) against NFE,
   with the exact divergence and with Hutchinson's estimator (one probe per example;
   Rademacher probes are exact for this diagonal Jacobian, Gaussian ones are not).

Wall times exclude compilation (each configuration runs once to compile, then is timed).
This is the baseline the fast solvers must beat: error <= 1e-3 at <= 20 NFE.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import diffrax
import jax
import jax.numpy as jnp

import sde_gen as sg

EPS_SAMPLE, EPS_LIKELIHOOD = 1e-3, 1e-5


def timed(fn):
    """Run once to compile, then time a second run; returns (result, seconds)."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)

    sde = sg.VPSDE()
    d = args.dim
    data = sg.Gaussian(jnp.linspace(-1.0, 1.0, d), jnp.logspace(-3, 0, d))
    score_fn = data.score_fn(sde)
    key = jax.random.key(0)
    x_T = data.marginal(sde, sde.T).sample(key, args.batch)
    exact = data.flow(sde, x_T, sde.T, EPS_SAMPLE)

    print(f"# PF-ODE accuracy: VP, D={d}, batch {args.batch}, exact score")
    print(
        f"# {platform.processor() or platform.machine()}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}, diffrax {diffrax.__version__}\n"
    )
    print("| solver | setting | NFE | RMS error | time (s) |")
    print("|---|---|---:|---:|---:|")
    rows = [(diffrax.Euler(), f"{n} steps", dict(num_steps=n)) for n in (100, 1000)]
    rows += [(diffrax.Heun(), f"{n} steps", dict(num_steps=n)) for n in (50, 500)]
    rows += [
        (solver, f"rtol=atol={tol:g}", dict(rtol=tol, atol=tol))
        for solver in (diffrax.Tsit5(), diffrax.Dopri5())
        for tol in (1e-3, 1e-4, 1e-5)
    ]
    for solver, setting, kwargs in rows:
        (x, nfe), seconds = timed(
            lambda: sg.ode_flow(sde, score_fn, x_T, sde.T, EPS_SAMPLE, solver=solver, **kwargs)
        )
        rms = float(jnp.sqrt(jnp.mean((x - exact) ** 2)))
        print(f"| {type(solver).__name__} | {setting} | {int(nfe)} | {rms:.2e} | {seconds:.3f} |")

    x0 = data.sample(jax.random.key(1), args.batch)
    exact_logp = data.log_prob_t(sde, x0, EPS_LIKELIHOOD)
    p_T = data.marginal(sde, sde.T)
    print(f"\n# Likelihood accuracy: log p_eps(x) at eps={EPS_LIKELIHOOD:g}, Tsit5, D={d}\n")
    print("| divergence | rtol=atol | NFE | mean abs error (nats/dim) | (bits/dim) | time (s) |")
    print("|---|---|---:|---:|---:|---:|")
    methods = [("exact", "rademacher"), ("hutchinson", "rademacher"), ("hutchinson", "gaussian")]
    for divergence, probe in methods:
        label = divergence if divergence == "exact" else f"hutchinson ({probe})"
        for tol in (1e-3, 1e-4, 1e-5):
            (logp, z, nfe), seconds = timed(
                lambda: sg.log_likelihood(
                    key,
                    sde,
                    score_fn,
                    x0,
                    divergence=divergence,
                    probe=probe,
                    eps=EPS_LIKELIHOOD,
                    rtol=tol,
                    atol=tol,
                )
            )
            # The model's prior is N(0, I); swap in the true p_T at the latent to compare.
            recovered = logp - sde.prior_logp(z) + p_T.log_prob(z)
            err = float(jnp.mean(jnp.abs(recovered - exact_logp))) / d
            print(
                f"| {label} | {tol:g} | {int(nfe)} | {err:.2e} | {err / math.log(2):.2e} "
                f"| {seconds:.3f} |"
            )


if __name__ == "__main__":
    main()
