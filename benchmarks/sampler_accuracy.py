"""Accuracy against cost of the probability-flow ODE solvers and likelihoods, with exact answers.

    python benchmarks/sampler_accuracy.py [--dim 256] [--batch 256] [--tables fast,optimized]

Data: a D-dimensional diagonal Gaussian with power-law variances `k^-alpha`, k = 1..D,
spanning 1 to 1e-3 (alpha = log(1000) / log(D)), under the VP SDE with its exact score, so
the PF-ODE map from T to eps and log p_eps(x) are known in closed form. Prints markdown
tables:

1. diffrax: RMS error of x_eps against the closed-form flow map, against NFE, for
   fixed-step Euler and Heun and adaptive Tsit5 / Dopri5 at rtol = atol in {1e-3, 1e-4, 1e-5};
2. fast: the same error for every fast solver (`sg.sample_fast`) and time grid at
   NFE 5, 10, 15, 20, 30, 50 (single-step methods take the most steps within the budget),
   then the cheapest configuration reaching RMS <= 1e-3 (the target: <= 15 NFE);
3. optimized: the same error on grids fitted by `sg.optimize_grid` (256 other prior draws,
   300 Adam steps from the log-SNR grid, Tsit5 reference at 1e-5) against the log-SNR grid,
   at NFE 5, 8, 10, 15, 20 for the most accurate multistep solvers; the target is
   RMS <= 1e-3 at <= 10 NFE;
4. likelihood: mean absolute error of log p_eps(x) in nats/dim (and bits/dim) against NFE,
   with the exact divergence and with Hutchinson's estimator (one probe per example;
   Rademacher probes are exact for this diagonal Jacobian, Gaussian ones are not).

Wall times exclude compilation (each configuration runs once to compile, then is timed).
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
from sde_gen.sampling import FAST_SOLVERS, GRIDS

EPS_SAMPLE, EPS_LIKELIHOOD = 1e-3, 1e-5
FAST_NFE = (5, 10, 15, 20, 30, 50)
TARGET_RMS, TARGET_NFE = 1e-3, 15
OPT_NFE, OPT_METHODS = (5, 8, 10, 15, 20), ("dpm_solver_3m", "dpm_solver++_3m", "unipc")
OPT_TARGET_NFE = 10
TABLES = ("diffrax", "fast", "optimized", "likelihood")


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
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated subset")
    args = parser.parse_args(argv)
    tables = args.tables.split(",")
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        parser.error(f"unknown table(s) {unknown}; choose from {', '.join(TABLES)}")

    sde = sg.VPSDE()
    d = args.dim
    alpha = math.log(1e3) / math.log(d)
    data = sg.Gaussian(jnp.linspace(-1.0, 1.0, d), jnp.arange(1, d + 1) ** -alpha)
    key = jax.random.key(0)
    print(
        f"# {platform.processor() or platform.machine()}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}, diffrax {diffrax.__version__}\n"
    )
    if "diffrax" in tables:
        diffrax_table(sde, data, key, args.batch)
    if "fast" in tables:
        fast_table(sde, data, key, args.batch)
    if "optimized" in tables:
        optimized_table(sde, data, key, args.batch)
    if "likelihood" in tables:
        likelihood_table(sde, data, key, args.batch)


def _rms(x, exact) -> float:
    return float(jnp.sqrt(jnp.mean((x - exact) ** 2)))


def diffrax_table(sde, data, key, batch) -> None:
    score_fn = data.score_fn(sde)
    x_T = data.marginal(sde, sde.T).sample(key, batch)
    exact = data.flow(sde, x_T, sde.T, EPS_SAMPLE)
    print(f"# PF-ODE accuracy with diffrax: VP, D={data.event_shape[0]}, batch {batch}\n")
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
        rms = _rms(x, exact)
        print(f"| {type(solver).__name__} | {setting} | {int(nfe)} | {rms:.2e} | {seconds:.3f} |")
    print()


def fast_table(sde, data, key, batch) -> None:
    score_fn = data.score_fn(sde)
    x_T = data.marginal(sde, sde.T).sample(key, batch)
    exact = data.flow(sde, x_T, sde.T, EPS_SAMPLE)
    print(f"# Fast solvers (sg.sample_fast, no final denoising): RMS error vs NFE, batch {batch}\n")
    print("| method | grid | " + " | ".join(f"NFE {n}" for n in FAST_NFE) + " |")
    print("|---|---|" + "---:|" * len(FAST_NFE))
    reached = []  # (nfe, rms, method, grid) at or below the target error
    for method, solver in FAST_SOLVERS.items():
        for grid in GRIDS:
            cells = []
            for budget in FAST_NFE:
                steps = budget // solver.evals_per_step
                if steps == 0:
                    cells.append("-")
                    continue
                x, nfe = sg.sample_fast(
                    key, sde, score_fn, x_T.shape, method, num_steps=steps, grid=grid,
                    eps=EPS_SAMPLE, x_init=x_T, denoise=False,
                )  # fmt: skip
                rms = _rms(x, exact)
                cells.append(f"{rms:.1e}" + (f" ({nfe})" if nfe != budget else ""))
                if rms <= TARGET_RMS:
                    reached.append((nfe, rms, method, grid))
            print(f"| {method} | {grid} | " + " | ".join(cells) + " |")
    print()
    if reached:
        nfe, rms, method, grid = min(reached)
        verdict = "meets" if nfe <= TARGET_NFE else "misses"
        print(
            f"Cheapest at RMS <= {TARGET_RMS:g}: {method} on the {grid} grid, {nfe} NFE "
            f"(RMS {rms:.1e}); {verdict} the target of <= {TARGET_NFE} NFE.\n"
        )
    else:
        print(f"No configuration reached RMS <= {TARGET_RMS:g} within {FAST_NFE[-1]} NFE.\n")


def optimized_table(sde, data, key, batch) -> None:
    score_fn = data.score_fn(sde)
    x_T = data.marginal(sde, sde.T).sample(key, batch)  # held out: the grids never see these
    exact = data.flow(sde, x_T, sde.T, EPS_SAMPLE)
    print(f"# Optimized grids (sg.optimize_grid on other draws): RMS error vs NFE, batch {batch}\n")
    print("| method | grid | " + " | ".join(f"NFE {n}" for n in OPT_NFE) + " | fit (s) |")
    print("|---|---|" + "---:|" * (len(OPT_NFE) + 1))
    reached = []
    for method in OPT_METHODS:
        rows = {"logsnr": [], "optimized": []}
        seconds = 0.0
        for nfe in OPT_NFE:
            start = time.perf_counter()
            ts = sg.optimize_grid(
                jax.random.key(1), sde, score_fn, x_T.shape, method, nfe, eps=EPS_SAMPLE
            )
            seconds += time.perf_counter() - start
            for grid, label in ((ts, "optimized"), ("logsnr", "logsnr")):
                x, _ = sg.sample_fast(
                    key, sde, score_fn, x_T.shape, method, num_steps=nfe, grid=grid,
                    eps=EPS_SAMPLE, x_init=x_T, denoise=False,
                )  # fmt: skip
                rms = _rms(x, exact)
                rows[label].append(f"{rms:.1e}")
                if label == "optimized" and rms <= TARGET_RMS:
                    reached.append((nfe, rms, method))
        print(f"| {method} | logsnr | " + " | ".join(rows["logsnr"]) + " | |")
        print(f"| {method} | optimized | " + " | ".join(rows["optimized"]) + f" | {seconds:.0f} |")
    print()
    if reached:
        nfe, rms, method = min(reached)
        verdict = "meets" if nfe <= OPT_TARGET_NFE else "misses"
        print(
            f"Cheapest at RMS <= {TARGET_RMS:g}: {method} on its optimized grid, {nfe} NFE "
            f"(RMS {rms:.1e}); {verdict} the target of <= {OPT_TARGET_NFE} NFE.\n"
        )


def likelihood_table(sde, data, key, batch) -> None:
    score_fn = data.score_fn(sde)
    d = data.event_shape[0]
    x0 = data.sample(jax.random.key(1), batch)
    exact_logp = data.log_prob_t(sde, x0, EPS_LIKELIHOOD)
    p_T = data.marginal(sde, sde.T)
    print(f"# Likelihood accuracy: log p_eps(x) at eps={EPS_LIKELIHOOD:g}, Tsit5, D={d}\n")
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
