"""bfloat16 compute (`compute_dtype="bfloat16"`): the network's pass in bfloat16, the
parameters, gradients, optimizer state and EMA in float32.

Tolerances from bfloat16's unit roundoff u = 2^-8 ~ 3.9e-3: every layer rounds its
activations to bfloat16, and the ~15 roundings of the (shrunk) digits DDPM++'s
convolutions, norms and residual sums add up like a random walk, ~u sqrt(15) ~ 1.5e-2 in
the gradient. Measured on the batch and parameters below: loss rel. err. 2.7e-4, gradient
rel. L2 err. 1.2e-2, per-leaf cosine >= 0.995 (leaves whose float32 gradient is not
numerically zero). The bounds: 1e-2 for the loss, 5e-2 for the gradient, cosine >= 0.98
(a leaf's relative error up to 0.2); and the gradient must differ from float32's by more
than 1e-4 relative (float32 rounding is ~1e-6), so the test fails if the cast is skipped.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_gen as sg
from sde_gen import data, models
from sde_gen.experiments import config as cfg
from sde_gen.experiments import state as train
from sde_gen.score import ModelScore

LOSS_RTOL, GRAD_RTOL, MIN_COSINE, MIN_GRAD_CHANGE = 1e-2, 5e-2, 0.98, 1e-4


def _digits_setup():
    """configs/vp_digits.py's network at width 16 and one resolution (compile time), 16
    training digits, and parameters moved off the initialization (whose zero last layer
    makes the loss independent of the network)."""
    overrides = {"model.nf": 16, "model.ch_mult": (1,), "model.attn_resolutions": (8,)}
    config = cfg.load_file("configs/vp_digits.py", overrides)
    settings = cfg.load(config, num_devices=1)
    network = settings.model.network()
    x, _, _ = data.load_arrays("digits", "train", 16, seed=0, **settings.data.options("train"))
    x = jnp.asarray(x)
    params = network.init(jax.random.key(0), x[:1], jnp.zeros((1,)))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    noise = [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    return settings, network, x, jax.tree_util.tree_unflatten(tree, noise)


def test_bf16_loss_and_gradients_match_float32_within_bf16_roundoff():
    settings, network, x, params = _digits_setup()
    loss = settings.training.loss
    example_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(16))

    def loss_and_grad(compute_dtype):
        fn = train.dsm_loss_fn(
            settings.sde, network, weighting=loss.weighting, time_sampler=loss.time_sampler,
            reduce_mean=loss.reduce_mean, compute_dtype=compute_dtype,
        )  # fmt: skip
        (value, _), grads = jax.jit(jax.value_and_grad(fn, has_aux=True))(
            params, x, None, example_keys, jax.random.key(2)
        )
        return value, grads

    loss32, grads32 = loss_and_grad("float32")
    loss16, grads16 = loss_and_grad("bfloat16")
    assert loss16.dtype == jnp.float32
    assert {g.dtype for g in jax.tree_util.tree_leaves(grads16)} == {jnp.dtype(jnp.float32)}
    assert abs(float(loss16 - loss32)) <= LOSS_RTOL * abs(float(loss32))

    g32 = jnp.concatenate([g.ravel() for g in jax.tree_util.tree_leaves(grads32)])
    g16 = jnp.concatenate([g.ravel() for g in jax.tree_util.tree_leaves(grads16)])
    rel = float(jnp.linalg.norm(g16 - g32) / jnp.linalg.norm(g32))
    assert MIN_GRAD_CHANGE < rel <= GRAD_RTOL, rel

    # leaves whose exact gradient is zero (an attention key's bias: softmax ignores a
    # shift shared by all keys) hold only rounding noise; compare the others' directions
    total = float(jnp.linalg.norm(g32))
    for a, b in zip(jax.tree_util.tree_leaves(grads32), jax.tree_util.tree_leaves(grads16)):
        norm = float(jnp.linalg.norm(a))
        if norm > 1e-3 * total:
            cosine = float(jnp.vdot(a, b)) / (norm * float(jnp.linalg.norm(b)))
            assert cosine >= MIN_COSINE, cosine


def test_bf16_network_pass_runs_in_bfloat16_and_returns_float32():
    network = models.get_model("mlp", hidden=16, num_layers=1, embed_dim=8)
    x = jnp.ones((4, 2))
    variables = network.init(jax.random.key(0), x, jnp.zeros((4,)))
    score = ModelScore(network, variables, sg.VPSDE(), compute_dtype="bfloat16")
    jaxpr = str(jax.make_jaxpr(score)(x, jnp.full((4,), 0.5)))
    products = [line.split("=")[0] for line in jaxpr.splitlines() if "= dot_general" in line]
    assert products and all(":bf16[" in out for out in products), products
    assert score(x, jnp.full((4,), 0.5)).dtype == jnp.float32
    with pytest.raises(ValueError, match="unknown compute dtype 'float16'; choose one of"):
        ModelScore(network, variables, sg.VPSDE(), compute_dtype="float16")


def test_a_bf16_optimizer_step_keeps_parameters_and_optimizer_state_float32():
    model = models.get_model("mlp", hidden=16, num_layers=1, embed_dim=8)
    optimizer = train.make_optimizer(lr=1e-2, warmup=0)
    step = train.make_train_step(
        sg.VPSDE(), model, optimizer, weighting=sg.likelihood_weighting,
        time_sampler=sg.UniformTime(eps=1e-5), ema_decay=0.9, compute_dtype="bfloat16",
    )  # fmt: skip
    x = jax.random.normal(jax.random.key(0), (8, 2))
    state = train.init_state(jax.random.key(1), model, optimizer, x)
    run = train.pmap_train_step(step, devices=jax.local_devices()[:1])
    new, metrics = run(train.replicate(state, jax.local_devices()[:1]), x[None], jax.random.key(2))
    new = train.unreplicate(new)
    floats = [
        leaf
        for leaf in jax.tree_util.tree_leaves((new.params, new.ema_params, new.opt_state))
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    assert floats and {leaf.dtype for leaf in floats} == {jnp.dtype(jnp.float32)}
    assert np.isfinite(float(train.unreplicate(metrics)["loss"]))
    moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), state.params, new.params)
    assert any(jax.tree_util.tree_leaves(moved))
