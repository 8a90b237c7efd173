"""Sample a 2-D Gaussian mixture with every sampler, using its exact score.

    python examples/gmm_2d.py --out=gmm_2d.png

For VP, sub-VP and VE it runs the predictor-corrector samplers, the probability-flow ODE
and the reverse SDE through diffrax, all from prior draws, and writes one PNG: a row per
SDE, the data in the first column and a sampler in each other. Each panel's title gives
the score evaluations per sample (NFE) and two exact quality numbers: the mean
log-density of the samples under the data (the data's own value is in the first column)
and the largest error in the mixture's component weights.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import sde_gen as sg  # noqa: E402


def ring_mixture(k: int = 8, radius: float = 4.0, std: float = 0.3) -> sg.GaussianMixture:
    """k Gaussians evenly spaced on a circle, with unequal weights so errors show."""
    angles = 2 * math.pi * np.arange(k) / k
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    weights = 1.0 + np.arange(k) / k
    return sg.GaussianMixture(means, variances=std**2, weights=weights)


SDES = {"vp": ("VP", sg.VPSDE()), "subvp": ("sub-VP", sg.SubVPSDE()), "ve": ("VE", sg.VESDE())}


def samplers(num_steps: int):
    """Name -> function (key, sde, score_fn, shape) -> (x, nfe)."""
    return {
        "PC Euler-Maruyama": lambda k, s, f, shape: sg.sample_pc(
            k, s, f, shape, predictor="euler_maruyama", num_steps=num_steps
        ),
        "PC reverse diffusion + Langevin": lambda k, s, f, shape: sg.sample_pc(
            k,
            s,
            f,
            shape,
            predictor="reverse_diffusion",
            corrector="langevin",
            snr=0.05,
            num_steps=num_steps,
        ),
        "PC ancestral": lambda k, s, f, shape: sg.sample_pc(
            k, s, f, shape, predictor="ancestral", num_steps=num_steps
        ),
        "PF-ODE Tsit5 (adaptive)": lambda k, s, f, shape: sg.sample_ode(
            k, s, f, shape, rtol=1e-4, atol=1e-4
        ),
        "reverse SDE Euler": lambda k, s, f, shape: sg.sample_sde(
            k, s, f, shape, solver=diffrax.Euler(), num_steps=num_steps
        ),
        "reverse SDE ShARK": lambda k, s, f, shape: sg.sample_sde(
            k, s, f, shape, solver=diffrax.ShARK(), num_steps=num_steps // 4
        ),
    }


def weight_error(mixture: sg.GaussianMixture, x: jax.Array) -> float:
    labels = jnp.argmax(mixture.responsibilities(x), axis=1)
    freq = jnp.bincount(labels, length=mixture.weights.shape[0]) / x.shape[0]
    return float(jnp.max(jnp.abs(freq - mixture.weights)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gmm_2d.png", help="where to write the PNG")
    parser.add_argument("--n", type=int, default=4000, help="samples per sampler")
    parser.add_argument("--steps", type=int, default=500, help="steps of fixed-step samplers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sde", default="vp,subvp,ve", help=f"comma-separated subset of {', '.join(SDES)}"
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.steps < 4:
        parser.error(f"--n must be >= 1 and --steps >= 4; got --n={args.n} --steps={args.steps}")
    unknown = [name for name in args.sde.split(",") if name not in SDES]
    if unknown:
        parser.error(f"unknown --sde {', '.join(unknown)}; choose from {', '.join(SDES)}")

    mixture = ring_mixture()
    sdes = {SDES[name][0]: SDES[name][1] for name in args.sde.split(",")}
    runs = samplers(args.steps)
    key = jax.random.key(args.seed)
    data = mixture.sample(jax.random.fold_in(key, 1), args.n)
    data_logp = float(jnp.mean(mixture.log_prob(data)))

    fig, axes = plt.subplots(
        len(sdes), len(runs) + 1, figsize=(3 * (len(runs) + 1), 3 * len(sdes)), squeeze=False
    )
    total, start = len(sdes) * len(runs), time.perf_counter()
    done = 0
    print(f"{'SDE':7s} {'sampler':34s} {'NFE':>6s} {'E log p':>8s} {'w err':>6s} {'time':>6s}")
    for row, (sde_name, sde) in enumerate(sdes.items()):
        score_fn = mixture.score_fn(sde)
        axes[row, 0].scatter(*np.asarray(data).T, s=1, alpha=0.3, color="k")
        axes[row, 0].set_title(f"{sde_name}: data\nE log p = {data_logp:.3f}", fontsize=8)
        for col, (name, run) in enumerate(runs.items(), start=1):
            t0 = time.perf_counter()
            x, nfe = run(jax.random.fold_in(key, 100 * row + col), sde, score_fn, (args.n, 2))
            x = jax.block_until_ready(x)
            seconds = time.perf_counter() - t0
            logp = float(jnp.mean(mixture.log_prob(x)))
            werr = weight_error(mixture, x)
            done += 1
            elapsed = time.perf_counter() - start
            eta = elapsed / done * (total - done)
            print(
                f"{sde_name:7s} {name:34s} {int(nfe):6d} {logp:8.3f} {werr:6.3f} "
                f"{seconds:5.1f}s  [{done}/{total}, ETA {eta:4.0f}s]",
                flush=True,
            )
            ax = axes[row, col]
            ax.scatter(*np.asarray(x).T, s=1, alpha=0.3)
            ax.set_title(
                f"{sde_name}: {name}\nNFE {int(nfe)}, E log p {logp:.3f}, w err {werr:.3f}",
                fontsize=8,
            )
    for ax in axes.flat:
        ax.set_xlim(-6, 6)
        ax.set_ylim(-6, 6)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out} ({time.perf_counter() - start:.0f}s in all)")


if __name__ == "__main__":
    main()
