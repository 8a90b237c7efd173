"""Samplers: predictor-corrector, probability-flow ODE and reverse SDE."""

from .correctors import CORRECTORS, AbstractCorrector, LangevinCorrector, get_corrector
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
