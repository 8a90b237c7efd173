"""The train state, the optimizer and the data-parallel step around any per-device loss.

One pure function, `train_step(state, batch, key)`, `jax.pmap`-ed over local devices with
`axis_name="batch"`: the experiment's per-example loss, gradients and metrics averaged with
`lax.pmean`, an optax update, and an EMA of the parameters.

Randomness is keyed by `(step, global example index)`: example i of the global batch
draws from `fold_in(split(fold_in(key, step))[0], i)`. Each example's time and noise
therefore do not depend on how the batch is split over devices, so a step on 8 devices
equals the same global batch on one, and a resumed run repeats the uninterrupted one.
(Dropout, where a model has it, draws per device:
`fold_in(split(fold_in(key, step))[1], device index)`.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._checks import check_positive, check_steps
from ..dequantization import dequantize
from ..likelihood import bits_per_dim, nats_to_bits_per_dim
from ..losses import (
    AbstractTimeSampler,
    Weighting,
    draw_times_and_noise,
    dsm_losses,
    nll_bound_losses,
)
from ..models import num_classes
from ..score import ModelClassifier, ModelScore
from ..sde import AbstractLinearSDE

AXIS = "batch"
DEQUANTIZER = "dequantizer"  # the variables collection of a learned dequantizer's parameters


class TrainState(flax.struct.PyTreeNode):
    """Everything a training run needs to continue exactly: step, parameters, EMA, optimizer."""

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any


def make_optimizer(
    lr: float = 2e-4,
    warmup: int = 5000,
    grad_clip: float | None = 1.0,
    beta1: float = 0.9,
    eps: float = 1e-8,
    weight_decay: float | None = None,
) -> optax.GradientTransformation:
    """score_sde's optimizer: gradient clipping by global norm, then Adam with a linear
    learning-rate warm-up over `warmup` steps (none if 0); AdamW if `weight_decay` is given."""
    check_positive("make_optimizer", lr=lr, eps=eps)
    if warmup:
        check_steps("warmup", warmup)
        schedule = optax.linear_schedule(0.0, lr, warmup)
    else:
        schedule = lr
    if weight_decay is None:
        adam = optax.adam(schedule, b1=beta1, eps=eps)
    else:
        adam = optax.adamw(schedule, b1=beta1, eps=eps, weight_decay=weight_decay)
    if grad_clip is None:
        return adam
    check_positive("make_optimizer", grad_clip=grad_clip)
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam)


def init_state(
    key: jax.Array,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    x_example,
    dequantizer: nn.Module | None = None,
) -> TrainState:
    """A fresh state; the EMA starts at the initial parameters. A `dequantizer`'s
    parameters are trained alongside, as the collection `DEQUANTIZER` of the variables
    (which the network's `apply` ignores)."""
    kw = {"y": jnp.zeros((x_example.shape[0],), jnp.int32)} if num_classes(model) else {}
    model_key, dequantizer_key = jax.random.split(key)
    params = model.init(
        model_key if dequantizer else key, x_example, jnp.zeros((x_example.shape[0],)), **kw
    )
    if dequantizer is not None:
        dq = dequantizer.init(dequantizer_key, jnp.zeros_like(x_example), x_example)
        params = {**params, DEQUANTIZER: dq["params"]}
    return TrainState(jnp.zeros((), jnp.int32), params, params, optimizer.init(params))


# loss_fn(params, x, labels, example_keys, dropout_key) -> (loss, metrics)
LossFn = Callable[..., tuple[jax.Array, dict]]


def make_step(loss_fn: LossFn, optimizer, ema_decay: float, ema_warmup: bool = False):
    """`train_step(state, batch, key) -> (state, metrics)` for use under
    `pmap(axis_name=AXIS)`, around `loss_fn(params, x, labels, example_keys, dropout_key)`:
    per-example keys, gradients and metrics averaged over devices, the optax update and the
    EMA (with `ema_warmup`, decay `min(ema_decay, (1 + n) / (10 + n))` at step n).

    `batch` is this device's slice of the global batch: the data `(per_device, *dims)`, or a
    dict `{"x": data, "label": class labels}`; `key` is the run's base key. Metrics (`loss`,
    `grad_norm` and the loss function's own) are averaged over all devices.
    """
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1); got {ema_decay}")

    def train_step(state: TrainState, batch, key: jax.Array):
        x, labels = (batch["x"], batch.get("label")) if isinstance(batch, dict) else (batch, None)
        example_base, dropout_base = jax.random.split(jax.random.fold_in(key, state.step))
        device = jax.lax.axis_index(AXIS)
        per_device = x.shape[0]
        global_index = device * per_device + jnp.arange(per_device)
        example_keys = jax.vmap(lambda i: jax.random.fold_in(example_base, i))(global_index)
        dropout_key = jax.random.fold_in(dropout_base, device)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, x, labels, example_keys, dropout_key
        )
        grads = jax.lax.pmean(grads, AXIS)
        loss, metrics = jax.lax.pmean((loss, metrics), AXIS)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        decay = jnp.asarray(ema_decay, jnp.float32)
        if ema_warmup:
            n = state.step.astype(jnp.float32)
            decay = jnp.minimum(decay, (1.0 + n) / (10.0 + n))
        ema = optax.incremental_update(params, state.ema_params, 1.0 - decay)
        new_state = state.replace(
            step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state
        )
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}

    return train_step


