r"""The reverse-time SDE through diffrax's SDE solvers (Song et al. 2021, eq. 6).

diffrax steps forward in time, so the reverse SDE `dx = [f - g^2 s] dt + g dw_bar` on
`t: T -> eps` is solved in the reversed clock `r = T - t` on `[0, T - eps]`:

    dy = -[f(y, T - r) - g(T - r)^2 s(y, T - r)] dr + g(T - r) dW_r,   y(r) = x(T - r).

The noise is additive (g depends on t only), so Ito and Stratonovich solvers agree and the
additive-noise stochastic Runge-Kutta methods (`diffrax.ShARK`, `SRA1`, `SEA`) apply. Steps
are fixed (`num_steps`) on a uniform grid; the Brownian path is `UnsafeBrownianPath`
(sampling needs no backpropagation), with the Levy area the solver asks for.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, PRNGKeyArray

from .._checks import check_sampling, check_steps
from ..score import ScoreFn
from ..sde import AbstractSDE
from ._diffrax import SDE_SOLVERS, brownian_levy_area, check_sde_solver, sde_nfe
from .base import AbstractSampler, build_or_none, check_bool, check_eps_setting, short_name
from .ode import jitted_tweedie
from .predictors import require_linear


class SDESampler(AbstractSampler):
    """Solve the reverse-time SDE from a prior draw at T down to eps with diffrax.

    Args:
        solver: a diffrax SDE solver or its name in `SDE_SOLVERS`: `Euler()` / "euler"
            (Euler-Maruyama, the default), `Heun()`, `EulerHeun()`, or an additive-noise
            SRK such as `ShARK()` / "shark" (strong order 1.5 here).
        num_steps: fixed uniform steps from T to eps.
        eps: the end time.
        denoise: end with Tweedie's `x0(x, eps)` (one more NFE; default False).
    """

    solver: diffrax.AbstractSolver
    num_steps: int
    eps: float
    denoise: bool

    method = "sde"
    _registries = {"solver": SDE_SOLVERS}

    def __init__(
        self,
        solver: diffrax.AbstractSolver | str = "euler",
        num_steps: int = 1000,
        eps: float = 1e-3,
        denoise: bool = False,
    ):
        self.solver = check_sde_solver(solver)
        self.num_steps = check_steps("num_steps", num_steps)
        self.eps = check_eps_setting(eps)
        self.denoise = check_bool("denoise", denoise)

    @property
    def nfe(self) -> int:
        return sde_nfe(self.solver, self.num_steps) + int(self.denoise)

    def __call__(self, key, sde, score_fn, shape, *, x_init=None):
        shape, x_init = check_sampling(sde, score_fn, shape, self.eps, x_init)
        if self.denoise:
            require_linear(sde, "denoise=True")
        x = _sample_sde(key, sde, score_fn, shape, self.solver, self.num_steps, self.eps, x_init)
        if self.denoise:
            x = jitted_tweedie(sde, score_fn, x, self.eps)
        return x, self.nfe

    def _name_parts(self):
        solver = short_name(self.solver, SDE_SOLVERS).lower()
        return (solver, self.num_steps), build_or_none(SDESampler, solver, self.num_steps)


def sample_sde(
    key: PRNGKeyArray,
    sde: AbstractSDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    solver: diffrax.AbstractSolver | str = "euler",
    num_steps: int = 1000,
    eps: float = 1e-3,
    denoise: bool = False,
    x_init: Array | None = None,
) -> tuple[Array, int]:
    """Sample by solving the reverse-time SDE from a prior draw at T down to eps.

    `SDESampler(solver, num_steps, eps, denoise)` called on
    `(key, sde, score_fn, shape, x_init=x_init)`; see `SDESampler` and `SDE_SOLVERS`. With
    `denoise=True` (default False) a last Tweedie step returns `E[x_0 | x_eps]` (one more
    NFE). Returns `(x, nfe)`, nfe an int.
    """
    sampler = SDESampler(solver, num_steps, eps, denoise)
    return sampler(key, sde, score_fn, shape, x_init=x_init)


@eqx.filter_jit
def _sample_sde(key, sde, score_fn, shape, solver, num_steps, eps, x_init):
    init_key, bm_key = jax.random.split(key)
    x = sde.prior_sample(init_key, shape) if x_init is None else jnp.asarray(x_init)
    big_t = jnp.asarray(sde.T, x.dtype)
    duration = big_t - jnp.asarray(eps, x.dtype)
    reverse = sde.reverse(score_fn)

    def drift(r, y, args):
        return -reverse.drift(y, big_t - r)

    def diffusion(r, y, args):
        return lx.DiagonalLinearOperator(jnp.broadcast_to(sde.diffusion(big_t - r), y.shape))

    brownian = diffrax.UnsafeBrownianPath(
        shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
        key=bm_key,
        levy_area=brownian_levy_area(solver),
    )
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
    sol = diffrax.diffeqsolve(
        terms,
        solver,
        0.0,
        duration,
        None,
        x,
        stepsize_controller=diffrax.StepTo(ts=jnp.linspace(0.0, duration, num_steps + 1)),
        max_steps=num_steps,
        saveat=diffrax.SaveAt(t1=True),
        adjoint=diffrax.ForwardMode(),
    )
    return sol.ys[0]
