r"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, sec. D.2).

Along the PF-ODE `dx/dt = f~(x, t)` the log-density obeys the instantaneous change of
variables, so

    log p_eps(x) = log p_T(x_T) + int_eps^T div f~(x_t, t) dt,

solved jointly with `x_t` from `x_eps = x` up to T with an adaptive diffrax solver. The
divergence is exact (D Jacobian-vector products, for small D) or Hutchinson's unbiased
estimate `e^T (d f~/dx) e` with one probe e per example, fixed for the whole solve
(Rademacher or Gaussian), at the cost of one VJP per evaluation.

`nats_to_bits_per_dim` is the one conversion `nats / (D ln 2)` (D = 1: bits);
`bits_per_dim` converts a density of dequantized data into bits per dimension of the
discrete data: for `n_bins` intensity levels uniformly dequantized over `[lo, hi]`,
`bpd = -log p(x) / (D ln 2) - log2(hi - lo) + log2(n_bins)` (+8 for 8-bit data in [0, 1],
+7 for 8-bit data scaled to [-1, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._checks import check_finite, check_score_fn, check_steps, check_time, check_x, choose
from .sampling._diffrax import check_ode_solve, solve_endpoint
from .score import ScoreFn
from .sde import AbstractSDE, sum_event

Field = Callable[[Array], Array]


def exact_divergence(fn: Field, x: Array, probe: Array | None = None) -> tuple[Array, Array]:
    """`(fn(x), div fn(x))` per example, exactly, with one JVP per data dimension.

    `fn` maps a batch to a batch and treats examples independently. `probe` is unused.
    """
    del probe
    dims = x.shape[1:]
    d = math.prod(dims)
    out, jvp = jax.linearize(fn, x)
    basis = jnp.eye(d, dtype=x.dtype).reshape(d, 1, *dims)

    def diagonal_entry(e):
        # (d fn / dx) e_i for every example at once; keep its i-th coordinate.
        return sum_event(jvp(jnp.broadcast_to(e, x.shape)) * e)

    return out, jnp.sum(jax.lax.map(diagonal_entry, basis), axis=0)


def hutchinson_divergence(fn: Field, x: Array, probe: Array) -> tuple[Array, Array]:
    """`(fn(x), e^T (d fn/dx) e)` per example: an unbiased estimate of the divergence for a
    probe e with `E[e e^T] = I`, at the cost of one VJP."""
    out, vjp = jax.vjp(fn, x)
    (e_jac,) = vjp(probe)
    return out, sum_event(e_jac * probe)


DIVERGENCES = {"hutchinson": hutchinson_divergence, "exact": exact_divergence}


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype=dtype)


def _gaussian(key, shape, dtype):
    return jax.random.normal(key, shape, dtype)


PROBES = {"rademacher": _rademacher, "gaussian": _gaussian}


def log_likelihood(
    key: PRNGKeyArray,
    sde: AbstractSDE,
    score_fn: ScoreFn,
    x: Float[Array, "batch *dims"],
    divergence: str = "hutchinson",
    eps: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    probe: str = "rademacher",
    solver: diffrax.AbstractSolver | str = "tsit5",
    num_steps: int | None = None,
    max_steps: int = 4096,
) -> tuple[Float[Array, " batch"], Array, Array]:
    """`log p_eps(x)` in nats per example under the probability-flow ODE of `score_fn`.

    Args:
        key: draws the Hutchinson probes (unused for the exact divergence).
        divergence: "hutchinson" or "exact" (D JVPs per evaluation: small D only).
        eps: the time at which the density is evaluated (score_sde: 1e-5).
        probe: "rademacher" or "gaussian" Hutchinson probes.
        num_steps: fixed steps instead of adaptive control.

    Returns:
        `(logp, z, nfe)`: log-likelihoods `(B,)`, the latent `x_T`, and the number of
        score evaluations (each with one VJP, or D JVPs when exact).
    """
    x = check_finite("x", check_x("x", x))
    divergence_fn = choose("divergence", divergence, DIVERGENCES)
    draw_probe = choose("probe", probe, PROBES)
    check_time("eps", eps, sde.T, open_left=True)
    solver = check_ode_solve(solver, rtol, atol, num_steps, max_steps)
    check_score_fn(score_fn, x.shape, x.dtype)
    e = draw_probe(key, x.shape, x.dtype)
    return _log_likelihood(
        sde,
        score_fn,
        x,
        e,
        divergence_fn,
        jnp.asarray(eps, x.dtype),
        solver,
        rtol,
        atol,
        num_steps,
        max_steps,
    )


@eqx.filter_jit
def _log_likelihood(
    sde, score_fn, x, e, divergence_fn, eps, solver, rtol, atol, num_steps, max_steps
):
    drift = sde.reverse(score_fn, probability_flow=True).drift

    def vector_field(t, state, args):
        y, _ = state
        return divergence_fn(lambda z: drift(z, t), y, e)

    (z, delta), nfe = solve_endpoint(
        vector_field,
        solver,
        eps,
        jnp.asarray(sde.T, x.dtype),
        (x, jnp.zeros((x.shape[0],), x.dtype)),
        num_steps,
        rtol,
        atol,
        max_steps,
    )
    return sde.prior_logp(z) + delta, z, nfe


def nats_to_bits_per_dim(nats: ArrayLike, dims: int = 1) -> Array:
    """`nats / (dims ln 2)`: nats (per example, or any shape) in bits per dimension of
    `dims`-dimensional data; `dims=1` gives bits."""
    check_steps("dims", dims)
    return jnp.asarray(nats) / (dims * math.log(2))


def bits_per_dim(
    logp: ArrayLike,
    x_shape: Sequence[int],
    data_range: tuple[float, float] = (-1.0, 1.0),
    n_bins: int = 256,
) -> Array:
    """Bits per dimension of discrete data from the log-density of its dequantized version.

    Args:
        logp: `log p(x)` in nats, per example `(B,)` (or any shape).
        x_shape: the batch shape `x.shape = (B, *dims)`; D = prod(dims).
        data_range: `(lo, hi)`, the interval the `n_bins` dequantization bins tile.
        n_bins: number of intensity levels (256 for 8-bit images, 17 for sklearn digits).
    """
    x_shape = tuple(int(s) for s in x_shape)
    if len(x_shape) < 2:
        raise ValueError(f"x_shape must be the batch shape (B, *dims); got {x_shape}")
    lo, hi = (float(v) for v in data_range)
    if not hi > lo:
        raise ValueError(f"data_range must be (lo, hi) with hi > lo; got {data_range}")
    check_steps("n_bins", n_bins)
    logp = check_finite("logp", jnp.asarray(logp))
    offset = math.log2(n_bins) - math.log2(hi - lo)
    return nats_to_bits_per_dim(-logp, math.prod(x_shape[1:])) + offset
