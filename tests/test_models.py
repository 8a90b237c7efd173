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


# --- NCSN++ / DDPM++ and their resampling layers -------------------------------------------

from sde_gen.models import resample  # noqa: E402


def test_fir_resampling_with_box_kernels_is_nearest_and_average_pooling(key):
    x = jax.random.normal(key, (2, 8, 6, 3))
    np.testing.assert_allclose(
        resample.upsample_2d(x, k=(1, 1)), resample.naive_upsample_2d(x), atol=1e-6
    )
    np.testing.assert_allclose(
        resample.downsample_2d(x, k=(1, 1)), resample.naive_downsample_2d(x), atol=1e-6
    )
    np.testing.assert_allclose(resample.naive_downsample_2d(x)[0, 0, 0], x[0, :2, :2].mean((0, 1)))


def test_fir_resampling_keeps_constants_away_from_the_border():
    x = jnp.full((1, 16, 16, 2), 3.0)
    up, down = resample.upsample_2d(x), resample.downsample_2d(x)
    assert up.shape == (1, 32, 32, 2) and down.shape == (1, 8, 8, 2)
    np.testing.assert_allclose(up[:, 2:-2, 2:-2], 3.0, rtol=1e-6)
    np.testing.assert_allclose(down[:, 1:-1, 1:-1], 3.0, rtol=1e-6)


def _same_conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def test_fused_resampling_convolutions_equal_filter_then_conv_in_the_interior(key):
    """The fused (transposed / strided) forms equal the unfused pair away from the border,
    where only the zero padding differs."""
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (2, 16, 16, 3))
    w = jax.random.normal(kw, (3, 3, 3, 5))
    up = resample.upsample_conv_2d(x, w)
    ref_up = _same_conv(resample.upsample_2d(x), w)
    assert up.shape == ref_up.shape == (2, 32, 32, 5)
    np.testing.assert_allclose(up[:, 3:-3, 3:-3], ref_up[:, 3:-3, 3:-3], atol=1e-4)
    down = resample.conv_downsample_2d(x, w)
    ref_down = resample.downsample_2d(_same_conv(x, w))
    assert down.shape == ref_down.shape == (2, 8, 8, 5)
    np.testing.assert_allclose(down[:, 2:-2, 2:-2], ref_down[:, 2:-2, 2:-2], atol=1e-4)


SMALL = dict(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0)


@pytest.mark.parametrize(
    "name, options",
    [
        ("ncsnpp", {}),  # biggan + FIR, residual input pyramid, Fourier embedding
        (
            "ncsnpp",
            dict(
                resblock_type="ddpm",
                progressive="output_skip",
                progressive_input="input_skip",
                progressive_combine="cat",
            ),
        ),  # noqa: E501
        ("ncsnpp", dict(progressive="residual", fir=False, nonlinearity="elu", skip_rescale=False)),
        ("ddpmpp", dict(resamp_with_conv=False, init_scale=1.0)),
        ("ddpmpp", dict(resblock_type="ddpm", conditional=False, centered=False)),
    ],
)
def test_ncsnpp_variants_map_images_to_images(name, options, key):
    model = models.get_model(name, **SMALL, **options)
    x = jax.random.normal(key, (2, 8, 8, 3))
    labels = jnp.asarray([0.5, 20.0])
    variables = model.init(key, x, labels)
    out = model.apply(variables, x, labels)
    assert out.shape == x.shape
    assert bool(jnp.all(jnp.isfinite(out)))
    # Every option combination does depend on the input (zero-init branches aside, the
    # skip paths carry it) -- a network ignoring x would be a wiring bug.
    perturbed = model.apply(variables, x + 0.5 * jax.random.normal(key, x.shape), labels)
    assert float(jnp.abs(perturbed - out).max()) > 0.0


def test_scale_by_sigma_divides_the_output_by_the_label(key):
    x, labels = jax.random.normal(key, (3, 8, 8, 1)), jnp.asarray([0.1, 1.0, 30.0])
    plain = models.get_model("ncsnpp", **SMALL, scale_by_sigma=False, init_scale=1.0)
    scaled = models.get_model("ncsnpp", **SMALL, scale_by_sigma=True, init_scale=1.0)
    variables = plain.init(key, x, labels)
    np.testing.assert_allclose(
        scaled.apply(variables, x, labels),
        plain.apply(variables, x, labels) / labels[:, None, None, None],
        rtol=1e-5,
    )


def test_ncsnpp_dropout_acts_only_in_training(key):
    model = models.get_model("ddpmpp", **{**SMALL, "dropout": 0.5}, init_scale=1.0)
    x, labels = jax.random.normal(key, (2, 8, 8, 1)), jnp.asarray([10.0, 500.0])
    variables = model.init(key, x, labels)
    eval_a, eval_b = model.apply(variables, x, labels), model.apply(variables, x, labels)
    np.testing.assert_array_equal(eval_a, eval_b)
    trained = model.apply(variables, x, labels, train=True, rngs={"dropout": jax.random.key(3)})
    assert float(jnp.abs(trained - eval_a).max()) > 1e-3


def test_the_cifar_models_have_the_papers_size():
    """DDPM++ cont. and NCSN++ cont. at CIFAR-10 size have score_sde's ~62M parameters,
    exactly 61,804,419 and 62,758,915 from the layer shapes. Shapes only, no memory for
    weights."""
    x, labels = jnp.zeros((1, 32, 32, 3)), jnp.ones((1,))
    for name, expected in (("ddpmpp", 61_804_419), ("ncsnpp", 62_758_915)):
        model = models.get_model(name)
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, labels))
        assert models.count_params(shapes) == expected, name


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(nonlinearity="gelu"), "unknown nonlinearity 'gelu'; choose one of swish"),
        (dict(resblock_type="resnet"), "unknown resblock_type 'resnet'"),
        (dict(progressive="skip"), "unknown progressive 'skip'"),
        (dict(embedding_type="learned"), "unknown embedding_type 'learned'"),
        (dict(nf=30), "nf > 0 divisible by 4"),
        (dict(dropout=1.0), "dropout must lie in"),
        (dict(n_filters=64), r"unknown option\(s\) \['n_filters'\] for model 'ncsnpp'"),
    ],
)
def test_bad_ncsnpp_options_raise_before_any_work(options, message):
    with pytest.raises(ValueError, match=message):
        models.get_model("ncsnpp", **options)


def test_images_that_do_not_halve_cleanly_are_rejected(key):
    model = models.get_model("ncsnpp", **{**SMALL, "ch_mult": (1, 2, 2)})
    with pytest.raises(ValueError, match=r"divide by 2\^\(len\(ch_mult\) - 1\) = 4; got shape"):
        model.init(key, jnp.zeros((1, 6, 6, 1)), jnp.ones((1,)))
