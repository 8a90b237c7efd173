"""The training loop end to end: configs, checkpoints, exact resume, non-finite losses,
the tfds pipeline and a toy run checked against the data's exact mixture."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from sde_gen import data
from sde_gen.experiments import config as cfg
from sde_gen.experiments import evaluate, train
from sde_gen.experiments.checkpoints import CheckpointStore
from sde_gen.experiments.kinds import make_experiment
from sde_gen.experiments.reporting import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name):
    return cfg.load_file(os.path.join(ROOT, "configs", f"{name}.py"))


def tiny_toy_config(n_iters=12):
    config = load_config("toy_2d")
    t = config.training
    t.batch_size, t.n_iters, t.log_freq = 16, n_iters, 2
    t.snapshot_freq, t.snapshot_freq_for_preemption = 8, 3
    t.snapshot_sampling = False
    config.model.hidden, config.model.num_layers, config.model.embed_dim = 16, 1, 8
    config.optim.warmup = 2
    return config


def leaves_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resumed_run_equals_the_uninterrupted_one_bit_for_bit(tmp_path):
    straight = train.train_and_evaluate(tiny_toy_config(12), str(tmp_path / "a"))
    train.train_and_evaluate(tiny_toy_config(7), str(tmp_path / "b"))  # ends between saves
    resumed = train.train_and_evaluate(tiny_toy_config(12), str(tmp_path / "b"))
    assert int(straight.step) == int(resumed.step) == 12
    leaves_equal(straight.params, resumed.params)
    leaves_equal(straight.ema_params, resumed.ema_params)
    leaves_equal(straight.opt_state, resumed.opt_state)
    metrics_a = read_metrics(str(tmp_path / "a" / "metrics.jsonl"))
    metrics_b = read_metrics(str(tmp_path / "b" / "metrics.jsonl"))
    assert [m["step"] for m in metrics_a] == list(range(2, 13, 2))
    assert [m["step"] for m in metrics_b] == [2, 4, 6, 7, 8, 10, 12]  # + the stop at 7
    loss_a = {m["step"]: m["loss"] for m in metrics_a}
    loss_b = {m["step"]: m["loss"] for m in metrics_b}
    for step in (2, 4, 6, 10, 12):  # log intervals that the stop did not split
        assert loss_a[step] == loss_b[step]
    # snapshots at 8 and the last step; preemption ones at 3, 6, 9 (12 is a snapshot), of
    # which only the latest is kept
    assert sorted(os.listdir(tmp_path / "a" / "checkpoints")) == ["12", "8"]
    assert os.listdir(tmp_path / "a" / "checkpoints-meta") == ["9"]


KILL_AT = """
import os, sys
sys.path.insert(0, {tests!r})
from sde_gen.experiments import reporting, train
from test_train_loop import tiny_toy_config
write = reporting.MetricsWriter.write
def write_then_die(self, step, metrics):
    write(self, step, metrics)
    if step == {kill_at}:
        os._exit(9)  # no cleanup, no final save: as if the process were killed
