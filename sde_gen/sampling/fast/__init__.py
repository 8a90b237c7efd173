r"""Fast solvers of the probability-flow ODE: exponential integrators and EDM's Heun.

- `exponential`: `DDIM(eta)`, `DPMSolver(order=2|3)`, `DPMSolverMultistep` (DPM-Solver++
  (2M)/(3M) and multistep DPM-Solver), `UniPC`; written once in terms of the marginal
  `a`, `s` and the log-SNR `lambda`, so they work for VP, sub-VP, VE and a user's linear SDE.
- `edm`: `HeunEDM()`, Karras et al. 2022, Algorithm 1.
- `grids`: the time grids (`time_grid`, `GRIDS`).
- `optimize`: grids fitted to a problem (`optimize_grid`, `save_grid`, `load_grid`).
- `base`: the solver interface (`init`, `step`, `final_step`, `order`, `evals_per_step`).

`FastSampler` (and `sample_fast`) owns the one `jax.lax.scan` over steps that drives every
solver. NFE: `num_steps` steps cost `evals_per_step * num_steps` score evaluations (the
multistep solvers reuse each evaluation, so one per step); `denoise` adds one for the final
Tweedie step `x <- x0(x, eps)`, which is the step to sigma = 0 that DDIM and EDM end with.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from ..._checks import check_sampling, check_steps, choose, is_concrete
from ...score import ScoreFn
from ...sde import AbstractSDE
from ..base import AbstractSampler, build_or_none, check_bool, check_eps_setting, short_name
from ..predictors import require_linear
from .base import AbstractFastSolver, State, StepInputs, noise_prediction, solve
from .edm import HeunEDM
from .exponential import DDIM, AbstractMultistepSolver, DPMSolver, DPMSolverMultistep, UniPC
from .grids import GRIDS, check_rho, make_grid, time_grid
from .optimize import load_grid, optimize_grid, save_grid

FAST_SOLVERS: dict[str, AbstractFastSolver] = {
    "ddim": DDIM(),
    "dpm_solver_2": DPMSolver(solver_order=2),
    "dpm_solver_3": DPMSolver(solver_order=3),
    "dpm_solver++_2m": DPMSolverMultistep(solver_order=2),
    "dpm_solver++_3m": DPMSolverMultistep(solver_order=3),
    "dpm_solver_2m": DPMSolverMultistep(solver_order=2, prediction="noise"),
    "dpm_solver_3m": DPMSolverMultistep(solver_order=3, prediction="noise"),
    "unipc": UniPC(),
    "heun_edm": HeunEDM(),
}


def get_fast_solver(method: str | AbstractFastSolver, **options) -> AbstractFastSolver:
    """A solver by name (see `FAST_SOLVERS`), with `options` replacing its fields (e.g.
    `get_fast_solver("ddim", eta=1.0)`), or the given `AbstractFastSolver` itself."""
    if isinstance(method, AbstractFastSolver):
        if options:
            raise ValueError("options apply to a solver given by name, not to a solver object")
        return method
    solver = choose("fast sampling method", method, FAST_SOLVERS)
    if not options:
        return solver
    fields = {f.name for f in dataclasses.fields(solver)}
    unknown = sorted(set(options) - fields)
    if unknown:
        valid = ", ".join(sorted(fields)) or "none"
        raise ValueError(f"unknown option(s) {unknown} for the {method!r} solver; valid: {valid}")
    return dataclasses.replace(solver, **options)


def _check_grid_setting(grid, num_steps):
    """A grid name, or an explicit strictly decreasing array of `num_steps + 1` times > 0."""
    if isinstance(grid, str) or grid is None:
        choose("time grid", grid, GRIDS)
        return grid.lower()
    ts = jnp.asarray(grid, dtype=jnp.result_type(float))
    if ts.ndim != 1 or ts.shape[0] != num_steps + 1:
        raise ValueError(
            f"an explicit time grid must have num_steps + 1 = {num_steps + 1} times; "
            f"got shape {ts.shape}"
        )
    if is_concrete(ts):
        values = np.asarray(ts)
        if not (np.all(np.diff(values) < 0) and values[-1] > 0):
            raise ValueError(
                f"an explicit time grid must decrease strictly within (0, T]; got {values}"
            )
    return ts


def _grid_kind(grid) -> str:
    """The grid's name, or "explicit" for an array of times."""
    return grid if isinstance(grid, str) else "explicit"


def _check_grid_for(grid, sde, from_prior: bool):
    """An explicit grid within (0, T], starting at T when the start is a prior draw."""
    if isinstance(grid, str) or not is_concrete(grid):
        return
    values = np.asarray(grid)
    if values[0] > sde.T:
        raise ValueError(
            f"an explicit time grid must decrease strictly within (0, T = {sde.T}]; got {values}"
        )
    if from_prior and values[0] != sde.T:
        raise ValueError(
            f"an explicit time grid starting at {values[0]} < T = {sde.T} needs x_init: "
            "the prior draw is a sample at T"
        )


