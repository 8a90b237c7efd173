"""guided-diffusion's (ADM's) checkpoints read into sde_gen's ADM and ADM classifier.

The fixtures (`tests/fixtures/adm_guided_diffusion*`, made by
`tests/fixtures/make_adm_fixtures.py` from guided-diffusion's own `unet.py` on seeded,
perturbed weights) hold four tiny networks' state dicts, an input batch and the reference
outputs: a class-conditional and an unconditional learned-sigma U-Net, and two classifiers,
between them every layer type and option of the released files and the alternatives.
float32 on both sides; the measured relative errors are ~6e-7 (noise and variance channels)
and ~3e-7 (logits), so the bound 1e-5 leaves room for other CPUs and XLA versions.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_gen as sg
from sde_gen.interop import adm as interop

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
META = json.load(open(os.path.join(FIXTURES, "adm_guided_diffusion.json")))
IO = dict(np.load(os.path.join(FIXTURES, "adm_guided_diffusion.npz")))
X = jnp.asarray(IO["x"].transpose(0, 2, 3, 1))  # NCHW -> NHWC
STEPS = jnp.asarray(IO["timesteps"], jnp.float32)  # guided-diffusion's n in [0, 999]
Y = jnp.asarray(IO["y"])
SIZE = X.shape[1]


@functools.cache
def converted(name):
    """(network, variables, guided-diffusion's output in NHWC) of a fixture network."""
    net = META["networks"][name]
    state = interop.load_npz_state_dict(os.path.join(FIXTURES, f"adm_guided_diffusion_{name}.npz"))
    ref = IO[f"out_{name}"]
    if net["class"] == "UNetModel":
        model = interop.adm_unet(**net["kwargs"])
        return model, interop.convert_adm_state_dict(state, model, SIZE), ref.transpose(0, 2, 3, 1)
    model = interop.adm_encoder(**net["kwargs"])
    return model, interop.convert_adm_classifier_state_dict(state, model, SIZE), ref


def relative_error(got, want):
    return float(np.linalg.norm(np.asarray(got) - want) / np.linalg.norm(want))


@pytest.mark.parametrize("name", ["cond", "uncond"])
def test_converted_diffusion_models_match_guided_diffusion(name):
    model, variables, ref = converted(name)
    y = Y if model.num_classes else None
    out = np.asarray(model.apply(variables, X, STEPS, y=y))
    assert out.shape == ref.shape == (*X.shape[:3], 6)  # learned sigma: eps, then v
    assert np.abs(ref).mean() > 0.05  # the perturbed weights reach every layer
    assert relative_error(out[..., :3], ref[..., :3]) <= 1e-5  # the noise
    assert relative_error(out[..., 3:], ref[..., 3:]) <= 1e-5  # the variance channels


@pytest.mark.parametrize("name", ["classifier", "classifier_plain"])
def test_converted_classifiers_match_guided_diffusion(name):
    model, variables, ref = converted(name)
    logits = model.apply(variables, X, STEPS)
    assert logits.shape == ref.shape == (3, 10)
    assert relative_error(logits, ref) <= 1e-5


def test_torch_state_dict_reads_like_its_npz():
    pytest.importorskip("torch")
    pt = interop.load_torch_state_dict(os.path.join(FIXTURES, "adm_guided_diffusion_classifier.pt"))
    npz = interop.load_npz_state_dict(os.path.join(FIXTURES, "adm_guided_diffusion_classifier.npz"))
    assert list(pt) == list(npz)
    for k in pt:
        np.testing.assert_array_equal(pt[k], npz[k])


def test_conversion_names_the_first_mismatch():
    state = interop.load_npz_state_dict(os.path.join(FIXTURES, "adm_guided_diffusion_cond.npz"))
    kwargs = META["networks"]["cond"]["kwargs"]
    wrong_classes = interop.adm_unet(**{**kwargs, "num_classes": 1000})
    with pytest.raises(
        ValueError,
        match=r"label_emb.weight has shape \(10, 128\) -> "
        r"Embed_0/embedding needs \(1000, 128\)",
    ):
        interop.convert_adm_state_dict(state, wrong_classes, SIZE)
    model = interop.adm_unet(**kwargs)
    with pytest.raises(ValueError, match="no input_blocks.1.0.in_layers.0.weight"):
        interop.convert_adm_state_dict(
            {k: v for k, v in state.items() if not k.startswith("input_blocks.1.")}, model, SIZE
        )
    with pytest.raises(ValueError, match=r"extra.weight \(2,\) of the state dict is not part"):
        interop.convert_adm_state_dict({**state, "extra.weight": np.zeros(2)}, model, SIZE)
    unconditional = interop.adm_unet(**{**kwargs, "num_classes": None})
    with pytest.raises(ValueError, match="label_emb.weight"):
        interop.convert_adm_state_dict(state, unconditional, SIZE)


def test_readme_flags_build_the_released_networks():
    flags = dict(
        attention_resolutions="32,16,8",
        class_cond=True,
        diffusion_steps=1000,
        image_size=256,
        learn_sigma=True,
        noise_schedule="linear",
        num_channels=256,
        num_head_channels=64,
        num_res_blocks=2,
        resblock_updown=True,
        use_fp16=True,
        use_scale_shift_norm=True,
    )  # 256x256_diffusion.pt
    model = interop.adm_model(**flags)
    assert (model.nf, model.ch_mult, model.attn_resolutions) == (
        256,
        (1, 1, 2, 2, 4, 4),
        (32, 16, 8),
    )
    assert (model.num_classes, model.out_channels, model.head_channels) == (1000, 6, 64)
    assert not model.new_attention_order and not model.rescale and model.norm_groups == 32
    small = interop.adm_model(
        **{
            **flags,
            "image_size": 64,
            "num_channels": 192,
            "num_res_blocks": 3,
            "use_new_attention_order": True,
        }
    )
    assert small.ch_mult == (1, 2, 3, 4) and small.new_attention_order  # 64x64_diffusion.pt
    heads = interop.adm_model(
        **{**flags, "image_size": 128, "num_head_channels": -1, "num_heads": 4}
    )
    assert heads.num_heads == 4  # 128x128_diffusion.pt
    clf = interop.adm_classifier_model(image_size=128)  # 128x128_classifier.pt: the defaults
    assert (clf.nf, clf.ch_mult, clf.num_res_blocks, clf.num_classes) == (
        128,
        (1, 1, 2, 3, 4),
        2,
        1000,
    )
    assert clf.attn_resolutions == (32, 16, 8) and clf.head_channels == 64
    with pytest.raises(ValueError, match="pool 'adaptive' is not supported"):
        interop.adm_classifier_model(image_size=64, classifier_pool="adaptive")


SDE = sg.DiscreteVPSDE(betas=sg.discrete_betas("linear", 1000))
T_OF_STEPS = (STEPS + 1) / 1000  # t_n = T (n + 1) / N: the times the network sees as n


def _score_and_classifier():
    model, variables, _ = converted("uncond")
    score_fn = sg.ModelScore(model, variables, SDE, time_input="discrete")
    clf, clf_variables, _ = converted("classifier")
    classifier = sg.ModelClassifier(clf, clf_variables, SDE, time_input="discrete", labels=Y)
    return score_fn, classifier


def test_learned_sigma_network_is_a_score_and_classifier_sees_discrete_steps():
    score_fn, classifier = _score_and_classifier()
    _, std = SDE.marginal(T_OF_STEPS)
    eps = -np.asarray(score_fn(X, T_OF_STEPS)) * np.asarray(std)[:, None, None, None]
    # N t / T - 1 in float32 is n to ~3e-5, which moves the time embedding that much
    assert relative_error(eps, converted("uncond")[2][..., :3]) <= 1e-4
    assert relative_error(classifier.logits(X, T_OF_STEPS), converted("classifier")[2]) <= 1e-4


def test_a_score_refuses_an_output_of_the_wrong_shape():
    clf, clf_variables, _ = converted("classifier")  # logits (B, 10): not an image
    with pytest.raises(ValueError, match=r"output has shape \(3, 10\); a score of x"):
        sg.ModelScore(clf, clf_variables, SDE, time_input="discrete")(X, T_OF_STEPS)


def test_classifier_guidance_with_converted_networks():
    score_fn, classifier = _score_and_classifier()
    scale = 3.0
    guided = sg.classifier_guidance(score_fn, classifier, scale)
    t = jnp.asarray([0.9, 0.5, 0.1])
    clf, clf_variables, _ = converted("classifier")

    def log_p_y(x):  # directly from the converted classifier's logits at the steps n
        logits = clf.apply(clf_variables, x, SDE.timestep(t))
        return jnp.sum(jax.nn.log_softmax(logits, -1)[jnp.arange(3), Y])

    expected = score_fn(X, t) + scale * jax.grad(log_p_y)(X)
    np.testing.assert_allclose(guided(X, t), expected, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(expected - score_fn(X, t)).mean()) > 1e-3 * float(jnp.abs(expected).mean())
    noise = jax.random.normal(jax.random.key(0), X.shape)
    sample = lambda s: sg.sample_pc(
        jax.random.key(1), SDE, s, X.shape, predictor="ancestral", num_steps=4, x_init=noise
    )[0]
    plain, steered = sample(score_fn), sample(guided)
    assert steered.shape == X.shape and bool(jnp.all(jnp.isfinite(steered)))
    assert float(jnp.abs(steered - plain).max()) > 0
