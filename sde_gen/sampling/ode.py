r"""The probability-flow ODE through diffrax (Song et al. 2021, eq. 13 and sec. D).

`dx/dt = f(x, t) - g(t)^2 s(x, t) / 2` shares the marginals of the forward SDE and is a
deterministic bijection between data and noise. `ode_flow` maps a batch between any two
times in `[0, T]` (encoding: eps -> T; decoding: T -> eps); `sample_ode` decodes prior
draws. Steps are adaptive (`diffrax.PIDController(rtol, atol)`) unless `num_steps` fixes
them; the error norm is taken over the whole batch, as score_sde does.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._checks import check_sampling, check_score_fn, check_time, check_x, is_concrete
from ..score import ScoreFn
from ..sde import AbstractSDE, batch_times
from ._diffrax import check_ode_solve, solve_endpoint
from .predictors import require_linear


def ode_flow(
    sde: AbstractSDE,
    score_fn: ScoreFn,
    x: Array,
    t0: ArrayLike,
    t1: ArrayLike,
    solver: diffrax.AbstractSolver | str = "tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    num_steps: int | None = None,
    max_steps: int = 4096,
) -> tuple[Array, Array]:
    """Map the batch x at time t0 along the probability-flow ODE to time t1.

    Returns `(x_t1, nfe)`. Encoding is `ode_flow(sde, score_fn, x, eps, sde.T)`; decoding
    runs from T back to eps. Times are traced, so new times do not recompile.
    """
    x = check_x("x", x)
    check_time("t0", t0, sde.T)
    check_time("t1", t1, sde.T)
    if is_concrete(t0) and is_concrete(t1) and float(t0) == float(t1):
        raise ValueError(f"t0 and t1 must differ; both are {float(t0)}")
    solver = check_ode_solve(solver, rtol, atol, num_steps, max_steps)
    check_score_fn(score_fn, x.shape, x.dtype)
    t0 = jnp.asarray(t0, x.dtype)
    t1 = jnp.asarray(t1, x.dtype)
    return _ode_flow(sde, score_fn, x, t0, t1, solver, rtol, atol, num_steps, max_steps)


def sample_ode(
    key: PRNGKeyArray,
    sde: AbstractSDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    solver: diffrax.AbstractSolver | str = "tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-3,
    x_init: Array | None = None,
    num_steps: int | None = None,
    denoise: bool = False,
    max_steps: int = 4096,
) -> tuple[Array, Array]:
    """Sample by solving the probability-flow ODE from a prior draw at T down to eps.

    With `denoise=True` a last Tweedie step returns `E[x_0 | x_eps]` (one more NFE).
    Returns `(x, nfe)`.
    """
    solver = check_ode_solve(solver, rtol, atol, num_steps, max_steps)
    shape, x_init = check_sampling(sde, score_fn, shape, eps, x_init)
    if denoise:
        require_linear(sde, "denoise=True")
    x = sde.prior_sample(key, shape) if x_init is None else x_init
    x, nfe = _ode_flow(
        sde,
        score_fn,
        x,
        jnp.asarray(sde.T, x.dtype),
        jnp.asarray(eps, x.dtype),
        solver,
        rtol,
        atol,
        num_steps,
        max_steps,
    )
    if denoise:
        x, nfe = _tweedie(sde, score_fn, x, eps), nfe + 1
    return x, nfe


@eqx.filter_jit
def _tweedie(sde, score_fn, x, t):
    return sde.x0_from_score(x, t, score_fn(x, batch_times(t, x)))


@eqx.filter_jit
def _ode_flow(sde, score_fn, x, t0, t1, solver, rtol, atol, num_steps, max_steps):
    drift = sde.reverse(score_fn, probability_flow=True).drift
    return solve_endpoint(
        lambda t, y, args: drift(y, t), solver, t0, t1, x, num_steps, rtol, atol, max_steps
    )
