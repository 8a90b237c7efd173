"""The score-function protocol: the one interface every sampler and likelihood sees.

A score function maps a batch `x` of shape `(B, *dims)` and times `t` of shape `(B,)` to
an estimate of `grad_x log p_t(x)` shaped like `x`. Samplers always pass `t` as a `(B,)`
array. Exact ones come from `sde_gen.analytic`; networks become score functions through a
wrapper. For compiled samplers to be reused across parameter values, carry parameters as
array leaves: an `equinox.Module` or a `jax.tree_util.Partial` over them. `ModelScore`
is that wrapper for Flax networks.
"""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._checks import choose
from .score_fn import ScoreFn
from .sde import AbstractLinearSDE, batch_broadcast, batch_times

__all__ = [
    "COMPUTE_DTYPES",
    "AbstractModelFn",
    "ModelClassifier",
    "ModelScore",
    "ScoreFn",
    "network_time",
]


def _noise_to_score(out, x, a, std):
    return -out / std


def _x0_to_score(out, x, a, std):
    return (a * out - x) / std**2


def _score_to_score(out, x, a, std):
    return out


def _mean_channels(out: Array, x: Array) -> Array:
    """The part of a network's output that parameterizes the mean: all of it when shaped
    like `x`; its first C channels when the network gives 2C (a learned-variance network,
    Nichol & Dhariwal 2021, as guided-diffusion's `learn_sigma`: the other C interpolate the
    reverse step's variance, which the score does not use)."""
    if out.shape == x.shape:
        return out
    c = x.shape[-1]
    if out.ndim == x.ndim and out.shape[:-1] == x.shape[:-1] and out.shape[-1] == 2 * c:
        return out[..., :c]
    raise ValueError(
        f"the network's output has shape {out.shape}; a score of x {x.shape} needs that "
        f"shape, or {2 * c} channels (the mean's {c} first, learned variances after)"
    )


# What the network predicts -> the score, given x_t = a x_0 + std z.
OUTPUTS = {"noise": _noise_to_score, "x0": _x0_to_score, "score": _score_to_score}
# The time label a network sees, from (sde, t, std(t), time_scale).
TIME_LABELS = {
    "t": lambda sde, t, std, time_scale: time_scale * t,
    "std": lambda sde, t, std, time_scale: std,
    "discrete": lambda sde, t, std, time_scale: sde.timestep(t),
}
TIME_INPUTS = tuple(TIME_LABELS)
# The dtype a network's forward (and so backward) pass runs in; its parameters stay float32.
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_time_input(time_input: str, sde: AbstractLinearSDE) -> str:
    """`time_input` checked against the SDE: "discrete" labels need a table of steps."""
    choose("time input", time_input, TIME_LABELS)
    if time_input.lower() == "discrete" and not callable(getattr(sde, "timestep", None)):
        raise ValueError(
            f"time input 'discrete' (the step index of a table of N steps) needs an SDE "
            f"with one, such as DiscreteVPSDE; got {type(sde).__name__}"
        )
    return time_input.lower()


def network_time(sde: AbstractLinearSDE, time_input: str, time_scale: float, x, t):
    """`(t, a(t), std(t), label)`: the times as `(B,)`, the marginal's coefficients, and
    the time label a network sees: `time_scale * t` ("t"), `std(t)` ("std"), or the step
    index `sde.timestep(t) = N t / T - 1` of a discrete table ("discrete", `t_n -> n`)."""
    t = batch_times(t, x)
    a, std = sde.marginal(t)
    return t, a, std, TIME_LABELS[time_input.lower()](sde, t, std, time_scale)


def cast_floating(tree: Any, dtype) -> Any:
    """`tree` with its floating-point leaves cast to `dtype` (integers, keys and None kept):
    mixed precision as in jmp, whose casts pass gradients back in the leaves' own dtype."""

    def cast(leaf):
        floating = hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)
        return jnp.asarray(leaf, dtype) if floating else leaf

    return jax.tree_util.tree_map(cast, tree)


def _class_kwargs(labels, dropout_key) -> dict:
    kw = {"rngs": None if dropout_key is None else {"dropout": dropout_key}}
    return kw if labels is None else {**kw, "y": labels}


