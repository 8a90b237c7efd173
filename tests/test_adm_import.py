"""`--mode=import` of guided-diffusion's state dicts (`interop.format="adm"`): the tiny
fixture diffusion model and classifier (tests/fixtures/adm_guided_diffusion_*.npz) imported
through the shipped ImageNet 64x64 configs with the fixtures' network options, on 16x16 mock
CIFAR-10 (10 classes, as the fixtures), then classifier-guided `--mode=sample`."""

import dataclasses
import json
import os

import numpy as np
import pytest
from importing import assert_import_refused

from sde_gen.interop import adm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
META = json.load(open(os.path.join(FIXTURES, "adm_guided_diffusion.json")))["networks"]
# guided-diffusion's README flags of the released 64x64 pair
MODEL_FLAGS = dict(
    attention_resolutions="32,16,8", class_cond=True, diffusion_steps=1000, dropout=0.1,
    image_size=64, learn_sigma=True, noise_schedule="cosine", num_channels=192,
    num_head_channels=64, num_res_blocks=3, resblock_updown=True,
    use_new_attention_order=True, use_fp16=True, use_scale_shift_norm=True,
)  # fmt: skip
CLASSIFIER_FLAGS = dict(image_size=64, classifier_depth=4)


def fixture_config(shipped, fixture, checkpoint):
    """The shipped config with the network options of a fixture network, on 16x16 data."""
    from sde_gen.experiments import config as cfg

    config = cfg.load_file(os.path.join(ROOT, "configs", f"{shipped}.py"))
    kwargs = META[fixture]["kwargs"]
    network = adm.adm_unet(**kwargs) if fixture == "cond" else adm.adm_encoder(**kwargs)
    for field in dataclasses.fields(network):
        if field.name not in ("parent", "name"):
            value = getattr(network, field.name)
            config.model[field.name] = list(value) if isinstance(value, tuple) else value
    config.data.update(dataset="cifar10", image_size=16)
    config.training.batch_size = 8
    config.eval.update(batch_size=8, num_samples=8)
    config.sampling.update(num_steps=3)
    config.interop.checkpoint = os.path.join(FIXTURES, checkpoint)
    return config


def test_shipped_configs_are_the_released_networks_without_the_data():
    from sde_gen.experiments import config as cfg

    model = cfg.load(cfg.load_file(os.path.join(ROOT, "configs", "adm_imagenet64.py")))
    classifier = cfg.load(
        cfg.load_file(os.path.join(ROOT, "configs", "adm_classifier_imagenet64.py"))
    )
    assert model.model.network() == adm.adm_model(**MODEL_FLAGS)
    assert classifier.model.network() == adm.adm_classifier_model(**CLASSIFIER_FLAGS)
    assert classifier.sde == model.sde and model.sde.log_alpha.shape == (1001,)
    assert model.data.info.shape == (64, 64, 3) and model.data.info.num_classes == 1000
    assert model.interop.format == classifier.interop.format == "adm"


@pytest.mark.slow  # 25 s; the guided score of the converted networks is checked in the
# default suite by tests/test_adm_guided_diffusion.py, import-then-sample by test_interop_score_sde
def test_imported_model_and_classifier_sample_with_guidance(tmp_path, mock_cifar):
    from sde_gen import experiments
    from sde_gen.experiments import evaluate
    from sde_gen.experiments.kinds import make_experiment

    clf_config = fixture_config(
        "adm_classifier_imagenet64", "classifier", "adm_guided_diffusion_classifier.npz"
    )
    clf_dir = str(tmp_path / "classifier")
    experiments.run("import", experiments.load(clf_config), clf_dir)

    config = fixture_config("adm_imagenet64", "cond", "adm_guided_diffusion_cond.npz")
    workdir = str(tmp_path / "model")
    settings = experiments.load(config)
    experiments.run("import", settings, workdir)
    with open(os.path.join(workdir, "imported.json")) as f:
        record = json.load(f)
    assert record["format"] == "adm" and record["step"] == 0 and len(record["sha256"]) == 64

    # the workdir holds the fixture's weights
    step, variables = evaluate.latest_params(make_experiment(settings), workdir)
    state = adm.load_npz_state_dict(config.interop.checkpoint)
    kernel = variables["params"]["Conv_0"]["kernel"]
    np.testing.assert_array_equal(
        np.asarray(kernel), state["input_blocks.0.0.weight"].transpose(2, 3, 1, 0)
    )

    config.sampling.update(classifier_workdir=clf_dir, classifier_scale=1.0)
    outputs = experiments.run("sample", experiments.load(config), workdir)
    assert outputs and all(os.path.exists(p) for p in outputs)


def test_import_of_another_networks_state_dict_names_the_first_mismatch(tmp_path, mock_cifar):
    from sde_gen.interop import CheckpointMismatch

    config = fixture_config("adm_imagenet64", "cond", "adm_guided_diffusion_cond.npz")
    config.model.nf = 64  # the fixture's network has 32 channels
    assert_import_refused(
        tmp_path, config, CheckpointMismatch, r"adm state dict .* has shape .* needs"
    )


def test_import_of_a_missing_or_corrupt_file_isassert_import_refused(tmp_path, mock_cifar):
    from sde_gen.interop import CheckpointFormatError

    config = fixture_config("adm_imagenet64", "cond", "adm_guided_diffusion_cond.npz")
    config.interop.checkpoint = str(tmp_path / "64x64_diffusion.pt")
    assert_import_refused(
        tmp_path, config, FileNotFoundError, r"checkpoint .*64x64_diffusion.pt does not"
    )
    broken = tmp_path / "broken.npz"
    with open(os.path.join(FIXTURES, "adm_guided_diffusion_cond.npz"), "rb") as f:
        broken.write_bytes(f.read()[:1000])
    config.interop.checkpoint = str(broken)
    assert_import_refused(tmp_path, config, CheckpointFormatError, "cannot be read as an adm .npz")
