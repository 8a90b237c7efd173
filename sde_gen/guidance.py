r"""Guidance as score-function composition (Dhariwal & Nichol 2021; Ho & Salimans 2021).

A guided score is again a `score_fn(x, t)`, so it works with every sampler (PC, PF-ODE,
reverse SDE, the fast solvers) and with likelihood computations.

- `classifier_guidance(score_fn, log_prob_y_fn, scale)`:
  `s(x, t) + scale * grad_x log p_t(y | x)`, where `log_prob_y_fn(x, t) -> (B,)` is the
  log-probability of the wanted label of each example under a noise-conditional classifier.
  With `scale = 1` and the exact `p_t(y | x)` this is the score of `p_t(x | y)` (Bayes);
  larger scales sharpen towards `p(x) p(y | x)^scale`. ADM's DDIM form,
  `eps_hat = eps - sqrt(1 - alpha_bar) scale grad log p(y | x)`, is the same score: the
  noise prediction of this composition is `-std(t)` times it.
- `classifier_free_guidance(cond_score_fn, uncond_score_fn, weight)`:
  `(1 + weight) s(x, t | y) - weight s(x, t)`; weight 0 is the conditional score.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._checks import is_concrete
from .score import ScoreFn

LogProbFn = Callable[[Array, Array], Array]


def _check_scale(name: str, value) -> None:
    if is_concrete(value) and not (np.isfinite(np.asarray(value)) and np.asarray(value) >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")


class ClassifierGuidedScore(eqx.Module):
    """`score_fn(x, t) + scale * grad_x log_prob_y_fn(x, t)`; see `classifier_guidance`."""

    score_fn: ScoreFn
    log_prob_y_fn: LogProbFn
    scale: float | Array = 1.0

    def __call__(self, x: Float[Array, "batch *dims"], t: ArrayLike) -> Array:
        def total(x):
            logp = self.log_prob_y_fn(x, t)
            if logp.shape != (x.shape[0],):
                raise ValueError(
                    f"log_prob_y_fn(x, t) must return one log-probability per example, shape "
                    f"({x.shape[0]},); got {logp.shape}"
                )
            return jnp.sum(logp)  # examples are independent: the gradient is per example

        return self.score_fn(x, t) + self.scale * jax.grad(total)(x)


class ClassifierFreeGuidedScore(eqx.Module):
    """`(1 + weight) cond_score_fn - weight uncond_score_fn`; see `classifier_free_guidance`."""

    cond_score_fn: ScoreFn
    uncond_score_fn: ScoreFn
    weight: float | Array = 0.0

    def __call__(self, x: Float[Array, "batch *dims"], t: ArrayLike) -> Array:
        cond = self.cond_score_fn(x, t)
        return cond + self.weight * (cond - self.uncond_score_fn(x, t))


def classifier_guidance(
    score_fn: ScoreFn, log_prob_y_fn: LogProbFn, scale: float = 1.0
) -> ClassifierGuidedScore:
    """The classifier-guided score `s(x, t) + scale grad_x log p_t(y | x)`.

    Args:
        score_fn: the (unconditional) score, `score_fn(x, t)`.
        log_prob_y_fn: `log_prob_y_fn(x, t) -> (B,)`, `log p_t(y_i | x_i)` for the wanted
            label of each example (bind the labels in, e.g. with `functools.partial`).
        scale: the guidance scale s >= 0 (1: the conditional score under an exact
            classifier; larger: sharper, less diverse samples).
    """
    if not callable(score_fn) or not callable(log_prob_y_fn):
        raise ValueError("classifier_guidance needs callables score_fn(x, t), log_prob_y_fn(x, t)")
    _check_scale("scale", scale)
    return ClassifierGuidedScore(score_fn, log_prob_y_fn, scale)


def classifier_free_guidance(
    cond_score_fn: ScoreFn, uncond_score_fn: ScoreFn, weight: float = 0.0
) -> ClassifierFreeGuidedScore:
    """Classifier-free guidance: `(1 + weight) s(x, t | y) - weight s(x, t)` (Ho & Salimans).

    `weight = 0` is the conditional score; the noise-prediction form
    `(1 + w) eps(x, y) - w eps(x)` is the same combination times `-std(t)`.
    """
    if not callable(cond_score_fn) or not callable(uncond_score_fn):
        raise ValueError("classifier_free_guidance needs two score functions score_fn(x, t)")
    _check_scale("weight", weight)
    return ClassifierFreeGuidedScore(cond_score_fn, uncond_score_fn, weight)