def pmap_train_step(train_step, devices=None):
    """The step compiled over `devices` (default: all local ones): state and batch carry a
    leading device axis, the key is shared."""
    return jax.pmap(
        train_step, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=(0,), devices=devices
    )


def replicate(tree, devices=None):
    """One copy of a pytree per device along a new leading axis, laid out as a pmapped
    step's outputs are (`devices`: the pmap's own, default all of them).

    The layout matters: a pmap is compiled once per layout of its inputs, so a state put
    on the devices any other way (a broadcast on one device, say) makes the step compile
    a second time when it is fed its own outputs, and a third when fresh replicated totals
    meet a stepped state: ~16 s each on the digits model on a CPU."""
    sharding = _pmap_output_sharding(None if devices is None else tuple(devices))
    n = len(sharding.addressable_devices)  # this process's copies

    def put(x):
        if jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
            stacked = jnp.broadcast_to(x, (n, *jnp.shape(x)))
        else:  # on the host: a broadcast on a device would compile for every shape
            stacked = np.broadcast_to(np.asarray(x), (n, *np.shape(x)))
        if jax.process_count() == 1:
            return jax.device_put(stacked, sharding)
        return jax.make_array_from_process_local_data(sharding, stacked)

    return jax.tree_util.tree_map(put, tree)


@functools.cache
def _pmap_output_sharding(devices: tuple | None) -> jax.sharding.Sharding:
    """How a pmap over `devices` (None: its default) lays out its outputs, from a pmap."""
    n = len(jax.local_devices() if devices is None else devices)
    identity = jax.pmap(lambda x: x, axis_name=AXIS, devices=devices)
    return identity(np.zeros(n, np.float32)).sharding


def unreplicate(tree):
    """The first local device's copy of a replicated pytree. Read from that device's own
    shard: in a multi-process run a pmapped output spans every process's devices, and
    indexing it would be a computation over all of them."""

    def first(x):
        if isinstance(x, jax.Array):
            return x.addressable_shards[0].data[0]
        return x[0]

    return jax.tree_util.tree_map(first, tree)


