"""The score-function protocol: the one interface every sampler and likelihood sees.

A score function maps a batch `x` of shape `(B, *dims)` and times `t` of shape `(B,)` to
an estimate of `grad_x log p_t(x)` shaped like `x`. Samplers always pass `t` as a `(B,)`
array. Exact ones come from `sde_gen.analytic`; networks become score functions through a
wrapper. For compiled samplers to be reused across parameter values, carry parameters as
array leaves: an `equinox.Module` or a `jax.tree_util.Partial` over them. `ModelScore`
is that wrapper for Flax networks.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._checks import choose
from .sde import AbstractLinearSDE, batch_broadcast, batch_times


@runtime_checkable
class ScoreFn(Protocol):
    """`score_fn(x, t) -> grad_x log p_t(x)`, shaped like x."""

    def __call__(
        self, x: Float[Array, "batch *dims"], t: Float[Array, " batch"]
    ) -> Float[Array, "batch *dims"]: ...


def _noise_to_score(out, x, a, std):
    return -out / std


def _x0_to_score(out, x, a, std):
    return (a * out - x) / std**2


def _score_to_score(out, x, a, std):
    return out


# What the network predicts -> the score, given x_t = a x_0 + std z.
OUTPUTS = {"noise": _noise_to_score, "x0": _x0_to_score, "score": _score_to_score}
TIME_INPUTS = ("t", "std")


def network_time(sde: AbstractLinearSDE, time_input: str, time_scale: float, x, t):
    """`(t, a(t), std(t), label)`: the times as `(B,)`, the marginal's coefficients, and
    the time label a network sees (`time_scale * t`, or `std(t)`)."""
    t = batch_times(t, x)
    a, std = sde.marginal(t)
    return t, a, std, (t * time_scale if time_input == "t" else std)


def _class_kwargs(labels, dropout_key) -> dict:
    kw = {"rngs": None if dropout_key is None else {"dropout": dropout_key}}
    return kw if labels is None else {**kw, "y": labels}


class ModelScore(eqx.Module):
    """A Flax network as a score function: `score_fn(x, t)`.

    The network is called as `model.apply(variables, x, label, train=train)` with
    `label = time_scale * t` (`time_input="t"`; score_sde's VP and sub-VP use t * 999) or
    `label = std(t)` (`time_input="std"`; score_sde's VE, NCSN++ with scale_by_sigma).
    Its output is read as the noise `z` (score = -out / std, DDPM's parameterization), the
    clean data `x_0` (score = (a out - x) / std^2), or the score itself. Variables are
    array leaves, so samplers compiled for one set of parameters are reused for the next.
    A class-conditional network gets `labels` (one int per example) as `y=`: the score of
    `p_t(x | y)`; a network with a null class gives the unconditional score for the label
    `num_classes`.
    """

    model: nn.Module = eqx.field(static=True)
    variables: Any
    sde: AbstractLinearSDE
    output: str = eqx.field(static=True, default="noise")
    time_input: str = eqx.field(static=True, default="t")
    time_scale: float = eqx.field(static=True, default=999.0)
    train: bool = eqx.field(static=True, default=False)
    dropout_key: Any = None
    labels: Any = None

    def __check_init__(self):
        choose("model output", self.output, OUTPUTS)
        choose("time input", self.time_input, dict.fromkeys(TIME_INPUTS))

    def __call__(self, x: Float[Array, "batch *dims"], t: ArrayLike) -> Array:
        _, a, std, label = network_time(self.sde, self.time_input, self.time_scale, x, t)
        kw = _class_kwargs(self.labels, self.dropout_key)
        out = self.model.apply(self.variables, x, label, train=self.train, **kw)
        return OUTPUTS[self.output](out, x, batch_broadcast(a, x), batch_broadcast(std, x))


class ModelClassifier(eqx.Module):
    """A noise-conditional classifier network as `log p_t(y | x)`.

    `logits(x, t)` are the network's class logits `(B, classes)` for `x` at time `t` (the
    network sees the same time label as a `ModelScore` with these settings). Called with
    `labels` set, `classifier(x, t)` is `log p_t(labels | x)`, shape `(B,)`: the
    `log_prob_y_fn` of `sde_gen.classifier_guidance`.
    """

    model: nn.Module = eqx.field(static=True)
    variables: Any
    sde: AbstractLinearSDE
    time_input: str = eqx.field(static=True, default="t")
    time_scale: float = eqx.field(static=True, default=999.0)
    train: bool = eqx.field(static=True, default=False)
    dropout_key: Any = None
    labels: Any = None

    def __check_init__(self):
        choose("time input", self.time_input, dict.fromkeys(TIME_INPUTS))

    def logits(self, x: Float[Array, "batch *dims"], t: ArrayLike) -> Float[Array, "batch k"]:
        _, _, _, label = network_time(self.sde, self.time_input, self.time_scale, x, t)
        kw = _class_kwargs(None, self.dropout_key)
        return self.model.apply(self.variables, x, label, train=self.train, **kw)

    def __call__(self, x: Float[Array, "batch *dims"], t: ArrayLike) -> Float[Array, " batch"]:
        if self.labels is None:
            raise ValueError("ModelClassifier(..., labels=y) gives log p_t(y | x): set labels")
        log_p = jax.nn.log_softmax(self.logits(x, t), axis=-1)
        return jnp.take_along_axis(log_p, jnp.asarray(self.labels)[:, None], axis=-1)[:, 0]
