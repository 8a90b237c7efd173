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
from ..sde import AbstractSDE
from ._diffrax import ODE_SOLVERS, check_ode_solve, solve_endpoint
from .base import (
    AbstractSampler,
    build_or_none,
    check_bool,
    check_eps_setting,
    check_optional_steps,
    short_name,
    tweedie,
)
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


class ODESampler(AbstractSampler):
    """Solve the probability-flow ODE from a prior draw at T down to eps with diffrax.

    Args:
        solver: an explicit diffrax solver or its name in `ODE_SOLVERS` (default Tsit5).
        rtol, atol: tolerances of the adaptive step control (`PIDController`).
        num_steps: fixed uniform steps instead (None: adaptive).
        max_steps: the most steps an adaptive solve may take.
        eps: the end time.
        denoise: end with Tweedie's `x0(x, eps)` (one more NFE; default False).
    """

    solver: diffrax.AbstractSolver
    rtol: float
    atol: float
    num_steps: int | None
    max_steps: int
    eps: float
    denoise: bool

    method = "ode"
    _registries = {"solver": ODE_SOLVERS}

    def __init__(
        self,
        solver: diffrax.AbstractSolver | str = "tsit5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        num_steps: int | None = None,
        max_steps: int = 4096,
        eps: float = 1e-3,
        denoise: bool = False,
    ):
        self.solver = check_ode_solve(solver, rtol, atol, num_steps, max_steps)
        self.rtol, self.atol = float(rtol), float(atol)
        self.num_steps = check_optional_steps("num_steps", num_steps)
        self.max_steps = int(max_steps)
        self.eps = check_eps_setting(eps)
        self.denoise = check_bool("denoise", denoise)

    def __call__(self, key, sde, score_fn, shape, *, x_init=None):
        shape, x_init = check_sampling(sde, score_fn, shape, self.eps, x_init)
        if self.denoise:
            require_linear(sde, "denoise=True")
        x = sde.prior_sample(key, shape) if x_init is None else x_init
        x, nfe = self.solve(sde, score_fn, x)
        # the adaptive count is known only after the solve: a Python int when called
        # eagerly, the traced count inside a transformation (jit, pmap, vmap)
        nfe = int(nfe) if is_concrete(nfe) else nfe
        if self.denoise:
            x, nfe = jitted_tweedie(sde, score_fn, x, self.eps), nfe + 1
        return x, nfe

    def solve(self, sde: AbstractSDE, score_fn: ScoreFn, x: Array) -> tuple[Array, Array]:
        """Decode x at T to eps (jitted); returns `(x_eps, nfe)` with nfe an int Array."""
        t0, t1 = jnp.asarray(sde.T, x.dtype), jnp.asarray(self.eps, x.dtype)
        return _ode_flow(
            sde, score_fn, x, t0, t1, self.solver, self.rtol, self.atol, self.num_steps,
            self.max_steps,
        )  # fmt: skip

    def _name_parts(self):
        solver = short_name(self.solver, ODE_SOLVERS).lower()
        if self.num_steps is None:
            rtol = f"{self.rtol:g}"
            return (solver, rtol), build_or_none(ODESampler, solver, rtol=float(rtol))
        return (solver, f"{self.num_steps}steps"), build_or_none(
            ODESampler, solver, num_steps=self.num_steps
        )


def sample_ode(
    key: PRNGKeyArray,
    sde: AbstractSDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    solver: diffrax.AbstractSolver | str = "tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    num_steps: int | None = None,
    max_steps: int = 4096,
    eps: float = 1e-3,
    denoise: bool = False,
    x_init: Array | None = None,
) -> tuple[Array, int]:
    """Sample by solving the probability-flow ODE from a prior draw at T down to eps.

    `ODESampler(solver, rtol, atol, num_steps, max_steps, eps, denoise)` called on
    `(key, sde, score_fn, shape, x_init=x_init)`. With `denoise=True` (default False) a last
    Tweedie step returns `E[x_0 | x_eps]` (one more NFE). Returns `(x, nfe)`, nfe an int.
    """
    sampler = ODESampler(solver, rtol, atol, num_steps, max_steps, eps, denoise)
    return sampler(key, sde, score_fn, shape, x_init=x_init)


jitted_tweedie = eqx.filter_jit(tweedie)  # the final step outside a compiled solve


@eqx.filter_jit
def _ode_flow(sde, score_fn, x, t0, t1, solver, rtol, atol, num_steps, max_steps):
    drift = sde.reverse(score_fn, probability_flow=True).drift
    return solve_endpoint(
        lambda t, y, args: drift(y, t), solver, t0, t1, x, num_steps, rtol, atol, max_steps
    )