def local_rows(x) -> np.ndarray:
    """This process's rows of a pmapped output `(devices, ...)`, as a host array with its
    local devices' slices in order (the whole array in a one-process run)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
        return np.concatenate([np.asarray(s.data) for s in shards])
    return np.asarray(x)


def make_train_step(
    sde: AbstractLinearSDE,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    ema_decay: float = 0.9999,
    ema_warmup: bool = False,
    **loss_options,
):
    """The denoising score matching step of a score network: `make_step` around
    `dsm_loss_fn(sde, model, **loss_options)`."""
    return make_step(dsm_loss_fn(sde, model, **loss_options), optimizer, ema_decay, ema_warmup)


def dsm_loss_fn(
    sde: AbstractLinearSDE,
    model: nn.Module,
    *,
    weighting: Weighting,
    time_sampler: AbstractTimeSampler,
    reduce_mean: bool = True,
    output: str = "noise",
    time_input: str = "t",
    time_scale: float = 999.0,
    label_dropout: float = 0.0,
    compute_dtype: str = "float32",
) -> LossFn:
    """The weighted denoising score matching loss of a score network on one device's batch
    (`sde_gen.dsm_losses` per example, averaged).

    A class-conditional network needs batches `{"x", "label"}`. `label_dropout`: the
    probability that an example's label is replaced by the null class (`num_classes`),
    which trains the unconditional score of classifier-free guidance alongside the
    conditional one (the network needs `null_class=True`). `compute_dtype`: the dtype of
    the network's pass (`sde_gen.score.COMPUTE_DTYPES`; parameters, gradients and the loss
    stay float32).
    """
    classes = num_classes(model)
    if not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"label_dropout must lie in [0, 1); got {label_dropout}")
    if label_dropout and not (classes and getattr(model, "null_class", False)):
        raise ValueError(
            f"label_dropout={label_dropout} needs a class-conditional network with a null class "
            "(num_classes > 0, null_class=True)"
        )

    def loss_fn(params, x, labels, example_keys, dropout_key):
        if not classes:
            labels = None
        elif labels is None:
            raise ValueError(
                f"the network is class-conditional ({classes} classes): the batch "
                "must be a dict with 'label'"
            )
        elif label_dropout:
            drop = jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(k, 1), label_dropout))
            labels = jnp.where(drop(example_keys), classes, labels)
        score_fn = ModelScore(
            model=model, variables=params, sde=sde, output=output, time_input=time_input,
            time_scale=time_scale, train=True, dropout_key=dropout_key, labels=labels,
            compute_dtype=compute_dtype,
        )  # fmt: skip
        losses = dsm_losses(example_keys, sde, score_fn, x, weighting, time_sampler, reduce_mean)
        return jnp.mean(losses), {}

    return loss_fn


def dequantized_loss_fn(
    sde: AbstractLinearSDE,
    model: nn.Module,
    dequantizer: nn.Module,
    *,
    time_sampler: AbstractTimeSampler,
    n_levels: int,
    data_range: tuple[float, float],
    output: str = "noise",
    time_input: str = "t",
    time_scale: float = 999.0,
    compute_dtype: str = "float32",
) -> LossFn:
    """Maximum-likelihood training with variational dequantization (Song, Durkan, Murray &
    Ermon 2021, sec. 5): the bound on `-log2 P(k) / D` of discrete data k,

        bits_per_dim( -(nll_bound(y) + log q(u | k)) ),  y = lo + (hi - lo) (k + u) / L,

    per example by one draw of `u ~ q` (the dequantizer's reparameterised flow), of t (from
    `time_sampler`, `UniformTime` or `ImportanceTime`) and of the prior term, minimised
    jointly in the score network's and the dequantizer's parameters (the variables'
    `DEQUANTIZER` collection). The batch holds the pipeline's discrete values (no uniform
    dequantization). The loss is in bits/dim; metric `log_q` is `E log q / (D ln 2)`.
    `compute_dtype` is the score network's (the dequantizer's flow stays float32).
    """
    classes = num_classes(model)

    def loss_fn(params, x, labels, example_keys, dropout_key):
        d = x[0].size
        dq_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(example_keys)
        bound_keys = jax.vmap(lambda k: jax.random.fold_in(k, 3))(example_keys)
        dq_variables = {"params": params[DEQUANTIZER]}
        y, log_q = dequantize(dequantizer, dq_variables, dq_keys, x, n_levels, data_range)
        score_fn = ModelScore(
            model=model, variables=params, sde=sde, output=output, time_input=time_input,
            time_scale=time_scale, train=True, dropout_key=dropout_key,
            labels=labels if classes else None, compute_dtype=compute_dtype,
        )  # fmt: skip
        nats = nll_bound_losses(bound_keys, sde, score_fn, y, time_sampler) + log_q
        bits = bits_per_dim(-nats, x.shape, data_range, n_levels)
        return jnp.mean(bits), {"log_q": jnp.mean(nats_to_bits_per_dim(log_q, d))}

    return loss_fn


def make_classifier_train_step(
    sde: AbstractLinearSDE,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    ema_decay: float = 0.9999,
    ema_warmup: bool = False,
    **loss_options,
):
    """The step of a noise-conditional classifier: `make_step` around
    `classifier_loss_fn(sde, model, **loss_options)`."""
    return make_step(
        classifier_loss_fn(sde, model, **loss_options), optimizer, ema_decay, ema_warmup
    )


def classifier_loss_fn(
    sde: AbstractLinearSDE,
    model: nn.Module,
    *,
    time_sampler: AbstractTimeSampler,
    time_input: str = "t",
    time_scale: float = 999.0,
    compute_dtype: str = "float32",
) -> LossFn:
    """The loss of a noise-conditional classifier `p_t(y | x_t)` (Dhariwal & Nichol 2021):
    each example `x_0` with label y is noised to `x_t = sde.perturb(x_0, t, z)`, t from
    `time_sampler`, and the loss is the cross-entropy of the network's logits at `(x_t, t)`.
    `batch` is `{"x", "label"}`; metrics add the batch `accuracy`. `compute_dtype`: the
    dtype of the network's pass (the logits are cast back to float32 before the loss)."""

    def loss_fn(params, x, labels, example_keys, dropout_key):
        if labels is None:
            raise ValueError("a classifier trains on labelled batches: {'x', 'label'}")
        t, w, z = draw_times_and_noise(example_keys, sde, time_sampler, x)
        t, w = t.astype(x.dtype), w.astype(x.dtype)
        classifier = ModelClassifier(
            model=model, variables=params, sde=sde, time_input=time_input,
            time_scale=time_scale, train=True, dropout_key=dropout_key,
            compute_dtype=compute_dtype,
        )  # fmt: skip
        logits = classifier.logits(sde.perturb(x, t, z), t)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
        return jnp.mean(w * losses), {"accuracy": accuracy}

    return loss_fn
