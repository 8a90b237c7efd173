"""Every bad input gets one clear line before any work: config files, keys, values, data
sets, weights (experiments/config.py and launch.py)."""

import os
import subprocess
import sys

import pytest

from sde_gen.experiments import config as cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name):
    return cfg.load_file(os.path.join(ROOT, "configs", f"{name}.py"))


def test_settings_are_typed_frozen_and_hold_the_built_objects():
    settings = cfg.load(load_config("vp_digits"))
    assert settings.training.batch_size == 64 and settings.data.info.shape == (8, 8, 1)
    assert settings.sampling.sampler.run_name().startswith("fast-unipc")
    assert type(settings.sde).__name__ == "VPSDE"
    assert settings.eval.features == "classifier"
    with pytest.raises(AttributeError):
        settings.training.batch_size = 3  # frozen


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("sampling.eps", 0.0, r"config.sampling.eps must lie in \(0, 1\); got 0.0"),
        ("sampling.eps", 2.0, r"config.sampling.eps must lie in \(0, 1\)"),
        ("sampling.num_steps", -3, "config.sampling.num_steps must be a positive integer"),
        ("sampling.fast_solver", "heun", "unknown fast sampling method 'heun'"),
        ("sampling.grid", "cosine", "unknown time grid 'cosine'"),
        ("sampling.method", "euler", "unknown config.sampling.method 'euler'; choose one of pc"),
        ("optim.lr", 1e39, r"config.optim.lr must be finite in float32; got 1e\+39"),
        ("optim.lr", -1.0, r"config.optim.lr must lie in \(0, inf\)"),
        ("model.ema_rate", 1.0, r"config.model.ema_rate must lie in \[0, 1\)"),
        ("training.batch_size", 12, "batch_size=12 must be divisible by the number of devices"),
        ("training.eps", 0.0, r"config.training.eps must lie in \(0, 1\)"),
        ("training.n_iters", 0, "config.training.n_iters must be a positive integer; got 0"),
        ("data.image_size", 32, "config.data.image_size=32, but data set 'digits' has 8x8"),
        ("data.num_channels", 3, "config.data.num_channels=3, but data set 'digits' has 1"),
        ("data.dataset", "imagenet", "unknown config.data.dataset 'imagenet'"),
        ("eval.features", "clip", "unknown config.eval.features 'clip'"),
        ("eval.divergence", "skilling", "unknown config.eval.divergence 'skilling'"),
        ("eval.batch_size", 0, "config.eval.batch_size must be a positive integer"),
        ("eval.checkpoint", "newest", "config.eval.checkpoint must be 'latest', 'all' or a step"),
        ("eval.bpd_rtol", 0.0, r"config.eval.bpd_rtol must lie in \(0, inf\)"),
        ("eval.num_samples", -1, "config.eval.num_samples must be a positive integer"),
        ("sampling.task", "deblur", "unknown config.sampling.task 'deblur'"),
        ("sampling.cfg_weight", 1.0, "cfg_weight=1.0 .* needs a class-conditional network"),
        ("optim.weight_decay", 0.1, "weight_decay=0.1 needs optim.optimizer='AdamW'"),
        ("training.compute_dtype", "fp16", "compute_dtype 'fp16'; choose one of float32, bfloat16"),
    ],
)
def test_a_bad_value_is_one_config_error_naming_key_and_value(key, value, message):
    config = load_config("vp_digits")
    cfg.set_value(config, key, value)
    with pytest.raises(cfg.ConfigError, match=message) as error:
        cfg.load(config)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sampling.impute_method": "smcc"}, "unknown config.sampling.impute_method 'smcc'"),
        ({"sampling.impute_method": "smc", "sampling.num_particles": 0},
         "config.sampling.num_particles must be a positive integer; got 0"),
        ({"sampling.impute_method": "reconstruction_guidance", "sampling.guidance_weight": -1.0},
         r"config.sampling.guidance_weight must lie in \[0, inf\); got -1.0"),
        ({"sampling.impute_method": "smc", "sampling.method": "pc",
          "sampling.corrector": "langevin"}, "impute_method='smc' takes no corrector"),
        ({"sampling.impute_method": "smc", "sampling.method": "pc", "sampling.predictor": "none",
          "sampling.corrector": "none"}, "needs a predictor or a corrector"),
    ],
)  # fmt: skip
def test_bad_imputation_settings_are_one_config_error(overrides, message):
    config = load_config("vp_digits")
    cfg.set_value(config, "sampling.task", "inpaint")
    for key, value in overrides.items():
        cfg.set_value(config, key, value)
    with pytest.raises(cfg.ConfigError, match=message) as error:
        cfg.load(config)
    assert "\n" not in str(error.value)


def test_imputation_settings_reach_the_task():
    config = load_config("vp_digits")
    for key, value in [("sampling.task", "inpaint"), ("sampling.impute_method", "smc"),
                       ("sampling.num_particles", 8)]:  # fmt: skip
        cfg.set_value(config, key, value)
    task = cfg.load(config).sampling.task
    assert task.sampler.corrector is None  # the fast sampler's task default, without Langevin
    assert task.impute_options() == {"method": "smc", "num_particles": 8}
    assert task.describe()["impute_method"] == "smc" and task.describe()["num_particles"] == 8
    config.sampling.impute_method = "replacement"
    task = cfg.load(config).sampling.task
    assert task.impute_options() == {"method": "replacement"}
    assert type(task.sampler.corrector).__name__ == "LangevinCorrector"


