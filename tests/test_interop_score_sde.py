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
from importing import assert_import_refused

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
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


# --- --mode=import ---------------------------------------------------------------------------


def import_config(described, checkpoint):
    """An sde_gen config for a fixture's network: the shipped config of its SDE with the
    fixture's network options, on 8x8 / 16x16 mock CIFAR-10."""
    from sde_gen.experiments import config as cfg

    base = {"vesde": "ve_cifar", "vpsde": "vp_cifar", "subvpsde": "subvp_cifar"}[described["sde"]]
    config = cfg.load_file(os.path.join(ROOT, "configs", f"{base}.py"))
    name, options = network_options(described["model"], described["centered"])
    options.pop("centered")
    config.model.name = name
    for key, value in options.items():
        config.model[key] = value
    config.model.update(score_settings(described["sde"]))
    config.model.update({k: v for k, v in described["sde_constants"].items()})
    config.data.update(image_size=described["image_size"], centered=described["centered"])
    config.training.batch_size = 8
    config.eval.update(batch_size=8, num_samples=8)
    config.sampling.update(method="pc", predictor="euler_maruyama", corrector="none", num_steps=2)
    config.interop.checkpoint = checkpoint
    return config


FAST_IMPORTS = ("ve_ncsnpp_continuous", "vp_ddpmpp_continuous")
IMPORTS = [
    *[("score_sde", v) for v in FAST_IMPORTS],
    *[
        pytest.param("score_sde", v, marks=pytest.mark.slow)
        for v in sorted(FLAX_VARIANTS)
        if v not in FAST_IMPORTS
    ],
    *[pytest.param("score_sde_pytorch", v, marks=pytest.mark.slow) for v in sorted(TORCH_VARIANTS)],
]


def import_into(tmp_path, fmt, variant):
    from sde_gen import experiments

    if fmt == "score_sde":
        described, arrays, path = FLAX_VARIANTS[variant], FLAX_ARRAYS, flax_checkpoint(variant)
    else:
        pytest.importorskip("torch")
        described, arrays = TORCH_VARIANTS[variant], TORCH_ARRAYS
        path = os.path.join(TORCH, f"{variant}.pth")
    workdir = str(tmp_path / "run")
    settings = experiments.load(import_config(described, path))
    experiments.run("import", settings, workdir)
    return described, arrays, settings, workdir


@pytest.mark.parametrize("fmt, variant", IMPORTS)
def test_import_mode_writes_a_workdir_with_the_reference_score(tmp_path, mock_cifar, fmt, variant):
    from sde_gen.experiments import evaluate
    from sde_gen.experiments.kinds import make_experiment

    described, arrays, settings, workdir = import_into(tmp_path, fmt, variant)
    step, variables = evaluate.latest_params(make_experiment(settings), workdir)
    assert step == described["step"]
    x, t = arrays[f"{variant}/x"], arrays[f"{variant}/t"]
    ours = score_of(described, variables, x, t)
    assert relative_error(ours, arrays[f"{variant}/score"]) <= RTOL
    with open(os.path.join(workdir, "imported.json")) as f:
        record = json.load(f)
    assert record["format"] == fmt and len(record["sha256"]) == 64
    assert os.path.exists(os.path.join(workdir, "config.json"))


@pytest.mark.slow
def test_sample_mode_reads_an_imported_workdir(tmp_path, mock_cifar):
    from sde_gen import experiments

    _, _, settings, workdir = import_into(tmp_path, "score_sde", "ve_ncsnpp_continuous")
    (grid,) = experiments.run("sample", settings, workdir)
    assert os.path.exists(grid)


def test_import_of_a_missing_file_isassert_import_refused(tmp_path, mock_cifar):
    described = FLAX_VARIANTS["vp_ddpmpp_continuous"]
    config = import_config(described, str(tmp_path / "checkpoint_26"))
    assert_import_refused(
        tmp_path, config, FileNotFoundError, r"checkpoint .*checkpoint_26 does not exist"
    )


def test_import_of_another_networks_checkpoint_names_the_first_mismatch(tmp_path, mock_cifar):
    described = FLAX_VARIANTS["vp_ddpmpp_continuous"]
    config = import_config(described, flax_checkpoint("vp_ddpmpp_continuous"))
    config.model.nf = 8  # the checkpoint's network has nf=4
    assert_import_refused(
        tmp_path,
        config,
        CheckpointMismatch,
        r"parameter AttnBlock_0/GroupNorm_0/bias has shape \(8,\) in the checkpoint, \(16,\) "
        r"in the network",
    )


@pytest.mark.parametrize("fmt", ["score_sde", "score_sde_pytorch"])
def test_import_of_a_truncated_file_isassert_import_refused(tmp_path, mock_cifar, fmt):
    if fmt == "score_sde":
        variant, source = "vp_ddpmpp_continuous", flax_checkpoint("vp_ddpmpp_continuous")
    else:
        pytest.importorskip("torch")
        variant = "vp_ddpmpp_continuous"
        source = os.path.join(TORCH, f"{variant}.pth")
    with open(source, "rb") as f:
        data = f.read()
    broken = tmp_path / "broken"
    broken.write_bytes(data[: len(data) // 2])
    config = import_config(FLAX_VARIANTS[variant], str(broken))
    assert_import_refused(tmp_path, config, CheckpointFormatError, f"cannot be read as a {fmt} ")


def test_import_of_a_file_of_another_kind_isassert_import_refused(tmp_path, mock_cifar):
    other = tmp_path / "notes.txt"
    other.write_text("not a checkpoint")
    config = import_config(FLAX_VARIANTS["vp_ddpmpp_continuous"], str(other))
    assert_import_refused(
        tmp_path, config, CheckpointFormatError, "neither a score_sde .* nor a score_sde_pytorch"
    )
