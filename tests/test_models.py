"""Score networks and the network -> score wrapper."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracles import count_compiles

import sde_gen as sg
from sde_gen import data, models

MEAN, VARIANCE = (0.5, -1.0, 2.0), (0.3, 1.0, 0.05)


class ExactGaussianNet(nn.Module):
    """A parameter-free 'network' that predicts exactly what `output` names for Gaussian data,
    reading the time back from its label the way `time_input` encodes it."""

    sde: sg.AbstractLinearSDE
    output: str
    time_input: str

    @nn.compact
    def __call__(self, x, labels, train=False):
        if self.time_input == "t":
            t = labels / 999.0
        else:  # VE: label = sigma(t)
            ve = self.sde
            t = jnp.log(labels / ve.sigma_min) / jnp.log(ve.sigma_max / ve.sigma_min)
        density = sg.Gaussian(jnp.asarray(MEAN), jnp.asarray(VARIANCE))
        score = density.score_t(self.sde, x, t)
        std = self.sde.marginal(t)[1][:, None]
        return {
            "score": score,
            "noise": -std * score,
            "x0": self.sde.x0_from_score(x, t, score),
        }[self.output]


@pytest.mark.parametrize("output", ["noise", "x0", "score"])
def test_model_score_recovers_the_exact_score_from_each_parameterization(sde, output, key):
    """In float64: the conversions are exact algebra. (In float32 the x0 parameterization
    amplifies rounding by 1/std^2 near t = 0, as is intrinsic to x0 prediction.)"""
    time_input = "std" if isinstance(sde, sg.VESDE) else "t"
    with jax.enable_x64(True):
        net = ExactGaussianNet(sde, output, time_input)
        score_fn = sg.ModelScore(net, {}, sde, output=output, time_input=time_input)
        density = sg.Gaussian(jnp.asarray(MEAN), jnp.asarray(VARIANCE))
        x = jax.random.normal(key, (16, 3), jnp.float64) * 2
        t = jnp.linspace(0.01, 1.0, 16, dtype=jnp.float64)
        expected = density.score_t(sde, x, t)
        np.testing.assert_allclose(score_fn(x, t), expected, rtol=1e-9, atol=1e-9)


def test_model_score_passes_the_configured_label():
    class Echo(nn.Module):
        @nn.compact
        def __call__(self, x, labels, train=False):
            return jnp.broadcast_to(labels[:, None], x.shape)

    ve, x, t = sg.VESDE(), jnp.ones((3, 2)), jnp.asarray([0.1, 0.5, 0.9])
    by_std = sg.ModelScore(Echo(), {}, ve, output="score", time_input="std")
    np.testing.assert_allclose(by_std(x, t)[:, 0], ve.marginal(t)[1], rtol=1e-6)
    by_t = sg.ModelScore(Echo(), {}, ve, output="score", time_input="t", time_scale=999.0)
    np.testing.assert_allclose(by_t(x, t)[:, 0], 999.0 * t, rtol=1e-6)


def test_dropout_follows_train_flag_and_key():
    class Dropper(nn.Module):
        @nn.compact
        def __call__(self, x, labels, train=False):
            return nn.Dropout(0.5, deterministic=not train)(x)

    vp, x = sg.VPSDE(), jnp.ones((4, 8))
    eval_fn = sg.ModelScore(Dropper(), {}, vp, output="score")
    np.testing.assert_array_equal(eval_fn(x, 0.5), x)
    train_a = sg.ModelScore(Dropper(), {}, vp, "score", train=True, dropout_key=jax.random.key(0))
    train_b = sg.ModelScore(Dropper(), {}, vp, "score", train=True, dropout_key=jax.random.key(1))
    out_a, out_b = train_a(x, 0.5), train_b(x, 0.5)
    assert set(np.unique(np.asarray(out_a))) <= {0.0, 2.0}
    assert not np.array_equal(out_a, out_b)


@pytest.mark.parametrize("shape", [(5, 2), (3, 1, 4, 4)])
def test_mlp_returns_outputs_shaped_like_its_inputs(shape, key):
    model = models.get_model("mlp", hidden=32, num_layers=2, embed_dim=16)
    x = jax.random.normal(key, shape)
    variables = model.init(key, x, jnp.zeros(shape[0]))
    out = model.apply(variables, x, jnp.full(shape[0], 500.0))
    assert out.shape == shape
    np.testing.assert_array_equal(out, 0.0)  # zero-initialized output layer
    n_params = sum(p.size for p in jax.tree_util.tree_leaves(variables))
    assert n_params > 32 * 32 * 4


def test_timestep_embedding_is_the_ddpm_sinusoid():
    emb = models.timestep_embedding(jnp.asarray([0.0, 3.0]), 8)
    freqs = 10_000.0 ** (-np.arange(4) / 3)
    expected = np.concatenate([np.sin(3.0 * freqs), np.cos(3.0 * freqs)])
    np.testing.assert_allclose(emb[1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])
    assert models.timestep_embedding(jnp.zeros(2), 7).shape == (2, 7)


def test_samplers_do_not_recompile_for_new_network_parameters(key):
    sde, model = sg.VPSDE(), models.get_model("mlp", hidden=16, num_layers=1, embed_dim=8)
    x = jnp.zeros((8, 2))
    params_a = model.init(jax.random.key(1), x, jnp.zeros(8))
    params_b = jax.tree_util.tree_map(lambda p: p + 0.1, params_a)
    sg.sample_pc(key, sde, sg.ModelScore(model, params_a, sde), (8, 2), num_steps=5)
    with count_compiles() as compiles:
        out, _ = sg.sample_pc(key, sde, sg.ModelScore(model, params_b, sde), (8, 2), num_steps=5)
        out.block_until_ready()
    assert len(compiles) == 0


def test_mlp_learns_the_toy_mixture_score(key):
    """A few hundred Adam steps on the 2-D ring: the sigma^2-weighted DSM loss falls from 1
    (an untrained network predicts zero noise) to near the exact score's loss."""
    sde = sg.VPSDE()
    model = models.get_model("mlp", hidden=64, num_layers=2, embed_dim=32)
    it, _ = data.get_dataset("gmm", "train", 512, num_devices=1)
    batches = [jnp.asarray(next(it)["x"][0]) for _ in range(8)]
    params = model.init(key, batches[0], jnp.zeros(512))
    optimizer = optax.adam(2e-3)
    opt_state = optimizer.init(params)

    def loss_fn(params, batch, step_key):
        return jnp.mean(sg.dsm_loss(step_key, sde, sg.ModelScore(model, params, sde), batch))

    @jax.jit
    def step(params, opt_state, batch, step_key):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, step_key)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for i in range(400):
        params, opt_state, loss = step(params, opt_state, batches[i % 8], jax.random.key(i))
        losses.append(float(loss))
    exact = data.toy_density()
    eval_key = jax.random.key(1234)
    optimum = float(jnp.mean(sg.dsm_loss(eval_key, sde, exact.score_fn(sde), batches[0])))
    trained = float(jnp.mean(loss_fn(params, batches[0], eval_key)))
    assert losses[0] == pytest.approx(1.0, abs=0.1)
    # Measured: 1.10 -> 0.29 against an optimum of 0.24; require 80% of the gap closed.
    assert trained < optimum + 0.2 * (1.0 - optimum), (trained, optimum)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: models.get_model("ncsn"), "unknown model 'ncsn'; choose one of mlp"),
        (lambda: sg.ModelScore(models.MLP(), {}, sg.VPSDE(), output="eps"), "unknown model output"),
        (lambda: sg.ModelScore(models.MLP(), {}, sg.VPSDE(), time_input="sigma"), "unknown time"),
    ],
)
def test_bad_model_choices_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()
