"""sde_gen: continuous-time score-based generative modelling in JAX.

A score function is any `score_fn(x, t) -> array shaped like x`. SDEs, samplers and
likelihoods only ever see that protocol; closed-form densities in `sde_gen.analytic`
provide exact ones.

    import sde_gen as sg
    sde = sg.VPSDE()
    data = sg.GaussianMixture(means=[[-2.0, 0.0], [2.0, 0.0]], variances=0.1)
    x, nfe = sg.sample_ode(key, sde, data.score_fn(sde), (512, 2))
"""

from .analytic import (
    AbstractAnalyticDensity,
    ExactScore,
    Gaussian,
    GaussianMixture,
    MultivariateGaussian,
)
from .guidance import classifier_free_guidance, classifier_guidance
from .likelihood import (
    bits_per_dim,
    exact_divergence,
    hutchinson_divergence,
    log_likelihood,
    nats_to_bits_per_dim,
)
from .losses import (
    AbstractTimeSampler,
    DiscreteTime,
    ImportanceTime,
    UniformTime,
    dsm_loss,
    likelihood_weighting,
    nll_bound,
    sigma2_weighting,
)
from .sampling import (
    DDIM,
    AbstractCorrector,
    AbstractFastSolver,
    AbstractGaussianPredictor,
    AbstractPredictor,
    AbstractSampler,
    AncestralSampling,
    DPMSolver,
    DPMSolverMultistep,
    EulerMaruyama,
    FastSampler,
    HeunEDM,
    LangevinCorrector,
    ODESampler,
    PCSampler,
    ReverseDiffusion,
    SDESampler,
    UniPC,
    get_sampler,
    load_grid,
    ode_flow,
    optimize_grid,
    sample_colorize,
    sample_fast,
    sample_impute,
    sample_inpaint,
    sample_ode,
    sample_pc,
    sample_sde,
    save_grid,
    time_grid,
)
from .score import ModelClassifier, ModelScore, ScoreFn
from .sde import (
    VESDE,
    VPSDE,
    AbstractLinearBetaSDE,
    AbstractLinearSDE,
    AbstractSDE,
    ReverseSDE,
    SubVPSDE,
)

__version__ = "0.1.0"

__all__ = [
    "MultivariateGaussian",
    "classifier_free_guidance",
    "classifier_guidance",
    "sample_colorize",
    "sample_impute",
    "sample_inpaint",
    "AbstractTimeSampler",
    "DiscreteTime",
    "ImportanceTime",
    "UniformTime",
    "dsm_loss",
    "likelihood_weighting",
    "nll_bound",
    "sigma2_weighting",
    "AbstractAnalyticDensity",
    "AbstractCorrector",
    "AbstractFastSolver",
    "DDIM",
    "DPMSolver",
    "DPMSolverMultistep",
    "FastSampler",
    "HeunEDM",
    "UniPC",
    "AbstractLinearBetaSDE",
    "AbstractLinearSDE",
    "AbstractGaussianPredictor",
    "AbstractPredictor",
    "AbstractSampler",
    "AbstractSDE",
    "AncestralSampling",
    "EulerMaruyama",
    "ExactScore",
    "Gaussian",
    "GaussianMixture",
    "LangevinCorrector",
    "ModelClassifier",
    "ModelScore",
    "ODESampler",
    "PCSampler",
    "ReverseDiffusion",
    "ReverseSDE",
    "SDESampler",
    "ScoreFn",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "bits_per_dim",
    "exact_divergence",
    "get_sampler",
    "load_grid",
    "optimize_grid",
    "save_grid",
    "hutchinson_divergence",
    "log_likelihood",
    "nats_to_bits_per_dim",
    "ode_flow",
    "sample_ode",
    "sample_fast",
    "sample_pc",
    "sample_sde",
    "time_grid",
]
