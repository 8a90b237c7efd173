"""The noise-conditional classifier kind: `p_t(y | x_t)` trained by cross-entropy on data
noised by the SDE (Dhariwal & Nichol 2021), evaluated by its accuracy against the noise
level, and loaded from its workdir to guide a score model's sampling."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from .. import models, plotting
from ..score import ModelClassifier
from .base import AbstractExperiment, refuse
from .checkpoints import CheckpointStore
from .config import ConfigError, GuidanceSettings, load, load_file
from .reporting import write_report
from .state import classifier_loss_fn

# Times (fractions of T) at which a noise-conditional classifier is evaluated.
CLASSIFIER_TIMES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class ClassifierExperiment(AbstractExperiment):
    """A noise-conditional classifier (`models.CLASSIFIERS`)."""

    tag = "classifier"

    def classifier_fn(self, variables) -> ModelClassifier:
        """The classifier with `variables` as `log p_t(y | x)` (bind labels with
        `dataclasses.replace(classifier, labels=y)`)."""
        m = self.settings.model
        return ModelClassifier(
            model=self.network, variables=variables, sde=self.sde, time_input=m.time_input,
            time_scale=m.time_scale,
        )  # fmt: skip

    def loss_fn(self):
        m = self.settings.model
        return classifier_loss_fn(
            self.sde, self.network, time_sampler=self.settings.training.loss.time_sampler,
            time_input=m.time_input, time_scale=m.time_scale,
            compute_dtype=self.settings.training.compute_dtype,
        )  # fmt: skip

    def snapshot(self, workdir, step, ema_params, key, writer) -> None:
        """A classifier draws no samples."""

    def check_mode(self, mode: str) -> None:
        if mode == "sample":
            raise refuse(
                mode,
                f"config.model.name={self.settings.model.name!r} is a classifier: it has "
                "nothing to sample (--mode=eval reports its accuracy; guide a score model with "
                "it through config.sampling.classifier_workdir)",
            )

    def sample(self, workdir, step, ema_params) -> str:
        self.check_mode("sample")
        return ""

    def evaluate(self, workdir: str, step: int, ema_params) -> dict:
        """Accuracy and cross-entropy on the eval split (`eval.reference_split`), noised to
        `x_t` at each of `CLASSIFIER_TIMES` (t = 0 read as `training.eps`), their means over
        t, and a plot `eval/classifier_<step>.png` of accuracy against t."""
        classifier = self.classifier_fn(ema_params)
        x_all, y_all = self.load_split(self.settings.eval.reference_split)
        eps = self.settings.training.eps
        logits_fn = jax.jit(lambda c, x, t: c.logits(x, t))
        key = jax.random.key(self.settings.seed + 3)
        accuracy, cross_entropy = [], []
        for t_frac in CLASSIFIER_TIMES:
            t = max(t_frac * self.sde.T, eps)
            correct = losses = 0.0
            for i in range(0, len(x_all), 256):
                x, y = jnp.asarray(x_all[i : i + 256]), jnp.asarray(y_all[i : i + 256])
                tb = jnp.full((len(x),), t)
                xt = self.sde.perturb(x, tb, jax.random.normal(jax.random.fold_in(key, i), x.shape))
                logits = logits_fn(classifier, xt, tb)
                correct += float(jnp.sum(jnp.argmax(logits, -1) == y))
                losses += float(jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)))
            accuracy.append(correct / len(x_all))
            cross_entropy.append(losses / len(x_all))
        os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
        plotting.save_curve(
            os.path.join(workdir, "eval", f"classifier_{step}.png"),
            CLASSIFIER_TIMES, {"test accuracy": accuracy}, xlabel="t / T", log_y=False,
        )  # fmt: skip
        report = {
            "step": step,
            "times": list(CLASSIFIER_TIMES),
            "accuracy": accuracy,
            "cross_entropy": cross_entropy,
            "mean_accuracy": float(np.mean(accuracy)),
            "mean_cross_entropy": float(np.mean(cross_entropy)),
            "examples": int(len(x_all)),
        }
        write_report(os.path.join(workdir, "eval", f"report_{step}_classifier.json"), report)
        return report


@dataclasses.dataclass(frozen=True)
class LoadedClassifier:
    """A guidance classifier and where it came from (its workdir and checkpoint step)."""

    classifier: ModelClassifier
    workdir: str
    step: int


def load_guidance_classifier(guidance: GuidanceSettings, sde, dataset: str) -> LoadedClassifier:
    """The noise-conditional classifier of `guidance.classifier_workdir`: its saved config,
    the EMA parameters of its newest verified checkpoint, without labels. Refuses a
    classifier trained on another SDE or data set, whose `p_t(y | x)` belongs to other
    marginals."""
    workdir = guidance.classifier_workdir
    settings = load(load_file(os.path.join(workdir, "config.json")))
    if settings.model.name not in models.CLASSIFIERS:
        raise ConfigError(f"{workdir} holds a {settings.model.name!r} run, not a classifier")
    if settings.sde != sde or settings.data.dataset != dataset:
        raise ConfigError(
            f"the classifier in {workdir} was trained for {settings.sde} on "
            f"{settings.data.dataset!r}; sampling uses {sde} on {dataset!r}"
        )
    experiment = ClassifierExperiment(settings)
    store = CheckpointStore(workdir, read_only=True)
    restored = store.restore_latest(experiment.init_state(jax.random.key(0)))
    if restored is None:
        raise ConfigError(f"config.sampling.classifier_workdir={workdir!r} holds no checkpoint")
    step, state, _ = restored
    logging.info("classifier guidance: %s step %d", workdir, step)
    return LoadedClassifier(experiment.classifier_fn(state.ema_params), workdir, step)
