"""The registry of experiment kinds: which class runs a config, chosen once by its
network's name. A new kind is one subclass of `AbstractExperiment` and one line here."""

from __future__ import annotations

from .. import models
from ..dpm2015.experiment import ChainExperiment
from .base import AbstractExperiment
from .classifier import ClassifierExperiment
from .config import Settings
from .score_model import ScoreExperiment

KINDS: dict[str, type[AbstractExperiment]] = {
    **dict.fromkeys(models.MODELS, ScoreExperiment),
    **dict.fromkeys(models.CLASSIFIERS, ClassifierExperiment),
    **dict.fromkeys(models.REVERSE_CHAINS, ChainExperiment),
}


def make_experiment(settings: Settings) -> AbstractExperiment:
    """The experiment object of `settings` (its kind follows `model.name`)."""
    return KINDS[settings.model.name](settings)