reporting.MetricsWriter.write = write_then_die
train.train_and_evaluate(tiny_toy_config(12), {workdir!r})
"""


@pytest.mark.slow  # exact resume is in the default suite (in-process); this adds a real kill
def test_a_killed_process_restarted_continues_exactly(tmp_path):
    straight = train.train_and_evaluate(tiny_toy_config(12), str(tmp_path / "a"))
    workdir = str(tmp_path / "b")
    script = KILL_AT.format(tests=os.path.join(ROOT, "tests"), kill_at=10, workdir=workdir)
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    # killed at 10: the last checkpoint is 9 (preemption), or 8 if 9 was still being written
    assert CheckpointStore(workdir, read_only=True).latest_step() in (8, 9)
    resumed = train.train_and_evaluate(tiny_toy_config(12), workdir)
    leaves_equal(straight.params, resumed.params)
    leaves_equal(straight.ema_params, resumed.ema_params)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    get_dataset = data.get_dataset

    def poisoned(*args, **kw):
        it, info = get_dataset(*args, **kw)

        class Poisoned:
            n = 0

            def __next__(self):
                batch = next(it)
                self.n += 1
                if self.n == 5:  # step 5 sees a NaN example
                    batch["x"] = batch["x"].copy()
                    batch["x"][0, 0, 0] = np.nan
                return batch

            def get_state(self):
                return it.get_state()

            def set_state(self, state):
                it.set_state(state)

        return Poisoned(), info

    monkeypatch.setattr(data, "get_dataset", poisoned)
    workdir = str(tmp_path)
    with pytest.raises(train.NonFiniteLossError, match=r"between steps 4 and 6.*step 3 in"):
        train.train_and_evaluate(tiny_toy_config(12), workdir)
    store = CheckpointStore(workdir, read_only=True)
    assert store.latest_step() == 3
    abstract = make_experiment(cfg.load(tiny_toy_config(12))).init_state(jax.random.key(0))
    state, _ = store.restore(3, abstract)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(state.params))


def test_resuming_a_workdir_under_another_model_is_refused_and_changes_nothing(tmp_path):
    train.train_and_evaluate(tiny_toy_config(3), str(tmp_path))
    before = (tmp_path / "config.json").read_text()
    config = tiny_toy_config(6)
    config.model.hidden = 32
    with pytest.raises(cfg.ConfigError, match="config.model = .*Use another --workdir"):
        train.train_and_evaluate(config, str(tmp_path))
    assert (tmp_path / "config.json").read_text() == before
    assert CheckpointStore(str(tmp_path), read_only=True).latest_step() == 3


def test_tiny_vp_cifar_run_through_the_tfds_pipeline(tmp_path):
    """The real vp_cifar config, shrunk: tfds CIFAR-10 (mock records), DDPM++, checkpoints,
    metrics, a loss curve and an EMA sample grid; then --mode=sample colorization."""
    config = load_config("vp_cifar")
    t = config.training
    t.batch_size, t.n_iters, t.log_freq = 8, 2, 1
    t.snapshot_freq, t.snapshot_samples = 2, 4
    config.sampling.num_steps = 3
    config.model.update(nf=16, ch_mult=(1,), num_res_blocks=1, attn_resolutions=())
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 2
    files = set(os.listdir(tmp_path))
    assert {"checkpoints", "metrics.jsonl", "loss.png", "samples", "config.json"} <= files
    assert os.path.getsize(tmp_path / "samples" / "step_2.png") > 0
    samples = np.load(tmp_path / "samples" / "step_2.npz")["samples"]
    assert samples.shape == (4, 32, 32, 3) and np.all(np.isfinite(samples))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["name"] == "ddpmpp" and saved["training"]["sde"] == "vpsde"

    config.sampling.update(task="colorize", task_examples=4)
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        (folder,) = evaluate.sample(config, str(tmp_path))
    out = np.load(os.path.join(folder, "results.npz"))
    assert out["result"].shape == (4, 32, 32, 3)
    # the gray level (the channel mean) is kept exactly, the colors are sampled
    np.testing.assert_allclose(out["result"].mean(-1), out["original"].mean(-1), atol=1e-5)
    np.testing.assert_array_equal(out["observed"][..., 0], out["observed"][..., 2])
    assert os.path.getsize(os.path.join(folder, "before_after.png")) > 0


@pytest.mark.slow  # 1 min: a trained model against the exact mixture
def test_toy_2d_run_samples_the_mixture_weights(tmp_path):
    """Train the toy_2d config briefly, then sample its EMA model with the PF-ODE: each of
    the eight components gets its 1/8 share within binomial error, at the right place. A
    short run leaves the components wider than the data's (measured: variances up to 0.042
    against 0.02 after 800 steps; an untrained model's are ~1), so spreads are bounded by
    3x."""
    config = load_config("toy_2d")
    t = config.training
    t.n_iters, t.snapshot_freq, t.log_freq = 800, 800, 200
    t.snapshot_samples = 4000
    config.sampling.rtol = config.sampling.atol = 1e-3
    train.train_and_evaluate(config, str(tmp_path))
    samples = np.load(tmp_path / "samples" / "step_800.npz")["samples"]
    assert os.path.getsize(tmp_path / "samples" / "step_800.png") > 0
    density = data.toy_density()
    weights, means, variances = (np.asarray(a) for a in density.components())
    labels = np.argmax(np.asarray(density.responsibilities(samples)), axis=1)
    for k in range(8):
        members = samples[labels == k]
        share = len(members) / len(samples)
        assert abs(share - weights[k]) < 4.5 * np.sqrt(weights[k] * (1 - weights[k]) / 4000)
        np.testing.assert_allclose(members.mean(0), means[k], atol=0.06)
        assert np.all(members.var(0) < 3 * variances[k]), members.var(0)

    # --mode=eval on the same run: raw-coordinate features and the exact metrics of the ring
    config.eval.update(num_samples=2000, batch_size=1000, enable_bpd=False)
    (report,) = evaluate.evaluate(config, str(tmp_path))
    assert report["features"] == "data" and report["num_samples"] == 2000
    assert report["component_weights_tv"] < 0.05
    assert 0 <= report["data_fid"] < 0.05 and np.isfinite(report["data_kid"])
    # samples a little wider than the data: a somewhat lower mean log-density
    gap = report["exact_mean_log_density_of_data"] - report["exact_mean_log_density"]
    assert 0 < gap < 1.0, gap


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(model="name", value="unet"), "unknown config.model.name 'unet'; choose one of mlp"),
        (dict(training="sde", value="cld"), "unknown config.training.sde 'cld'; choose one of vp"),
        (dict(optim="optimizer", value="SGD"), "unknown config.optim.optimizer 'SGD'"),
        (dict(training="batch_size", value=12), "batch_size=12 must be divisible by the number"),
        (dict(sampling="fast_solver", value="heun"), "unknown fast sampling method 'heun'"),
        (dict(model="nonlinearity", value="gelu"), "unknown nonlinearity 'gelu'"),
        (dict(data="dataset", value="imagenet"), "unknown config.data.dataset 'imagenet'"),
        (dict(model="ema_rate", value=1.0), "ema_rate must lie in"),
        (dict(training="snapshot_freq", value=0), "snapshot_freq must be a positive integer"),
    ],
)
def test_bad_config_values_fail_before_any_work(override, message):
    config = load_config("vp_digits")
    (section, key), value = (
        [(k, v) for k, v in override.items() if k != "value"][0],
        override["value"],
    )
    config[section][key] = value
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(config)


def test_toy_data_with_an_image_network_is_refused():
    config = load_config("toy_2d")
    config.model = load_config("vp_digits").model
    with pytest.raises(cfg.ConfigError, match="holds vectors: use model.name='mlp'"):
        cfg.load(config)
