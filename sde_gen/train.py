"""Data-parallel training of score networks: the train state, the optimizer and the step.

One pure function, `train_step(state, batch, key)`, `jax.pmap`-ed over local devices with
`axis_name="batch"`: per-example losses from `dsm_loss`, gradients and metrics averaged
with `lax.pmean`, an optax update, and an EMA of the parameters.

Randomness is keyed by `(step, global example index)`: example i of the global batch
draws from `fold_in(split(fold_in(key, step))[0], i)`. Each example's time and noise
therefore do not depend on how the batch is split over devices, so a step on 8 devices
equals the same global batch on one, and a resumed run repeats the uninterrupted one.
(Dropout, where a model has it, draws per device:
`fold_in(split(fold_in(key, step))[1], device index)`.)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from ._checks import check_positive, check_steps
from .losses import AbstractTimeSampler, Weighting, _dsm_loss
from .score import ModelScore
from .sde import AbstractLinearSDE

AXIS = "batch"


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
) -> optax.GradientTransformation:
    """score_sde's optimizer: gradient clipping by global norm, then Adam with a linear
    learning-rate warm-up over `warmup` steps (none if 0)."""
    check_positive("make_optimizer", lr=lr, eps=eps)
    if warmup:
        check_steps("warmup", warmup)
        schedule = optax.linear_schedule(0.0, lr, warmup)
    else:
        schedule = lr
    adam = optax.adam(schedule, b1=beta1, eps=eps)
    if grad_clip is None:
        return adam
    check_positive("make_optimizer", grad_clip=grad_clip)
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam)


def init_state(
    key: jax.Array, model: nn.Module, optimizer: optax.GradientTransformation, x_example
) -> TrainState:
    """A fresh state; the EMA starts at the initial parameters."""
    params = model.init(key, x_example, jnp.zeros((x_example.shape[0],)))
    return TrainState(jnp.zeros((), jnp.int32), params, params, optimizer.init(params))


def make_train_step(
    sde: AbstractLinearSDE,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    weighting: Weighting,
    time_sampler: AbstractTimeSampler,
    reduce_mean: bool = True,
    ema_decay: float = 0.9999,
    output: str = "noise",
    time_input: str = "t",
    time_scale: float = 999.0,
):
    """`train_step(state, batch, key) -> (state, metrics)` for use under `pmap(axis_name=AXIS)`.

    `batch` is this device's `(per_device, *dims)` slice of the global batch, and `key` the
    run's base key. Metrics (`loss`, `grad_norm`) are averaged over all devices.
    """
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1); got {ema_decay}")

    def train_step(state: TrainState, batch: jax.Array, key: jax.Array):
        example_base, dropout_base = jax.random.split(jax.random.fold_in(key, state.step))
        device = jax.lax.axis_index(AXIS)
        per_device = batch.shape[0]
        global_index = device * per_device + jnp.arange(per_device)
        example_keys = jax.vmap(lambda i: jax.random.fold_in(example_base, i))(global_index)
        dropout_key = jax.random.fold_in(dropout_base, device)

        def loss_fn(params):
            score_fn = ModelScore(
                model, params, sde, output, time_input, time_scale, True, dropout_key
            )
            losses = _dsm_loss(
                example_keys, sde, score_fn, batch, weighting, time_sampler, reduce_mean
            )
            return jnp.mean(losses)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        grads = jax.lax.pmean(grads, AXIS)
        loss = jax.lax.pmean(loss, AXIS)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
        new_state = state.replace(
            step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state
        )
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    return train_step


def pmap_train_step(train_step, devices=None):
    """The step compiled over `devices` (default: all local ones): state and batch carry a
    leading device axis, the key is shared."""
    return jax.pmap(
        train_step, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=(0,), devices=devices
    )


def replicate(tree, devices=None):
    """One copy of a pytree per device along a new leading axis (pmap shards it)."""
    n = len(jax.local_devices() if devices is None else devices)
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), tree)


def unreplicate(tree):
    """The first device's copy of a replicated pytree."""
    return jax.tree_util.tree_map(lambda x: x[0], tree)
