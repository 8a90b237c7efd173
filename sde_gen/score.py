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


class ModelScore(eqx.Module):
    """A Flax network as a score function: `score_fn(x, t)`.

    The network is called as `model.apply(variables, x, label, train=train)` with
    `label = time_scale * t` (`time_input="t"`; score_sde's VP and sub-VP use t * 999) or
    `label = std(t)` (`time_input="std"`; score_sde's VE, NCSN++ with scale_by_sigma).
    Its output is read as the noise `z` (score = -out / std, DDPM's parameterization), the
    clean data `x_0` (score = (a out - x) / std^2), or the score itself. Variables are
    array leaves, so samplers compiled for one set of parameters are reused for the next.
    """

    model: nn.Module = eqx.field(static=True)
    variables: Any
    sde: AbstractLinearSDE
    output: str = eqx.field(static=True, default="noise")
    time_input: str = eqx.field(static=True, default="t")
    time_scale: float = eqx.field(static=True, default=999.0)
    train: bool = eqx.field(static=True, default=False)
    dropout_key: Any = None

    def __check_init__(self):
        choose("model output", self.output, OUTPUTS)
        choose("time input", self.time_input, dict.fromkeys(TIME_INPUTS))

    def __call__(self, x: Float[Array, "batch *dims"], t: ArrayLike) -> Array:
        t = batch_times(t, x)
        a, std = self.sde.marginal(t)
        label = t * self.time_scale if self.time_input == "t" else std
        rngs = None if self.dropout_key is None else {"dropout": self.dropout_key}
        out = self.model.apply(self.variables, x, label, train=self.train, rngs=rngs)
        return OUTPUTS[self.output](out, x, batch_broadcast(a, x), batch_broadcast(std, x))
