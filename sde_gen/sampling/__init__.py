"""Samplers: predictor-corrector, probability-flow ODE, reverse SDE and fast ODE solvers.

Every sampler is an `AbstractSampler` object whose fields are its settings, called as
`sampler(key, sde, score_fn, shape, *, x_init=None) -> (x, nfe)`; `sample_pc`,
`sample_ode`, `sample_sde` and `sample_fast` build one and call it.
"""

from .._checks import choose
from .base import AbstractSampler, tweedie
from .correctors import CORRECTORS, AbstractCorrector, LangevinCorrector, get_corrector
from .fast import (
    DDIM,
    FAST_SOLVERS,
    GRIDS,
    AbstractFastSolver,
    AbstractMultistepSolver,
    DPMSolver,
    DPMSolverMultistep,
    FastSampler,
    HeunEDM,
    UniPC,
    get_fast_solver,
    load_grid,
    optimize_grid,
    sample_fast,
    save_grid,
    time_grid,
)
from .impute import (
    COLOR_BASIS,
    DEFAULT_GUIDANCE_WEIGHT,
    DEFAULT_PARTICLES,
    IMPUTE_METHODS,
    sample_colorize,
    sample_impute,
    sample_inpaint,
)
from .ode import ODESampler, ode_flow, sample_ode
from .pc import PCSampler, sample_pc
from .predictors import (
    PREDICTORS,
    AbstractGaussianPredictor,
    AbstractPredictor,
    AncestralSampling,
    EulerMaruyama,
    ReverseDiffusion,
    get_predictor,
)
from .sde import SDESampler, sample_sde

SAMPLERS: dict[str, type[AbstractSampler]] = {
    "pc": PCSampler,
    "ode": ODESampler,
    "sde": SDESampler,
    "fast": FastSampler,
}


def get_sampler(method: str, **settings) -> AbstractSampler:
    """The sampler of `method` ("pc", "ode", "sde" or "fast") built with `settings`, e.g.
    `get_sampler("fast", solver="unipc", num_steps=10)`; bad settings raise `ValueError`."""
    cls = choose("sampling method", method, SAMPLERS)
    try:
        return cls(**settings)
    except TypeError as error:
        raise ValueError(f"{method} sampler: {error}") from None


__all__ = [
    "AbstractSampler",
    "COLOR_BASIS",
    "DEFAULT_GUIDANCE_WEIGHT",
    "DEFAULT_PARTICLES",
    "IMPUTE_METHODS",
    "FastSampler",
    "ODESampler",
    "PCSampler",
    "SAMPLERS",
    "SDESampler",
    "get_sampler",
    "sample_colorize",
    "sample_impute",
    "sample_inpaint",
    "AbstractFastSolver",
    "AbstractMultistepSolver",
    "DDIM",
    "DPMSolver",
    "DPMSolverMultistep",
    "FAST_SOLVERS",
    "GRIDS",
    "HeunEDM",
    "UniPC",
    "get_fast_solver",
    "load_grid",
    "optimize_grid",
    "sample_fast",
    "save_grid",
    "time_grid",
    "tweedie",
    "AbstractCorrector",
    "AbstractGaussianPredictor",
    "AbstractPredictor",
    "AncestralSampling",
    "CORRECTORS",
    "EulerMaruyama",
    "LangevinCorrector",
    "PREDICTORS",
    "ReverseDiffusion",
    "get_corrector",
    "get_predictor",
    "ode_flow",
    "sample_ode",
    "sample_pc",
    "sample_sde",
]
