"""The data-parallel train step: device-count invariance, EMA, optimizer settings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_gen as sg
from sde_gen import data, models
from sde_gen.experiments import state as train


def _setup(ema_decay=0.99, ema_warmup=False):
    sde = sg.VPSDE()
    model = models.get_model("mlp", hidden=32, num_layers=2, embed_dim=16)
    optimizer = train.make_optimizer(lr=1e-2, warmup=0, grad_clip=1.0)
    step = train.make_train_step(
        sde, model, optimizer, weighting=sg.likelihood_weighting,
        time_sampler=sg.ImportanceTime(eps=1e-5), ema_decay=ema_decay,
        ema_warmup=ema_warmup,
    )  # fmt: skip
    it, _ = data.get_dataset("gmm", "train", 16, num_devices=1)
    batches = [jnp.asarray(next(it)["x"][0]) for _ in range(2)]
    state = train.init_state(jax.random.key(0), model, optimizer, batches[0])
    return step, state, batches


def _run(step, state, batches, devices):
    n = len(devices)
    run = train.pmap_train_step(step, devices=devices)
    state = train.replicate(state, devices)
    metrics = []
    for batch in batches:
        state, m = run(state, batch.reshape(n, -1, *batch.shape[1:]), jax.random.key(42))
        metrics.append(train.unreplicate(m))
    return train.unreplicate(state), metrics


def test_train_steps_on_8_devices_equal_the_same_global_batch_on_1():
    step, state, batches = _setup()
    assert jax.local_device_count() == 8
    state8, metrics8 = _run(step, state, batches, jax.local_devices())
    state1, metrics1 = _run(step, state, batches, jax.local_devices()[:1])
    assert int(state8.step) == int(state1.step) == 2
    for a, b in zip(jax.tree_util.tree_leaves(state8), jax.tree_util.tree_leaves(state1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for m8, m1 in zip(metrics8, metrics1):
        np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    moved = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda a, b: jnp.abs(a - b).max(), state8.params, state.params)
    )
    assert max(float(v) for v in moved) > 1e-4  # the steps did change the parameters


def test_ema_is_the_exponential_average_of_parameters():
    step, state, batches = _setup(ema_decay=0.9)
    new_state, _ = _run(step, state, batches[:1], jax.local_devices()[:1])
    expected = jax.tree_util.tree_map(
        lambda p0, p1: 0.9 * p0 + 0.1 * p1, state.params, new_state.params
    )
    for a, b in zip(
        jax.tree_util.tree_leaves(new_state.ema_params), jax.tree_util.tree_leaves(expected)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_ema_warmup_follows_the_num_updates_rule():
    """With warm-up the decay after n steps is min(rate, (1 + n) / (10 + n)): 0.1 at n = 0,
    then 2/11; the initial parameters keep weight 0.1 * 2/11 after two steps."""
    step, state, batches = _setup(ema_decay=0.999, ema_warmup=True)
    one, _ = _run(step, state, batches[:1], jax.local_devices()[:1])
    two, _ = _run(step, state, batches[:2], jax.local_devices()[:1])
    expected = jax.tree_util.tree_map(
        lambda p0, p1, p2: (2 / 11) * (0.1 * p0 + 0.9 * p1) + (9 / 11) * p2,
        state.params, one.params, two.params,
    )  # fmt: skip
    for a, b in zip(jax.tree_util.tree_leaves(two.ema_params), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_warmup_scales_the_first_updates_linearly():
    """Adam's first update has magnitude ~lr(step); with warm-up lr(0) = 0 and lr(k) = lr k / W."""
    opt = train.make_optimizer(lr=1.0, warmup=10, grad_clip=None)
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    sizes = []
    for _ in range(3):
        updates, state = opt.update({"w": jnp.ones(3)}, state, params)
        sizes.append(float(jnp.abs(updates["w"]).max()))
    np.testing.assert_allclose(sizes, [0.0, 0.1, 0.2], atol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: train.make_optimizer(lr=0.0), "lr must be a finite positive number"),
        (lambda: train.make_optimizer(warmup=-5), "warmup must be a positive int"),
        (lambda: train.make_optimizer(grad_clip=-1.0), "grad_clip must be"),
        (
            lambda: train.make_train_step(
                sg.VPSDE(),
                models.MLP(),
                train.make_optimizer(),
                weighting=sg.sigma2_weighting,
                time_sampler=sg.UniformTime(),
                ema_decay=1.0,
            ),
            r"ema_decay must lie in \[0, 1\)",
        ),
    ],
)
def test_bad_training_settings_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_loop_step_compiles_once_for_fresh_and_stepped_state_and_totals():
    """pmap compiles once per layout of its inputs: replicated values must be laid out as
    its outputs are, or the loop recompiles at its second step and again each time the
    interval totals are reset (16 s each on the digits model on a CPU)."""
    from sde_gen.experiments import train as loop

    step, state, batches = _setup()
    traces = []

    def counted(state, batch, key):
        traces.append(1)
        return step(state, batch, key)

    devices = jax.local_devices()
    p_step = loop.accumulating_step(counted)
    batch = np.asarray(batches[0]).reshape(len(devices), -1, *batches[0].shape[1:])
    zeros = loop.empty_totals(step, state, batch, jax.random.key(0))
    p_state, p_totals = train.replicate(state), train.replicate(zeros)
    out = p_step(p_state, p_totals, batch, jax.random.key(0))[0]  # fresh state and totals
    for leaf, ref in zip(jax.tree_util.tree_leaves(p_state), jax.tree_util.tree_leaves(out)):
        if isinstance(ref, jax.Array):
            assert leaf.sharding == ref.sharding
    p_state, p_totals = p_step(out, p_totals, batch, jax.random.key(0))  # stepped ones
    p_state, p_totals = p_step(p_state, train.replicate(zeros), batch, jax.random.key(0))
    jax.block_until_ready(p_totals)
    assert len(traces) == 1
    assert int(train.unreplicate(p_totals)["count"]) == 1
    assert int(train.unreplicate(p_state).step) == 3
