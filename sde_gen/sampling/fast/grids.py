r"""Time grids of the fast solvers: `num_steps + 1` decreasing times from T down to eps.

Uniform in t, uniform in the log-SNR `lambda` ("logsnr", DPM-Solver's choice), EDM's
`sigma^(1/rho)`-uniform ("karras", rho = 7, `sigma = exp(-lambda)`; Karras et al. 2022,
eq. 5), or uniform in sqrt(t) ("quadratic", DDIM's choice for CIFAR-10).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array

from ..._checks import check_eps, check_steps, choose
from ...sde import AbstractLinearSDE
from ..predictors import require_linear


def _grid_uniform(sde, num_steps, eps, rho):
    return jnp.linspace(sde.T, eps, num_steps + 1)


def _grid_logsnr(sde, num_steps, eps, rho):
    lam = jnp.linspace(sde.log_snr(sde.T), sde.log_snr(eps), num_steps + 1)
    return sde.log_snr_inverse(lam)


def _grid_karras(sde, num_steps, eps, rho):
    inv_max, inv_min = (jnp.exp(-sde.log_snr(t) / rho) for t in (sde.T, eps))
    sigma = jnp.linspace(inv_max, inv_min, num_steps + 1) ** rho
    return sde.log_snr_inverse(-jnp.log(sigma))


def _grid_quadratic(sde, num_steps, eps, rho):
    return jnp.linspace(math.sqrt(sde.T), math.sqrt(eps), num_steps + 1) ** 2


GRIDS = {
    "uniform": _grid_uniform,
    "logsnr": _grid_logsnr,
    "karras": _grid_karras,
    "quadratic": _grid_quadratic,
}


def time_grid(
    sde: AbstractLinearSDE,
    num_steps: int,
    grid: str = "logsnr",
    eps: float = 1e-3,
    rho: float = 7.0,
) -> Array:
    """The `num_steps + 1` decreasing times `t_0 = T > ... > t_M = eps` of a fast solver.

    `grid`: "uniform" (in t), "logsnr" (uniform in lambda), "karras" (uniform in
    `sigma^(1/rho)`, `sigma = exp(-lambda)`; EDM's rho = 7) or "quadratic" (uniform in sqrt(t)).
    The end points are exact: `t_0 = T` and `t_M = eps`.
    """
    require_linear(sde, "time_grid")
    choose("time grid", grid, GRIDS)
    num_steps = check_steps("num_steps", num_steps)
    check_eps(eps, sde.T)
    check_rho(rho)
    return make_grid(sde, num_steps, grid, eps, rho)


def check_rho(rho) -> float:
    if isinstance(rho, bool) or not (isinstance(rho, (int, float)) and rho > 0):
        raise ValueError(f"rho must be a positive number; got {rho!r}")
    return rho


def make_grid(sde, num_steps, grid, eps, rho):
    """`time_grid` without the checks (traceable)."""
    ts = GRIDS[grid.lower()](sde, num_steps, eps, rho)
    # Pin the end points: the inverse of lambda is exact only to rounding.
    return ts.at[0].set(sde.T).at[-1].set(eps)