class FastSampler(AbstractSampler):
    """Sample with a fast solver of the probability-flow ODE in `num_steps` steps.

    Args:
        solver: one of `FAST_SOLVERS` ("ddim", "dpm_solver_2", "dpm_solver_3",
            "dpm_solver++_2m", "dpm_solver++_3m", "dpm_solver_2m", "dpm_solver_3m",
            "unipc", "heun_edm"), or an `AbstractFastSolver` object such as
            `DDIM(eta=1.0)` or `UniPC(solver_order=2, variant="bh2")`.
        num_steps: steps from T to eps.
        grid: "logsnr", "uniform", "karras" (with `rho`), "quadratic", or an explicit
            decreasing array of `num_steps + 1` times (from T, or from the time of `x_init`).
        eps: the last time of a named grid.
        denoise: end with Tweedie's `x0(x, eps)` (one more evaluation); None (the default)
            takes the solver's `denoise` (True for "ddim" and "heun_edm", whose last step
            goes to sigma = 0; False for the DPM-Solvers and UniPC, as in their papers).
        rho: the exponent of the "karras" grid.

    A multistep solver's settings left at "auto" (`lower_order_final`, `d2_weight`) are
    chosen for the grid here (`AbstractFastSolver.for_grid`): `solver` holds the choice,
    and `describe()` shows it.
    """

    solver: AbstractFastSolver
    num_steps: int
    grid: str | Array
    eps: float
    denoise: bool
    rho: float

    method = "fast"

    @property
    def _registries(self):
        """The named solvers as this grid resolves them, so that names survive `for_grid`."""
        return {"solver": {k: s.for_grid(_grid_kind(self.grid)) for k, s in FAST_SOLVERS.items()}}

    def __init__(
        self,
        solver: str | AbstractFastSolver,
        num_steps: int,
        grid: str | ArrayLike = "logsnr",
        eps: float = 1e-3,
        denoise: bool | None = None,
        rho: float = 7.0,
    ):
        self.num_steps = check_steps("num_steps", num_steps)
        self.grid = _check_grid_setting(grid, self.num_steps)
        self.solver = get_fast_solver(solver).for_grid(_grid_kind(self.grid))
        self.eps = check_eps_setting(eps)
        self.denoise = self.solver.denoise if denoise is None else check_bool("denoise", denoise)
        self.rho = check_rho(rho)

    @property
    def nfe(self) -> int:
        return self.solver.nfe(self.num_steps) + int(self.denoise)

    def __call__(self, key, sde, score_fn, shape, *, x_init=None):
        sde = require_linear(sde, "sample_fast")
        shape, x_init = check_sampling(sde, score_fn, shape, self.eps, x_init)
        _check_grid_for(self.grid, sde, from_prior=x_init is None)
        return _sample_fast(self, key, sde, score_fn, shape, x_init), self.nfe

    def times(self, sde: AbstractSDE, dtype=None) -> Array:
        """The grid of `num_steps + 1` decreasing times for `sde`."""
        ts = self.grid
        if isinstance(ts, str):
            ts = make_grid(sde, self.num_steps, ts, self.eps, self.rho)
        return ts if dtype is None else ts.astype(dtype)

    def _name_parts(self):
        solver = short_name(self.solver, self._registries["solver"]).lower()
        if not isinstance(self.grid, str):
            return (solver, "explicit", self.num_steps), None
        canonical = build_or_none(FastSampler, solver, self.num_steps, self.grid)
        return (solver, self.grid, self.num_steps), canonical


@eqx.filter_jit
def _sample_fast(sampler: FastSampler, key, sde, score_fn, shape, x_init):
    init_key, solve_key = jax.random.split(key)
    x = sde.prior_sample(init_key, shape) if x_init is None else jnp.asarray(x_init)
    ts = sampler.times(sde, x.dtype)
    x = solve(sampler.solver, solve_key, sde, score_fn, x, ts)
    if sampler.denoise:
        x = sampler.solver.final_denoise(sde, score_fn, x, ts[-1])
    return x


def sample_fast(
    key: PRNGKeyArray,
    sde: AbstractSDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    method: str | AbstractFastSolver,
    *,
    num_steps: int,
    grid: str | ArrayLike = "logsnr",
    rho: float = 7.0,
    eps: float = 1e-3,
    denoise: bool | None = None,
    x_init: Array | None = None,
) -> tuple[Array, int]:
    """Sample with a fast solver of the probability-flow ODE in `num_steps` steps.

    `FastSampler(method, num_steps, grid, eps, denoise, rho)` called on
    `(key, sde, score_fn, shape, x_init=x_init)`; see `FastSampler` for the settings.

    Args:
        key: randomness for the prior draw (unless `x_init`) and DDIM's noise (eta > 0).
        sde: an `AbstractLinearSDE`.
        score_fn: `score_fn(x, t) -> array shaped like x`; t is `(B,)`. Any composition
            (a network, a closed form, a guided score) works.
        shape: `(B, *dims)`.
        method: a name in `FAST_SOLVERS` or an `AbstractFastSolver`.
        num_steps, grid, rho: the time grid (as in `FastSampler`).
        eps: the last time of the grid.
        denoise: end with Tweedie's `x0(x, eps)`; None (default) takes the method's default.
        x_init: start here instead of a prior draw (shape `shape`).

    Returns:
        `(x, nfe)`: the samples and the exact number of score evaluations per sample (an int).
    """
    sampler = FastSampler(method, num_steps, grid, eps, denoise, rho)
    return sampler(key, sde, score_fn, shape, x_init=x_init)


__all__ = [
    "AbstractFastSolver",
    "AbstractMultistepSolver",
    "DDIM",
    "DPMSolver",
    "DPMSolverMultistep",
    "FAST_SOLVERS",
    "FastSampler",
    "GRIDS",
    "HeunEDM",
    "State",
    "StepInputs",
    "UniPC",
    "get_fast_solver",
    "load_grid",
    "noise_prediction",
    "optimize_grid",
    "sample_fast",
    "save_grid",
    "solve",
    "time_grid",
]