class AbstractModelFn(eqx.Module):
    """A noise-conditional Flax network of `(x_t, t)`: the fields and the time labels that
    `ModelScore` and `ModelClassifier` share.

    The network is called as `model.apply(variables, x, label, train=train)` with
    `label = time_scale * t` (`time_input="t"`; score_sde's VP and sub-VP use t * 999),
    `label = std(t)` (`time_input="std"`; score_sde's VE, NCSN++ with scale_by_sigma), or
    the training step `label = N t / T - 1` of a `DiscreteVPSDE` of N steps
    (`time_input="discrete"`: DDPM and ADM networks see n at `t_n = T (n + 1) / N`;
    `time_scale` is not used).
    `dropout_key` feeds the network's dropout when training; `labels` are one class per
    example, read by each subclass.

    `compute_dtype` (one of `COMPUTE_DTYPES`) is the dtype of the network's pass: with
    "bfloat16" its floating variables and `x` are cast to bfloat16 where it is applied and
    its output is cast back to `x`'s dtype, so parameters, their gradients and all the SDE
    maths around the network stay float32. The time label stays float32 (the networks
    cast their time embedding, not the label, to the compute dtype: bfloat16 spaces
    labels near 999 by 4, which would round t to steps of 0.004). "float32": no casts.
    """

    model: nn.Module = eqx.field(static=True)
    variables: Any
    sde: AbstractLinearSDE
    time_input: str = eqx.field(static=True, default="t")
    time_scale: float = eqx.field(static=True, default=999.0)
    train: bool = eqx.field(static=True, default=False)
    dropout_key: Any = None
    labels: Any = None
    compute_dtype: str = eqx.field(static=True, default="float32")

    def __check_init__(self):
        check_time_input(self.time_input, self.sde)
        choose("compute dtype", self.compute_dtype, COMPUTE_DTYPES)

    def apply_network(self, x: Array, t: ArrayLike, y: Any = None) -> tuple[Array, Array, Array]:
        """`(out, a(t), std(t))`: the network's output at `(x, t)` (class labels `y=` when
        given), in `x`'s dtype, and the marginal's coefficients, `(B,)`."""
        _, a, std, label = network_time(self.sde, self.time_input, self.time_scale, x, t)
        kw = _class_kwargs(y, self.dropout_key)
        dtype = COMPUTE_DTYPES[self.compute_dtype.lower()]
        if dtype == jnp.float32:
            return self.model.apply(self.variables, x, label, train=self.train, **kw), a, std
        variables, x_in = cast_floating((self.variables, x), dtype)
        out = self.model.apply(variables, x_in, label, train=self.train, **kw)
        return out.astype(jnp.result_type(x)), a, std

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "batch *dims"], t: ArrayLike) -> Array:
        """The function of `(x, t)` the network stands for."""


class ModelScore(AbstractModelFn):
    """A Flax network as a score function: `score_fn(x, t)`.

    Time labels as in `AbstractModelFn`. The output is read as the noise `z`
    (score = -out / std, DDPM's parameterization), the clean data `x_0`
    (score = (a out - x) / std^2), or the score itself. A network with twice x's channels
    (learned variances: guided-diffusion's `learn_sigma`) is read by its first C.
    Variables are array leaves, so samplers compiled for one set of parameters are reused
    for the next. A class-conditional network gets `labels` (one int per example) as
    `y=`: the score of `p_t(x | y)`; a network with a null class gives the unconditional
    score for the label `num_classes`.
    """

    output: str = eqx.field(static=True, default="noise")

    def __init__(
        self,
        model: nn.Module,
        variables: Any,
        sde: AbstractLinearSDE,
        output: str = "noise",
        time_input: str = "t",
        time_scale: float = 999.0,
        train: bool = False,
        dropout_key: Any = None,
        labels: Any = None,
        compute_dtype: str = "float32",
    ):
        # written out to keep `output` the fourth positional argument, as before the
        # shared fields moved to the base
        self.model, self.variables, self.sde, self.output = model, variables, sde, output
        self.time_input, self.time_scale, self.train = time_input, time_scale, train
        self.dropout_key, self.labels, self.compute_dtype = dropout_key, labels, compute_dtype

    def __check_init__(self):
        choose("model output", self.output, OUTPUTS)

    def __call__(self, x: Float[Array, "batch *dims"], t: ArrayLike) -> Array:
        out, a, std = self.apply_network(x, t, self.labels)
        out = _mean_channels(out, x)
        return OUTPUTS[self.output](out, x, batch_broadcast(a, x), batch_broadcast(std, x))


class ModelClassifier(AbstractModelFn):
    """A noise-conditional classifier network as `log p_t(y | x)`.

    `logits(x, t)` are the network's class logits `(B, classes)` for `x` at time `t` (the
    network sees the same time label as a `ModelScore` with these settings). Called with
    `labels` set, `classifier(x, t)` is `log p_t(labels | x)`, shape `(B,)`: the
    `log_prob_y_fn` of `sde_gen.classifier_guidance`.
    """

    def logits(self, x: Float[Array, "batch *dims"], t: ArrayLike) -> Float[Array, "batch k"]:
        return self.apply_network(x, t)[0]

    def __call__(self, x: Float[Array, "batch *dims"], t: ArrayLike) -> Float[Array, " batch"]:
        if self.labels is None:
            raise ValueError("ModelClassifier(..., labels=y) gives log p_t(y | x): set labels")
        log_p = jax.nn.log_softmax(self.logits(x, t), axis=-1)
        return jnp.take_along_axis(log_p, jnp.asarray(self.labels)[:, None], axis=-1)[:, 0]