def test_class_conditioning_must_match_the_data_sets_classes():
    config = load_config("vp_digits_cond")
    config.model.num_classes = 3
    with pytest.raises(cfg.ConfigError, match="num_classes=3, but data set 'digits' has 10"):
        cfg.load(config)


@pytest.mark.parametrize(
    "method, key, value, message",
    [
        ("ode", "sampling.ode_solver", "rk4", "unknown ODE solver 'rk4'"),
        ("ode", "sampling.rtol", -1e-5, r"config.sampling.rtol must lie in \(0, inf\)"),
        ("sde", "sampling.sde_solver", "milstein", "unknown SDE solver 'milstein'"),
        ("pc", "sampling.predictor", "leapfrog", "unknown predictor 'leapfrog'"),
        ("pc", "sampling.corrector", "hmc", "unknown corrector 'hmc'"),
        ("pc", "sampling.snr", 0.0, r"config.sampling.snr must lie in \(0, inf\)"),
    ],
)
def test_every_sampler_setting_is_checked(method, key, value, message):
    config = load_config("vp_digits")
    cfg.set_value(config, "sampling.method", method)
    cfg.set_value(config, key, value)
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(config)


def test_compute_dtype_reaches_the_settings_and_defaults_to_float32_for_old_workdirs():
    config = load_config("vp_digits")
    assert cfg.load(config).training.compute_dtype == "float32"
    cfg.set_value(config, "training.compute_dtype", "bfloat16")
    assert cfg.load(config).training.compute_dtype == "bfloat16"
    del config.training["compute_dtype"]  # a config.json written before the setting existed
    assert cfg.load(config).training.compute_dtype == "float32"


def test_an_unknown_key_names_the_closest_one():
    config = load_config("vp_digits")
    with pytest.raises(cfg.ConfigError, match=r"no key 'n_itrs' .* did you mean config.training.n_iters"):
        cfg.set_value(config, "training.n_itrs", 3)


def test_overrides_are_read_as_the_type_the_config_holds():
    config = cfg.load_file(
        os.path.join(ROOT, "configs", "vp_digits.py"),
        {"training.n_iters": "7", "optim.lr": "1", "eval.checkpoint": "300",
         "model.ch_mult": "(1, 2, 2)", "training.snapshot_sampling": "False"},
    )  # fmt: skip
    assert config.training.n_iters == 7 and config.optim.lr == 1.0
    assert config.eval.checkpoint == "300" and tuple(config.model.ch_mult) == (1, 2, 2)
    assert config.training.snapshot_sampling is False
    with pytest.raises(cfg.ConfigError, match="expected an integer"):
        cfg.load_file(os.path.join(ROOT, "configs", "vp_digits.py"), {"training.n_iters": "many"})


def test_a_missing_or_broken_config_file_is_named(tmp_path):
    with pytest.raises(cfg.ConfigError, match="config file 'nope.py' does not exist"):
        cfg.load_file("nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config():\n    return undefined_name\n")
    with pytest.raises(cfg.ConfigError, match="could not be loaded: NameError"):
        cfg.load_file(str(broken))


def test_an_unprepared_tfds_data_set_is_named_and_never_downloaded(tmp_path):
    config = load_config("vp_cifar")
    config.data.data_dir = str(tmp_path)
    with pytest.raises(cfg.ConfigError, match=r"not prepared in data.data_dir=.*tfds build cifar10"):
        cfg.load(config)
    assert not any(tmp_path.iterdir())  # nothing downloaded


def test_missing_inception_weights_are_named_before_sampling(tmp_path):
    import tensorflow_datasets as tfds

    from sde_gen.experiments import evaluate

    config = load_config("vp_cifar")
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        settings = cfg.load(config)  # training needs no weights
        with pytest.raises(cfg.ConfigError, match="config.eval.inception_weights=None"):
            evaluate.evaluate(settings, str(tmp_path))  # refused before any checkpoint is read
        config.eval.features = "classifier"
        cfg.load(config).eval.check_feature_weights()  # another feature space needs none


def test_every_shipped_config_is_valid():
    import tensorflow_datasets as tfds

    names = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py"))
    names = [n for n in names if n not in ("default_cifar", "__init__")]
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        for name in names:
            config = load_config(name)
            cfg.load(config)


LAUNCH_CASES = [
    (["--config=configs/missing.py"], "config file 'configs/missing.py' does not exist"),
    (["--config=configs/vp_digits.py", "--config.training.n_itrs=3"],
     "did you mean config.training.n_iters"),
    (["--config=configs/vp_digits.py", "--config.training.sde=vpsdee"],
     "unknown config.training.sde 'vpsdee'; choose one of vpsde, subvpsde, vesde"),
    (["--config=configs/vp_digits.py", "--config.optim.lr=1e39"], "optim.lr must be finite"),
    (["--config=configs/vp_digits.py", "--config.sampling.eps=0"], "sampling.eps must lie"),
]


@pytest.mark.parametrize("args, message", LAUNCH_CASES)
def test_launch_reports_bad_input_in_one_line_and_writes_nothing(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, "launch.py", *args, f"--workdir={tmp_path}", "--mode=train"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.listdir(tmp_path)  # nothing written
