"""Samplers: predictor-corrector, probability-flow ODE, reverse SDE and fast ODE solvers."""

from .correctors import CORRECTORS, AbstractCorrector, LangevinCorrector, get_corrector
from .fast import (
    DDIM,
    FAST_SOLVERS,
    GRIDS,
    AbstractFastSolver,
    AbstractMultistepSolver,
    DPMSolver,
    DPMSolverMultistep,
    HeunEDM,
    UniPC,
    get_fast_solver,
    sample_fast,
    time_grid,
)
from .impute import COLOR_BASIS, sample_colorize, sample_impute, sample_inpaint
from .ode import ode_flow, sample_ode
from .pc import sample_pc
from .predictors import (
    PREDICTORS,
    AbstractPredictor,
    AncestralSampling,
    EulerMaruyama,
    ReverseDiffusion,
    get_predictor,
)
from .sde import sample_sde

__all__ = [
    "COLOR_BASIS",
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
    "sample_fast",
    "time_grid",
    "AbstractCorrector",
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
