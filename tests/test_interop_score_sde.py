"""score_sde's and score_sde_pytorch's checkpoints in sde_gen's networks, against the
reference code's own scores.

The fixtures (`fixtures/score_sde/`, `fixtures/score_sde_pytorch/`) were made by running
score_sde's and score_sde_pytorch's code on perturbed random weights of narrow versions
of their configs (`fixtures/make_score_sde_fixtures.py`,
`fixtures/make_score_sde_pytorch_fixtures.py`): checkpoints in the references' formats,
an input batch and `get_score_fn(sde, model, train=False, continuous=True)` on it.
The Flax tests need no PyTorch; the `.pth` tests skip without it.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import sde_gen as sg
from sde_gen.interop import (
    CheckpointFormatError,
    CheckpointMismatch,
    load_checkpoint,
    network_options,
    score_settings,
)
from sde_gen.interop.score_sde import read_score_sde
from sde_gen.models import get_model

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
FLAX = os.path.join(FIXTURES, "score_sde")
TORCH = os.path.join(FIXTURES, "score_sde_pytorch")
# float32 through a few dozen layers; measured 0 (VE) to 1.1e-6
RTOL = 1e-5


def _fixtures(folder, name):
    with open(os.path.join(folder, f"{name}.json")) as f:
        return json.load(f), dict(np.load(os.path.join(folder, f"{name}.npz")))


FLAX_VARIANTS, FLAX_ARRAYS = _fixtures(FLAX, "score_sde")
TORCH_VARIANTS, TORCH_ARRAYS = _fixtures(TORCH, "score_sde_pytorch")


def flax_checkpoint(variant):
    folder = os.path.join(FLAX, variant)
    (name,) = [n for n in os.listdir(folder) if n.startswith("checkpoint_")]
    return os.path.join(folder, name)


def sde_of(described):
    c = described["sde_constants"]
    if described["sde"] == "vesde":
        return sg.VESDE(sigma_min=c["sigma_min"], sigma_max=c["sigma_max"])
    cls = sg.VPSDE if described["sde"] == "vpsde" else sg.SubVPSDE
    return cls(beta_min=c["beta_min"], beta_max=c["beta_max"])


def score_of(described, variables, x, t):
    name, options = network_options(described["model"], described["centered"])
    model = get_model(name, **options)
    score_fn = sg.ModelScore(
        model, variables, sde_of(described), **score_settings(described["sde"])
    )
    return np.asarray(score_fn(jnp.asarray(x), jnp.asarray(t)))


def relative_error(ours, theirs):
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def imported(described, path, x, **kw):
    name, options = network_options(described["model"], described["centered"])
    return load_checkpoint(path, get_model(name, **options), x.shape, **kw)


@pytest.mark.parametrize("variant", sorted(FLAX_VARIANTS))
def test_flax_checkpoint_gives_score_sde_score(variant):
    described, arrays = FLAX_VARIANTS[variant], FLAX_ARRAYS
    x, t = arrays[f"{variant}/x"], arrays[f"{variant}/t"]
    checkpoint = imported(described, flax_checkpoint(variant), x)
    assert checkpoint.step == described["step"] and checkpoint.format == "score_sde"
    ours = score_of(described, checkpoint.ema_params, x, t)
    assert relative_error(ours, arrays[f"{variant}/score"]) <= RTOL


def test_flax_raw_weights_are_the_optimizer_target():
    variant = "vp_ddpmpp_continuous"
    described, x = FLAX_VARIANTS[variant], FLAX_ARRAYS[f"{variant}/x"]
    path = flax_checkpoint(variant)
    _, ema, target = read_score_sde(path)
    raw = imported(described, path, x, use_ema=False)
    kernel = raw.ema_params["params"]["ResnetBlockBigGAN_0"]["Conv_0"]["kernel"]
    np.testing.assert_array_equal(kernel, target["ResnetBlockBigGANpp_0"]["Conv_0"]["kernel"])
    assert not np.array_equal(kernel, ema["ResnetBlockBigGANpp_0"]["Conv_0"]["kernel"])
    default = imported(described, path, x)
    np.testing.assert_array_equal(
        default.params["params"]["Dense_0"]["kernel"], target["Dense_0"]["kernel"]
    )


@pytest.mark.parametrize("variant", sorted(TORCH_VARIANTS))
def test_pytorch_checkpoint_gives_score_sde_pytorch_score(variant):
    pytest.importorskip("torch")
    described, arrays = TORCH_VARIANTS[variant], TORCH_ARRAYS
    x, t = arrays[f"{variant}/x"], arrays[f"{variant}/t"]
    checkpoint = imported(described, os.path.join(TORCH, f"{variant}.pth"), x)
    assert checkpoint.format == "score_sde_pytorch"
    ours = score_of(described, checkpoint.ema_params, x, t)
    assert relative_error(ours, arrays[f"{variant}/score"]) <= RTOL
    # the model's own weights are the raw ones, a different network
    raw = score_of(described, checkpoint.params, x, t)
    assert relative_error(raw, arrays[f"{variant}/score"]) > 1e-2


def test_checkpoint_of_a_deeper_network_names_the_missing_parameter():
    variant = "vp_ddpmpp_continuous"
    described, x = FLAX_VARIANTS[variant], FLAX_ARRAYS[f"{variant}/x"]
    name, options = network_options(described["model"], described["centered"])
    deeper = get_model(name, **{**options, "num_res_blocks": 2})
    expected = r"it has no parameter AttnBlock_3/GroupNorm_0/bias \(shape \(8,\) in the network\)"
    with pytest.raises(CheckpointMismatch, match=expected):
        load_checkpoint(flax_checkpoint(variant), deeper, x.shape)


def test_pytorch_checkpoint_without_torch_is_named(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("no torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    variant = "vp_ddpmpp_continuous"
    x = TORCH_ARRAYS[f"{variant}/x"]
    with pytest.raises(
        CheckpointFormatError, match=r"needs PyTorch \(pip install 'sde_gen\[torch\]'\)"
    ):
        imported(TORCH_VARIANTS[variant], os.path.join(TORCH, f"{variant}.pth"), x)
