"""Runs that cannot lie: verified checkpoints with fallback, no non-finite state saved, a
workdir lock, torn metrics, eval beside a running training, caches keyed by settings."""

import glob
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from sde_gen import data
from sde_gen.experiments import checkpoints, config as cfg, evaluate, reporting, train
from sde_gen.experiments.kinds import make_experiment

# Each test trains in-process on 8 simulated CPU devices; on 2 busy cores such trainings
# have hung in XLA's CPU collectives (1 run in 3), so they run in the slow suite; the
# checkpoint store's own tests (test_checkpoints.py) cover fallback, locks and disk-full.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from test_train_loop import leaves_equal, tiny_toy_config  # noqa: E402


def _flip_byte(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))


def _largest_file(step_dir: str) -> str:
    files = [p for p in glob.glob(os.path.join(step_dir, "**", "*"), recursive=True) if os.path.isfile(p)]
    return max(files, key=os.path.getsize)


def test_a_corrupt_latest_checkpoint_is_named_and_resume_falls_back(tmp_path, caplog):
    workdir = str(tmp_path)
    straight = train.train_and_evaluate(tiny_toy_config(12), str(tmp_path / "lone"))
    train.train_and_evaluate(tiny_toy_config(8), workdir)  # checkpoints at 3, 6 (meta), 8
    _flip_byte(_largest_file(os.path.join(workdir, "checkpoints", "8")))
    caplog.set_level("WARNING")
    resumed = train.train_and_evaluate(tiny_toy_config(12), workdir)
    text = caplog.text
    assert os.path.join("checkpoints", "8") in text and "falling back" in text
    # resumed from step 6 and repeated the lone run exactly
    leaves_equal(straight.params, resumed.params)


def test_with_no_verified_checkpoint_left_training_stops_with_a_clear_message(tmp_path):
    workdir = str(tmp_path)
    train.train_and_evaluate(tiny_toy_config(3), workdir)  # one checkpoint: the last step, 3
    for step_dir in glob.glob(os.path.join(workdir, "checkpoints*", "*")):
        _flip_byte(_largest_file(step_dir))
    with pytest.raises(checkpoints.NoValidCheckpointError, match=r"no valid checkpoint in .*checkpoints/3 \(.*sha256 mismatch"):
        train.train_and_evaluate(tiny_toy_config(6), workdir)


def test_an_empty_step_directory_does_not_block_resume(tmp_path):
    workdir = str(tmp_path)
    train.train_and_evaluate(tiny_toy_config(3), workdir)
    os.makedirs(os.path.join(workdir, "checkpoints", "300"))
    state = train.train_and_evaluate(tiny_toy_config(6), workdir)
    assert int(state.step) == 6


def test_non_finite_parameters_are_never_saved(tmp_path):
    """A learning rate finite in float32 but large enough to blow the parameters up: the
    last good checkpoint stays the latest and the run stops with the message."""
    workdir = str(tmp_path)
    config = tiny_toy_config(3)
    train.train_and_evaluate(config, workdir)
    config = tiny_toy_config(9)
    config.optim.lr = 1e37  # the same optimizer structure, so the checkpoint at 3 resumes
    with pytest.raises(train.NonFiniteLossError, match="stopped without saving.*step 3 in"):
        train.train_and_evaluate(config, workdir)
    store = checkpoints.CheckpointStore(workdir, read_only=True)
    assert store.latest_step() == 3


def test_a_torn_metrics_line_is_repaired_on_resume(tmp_path):
    workdir = str(tmp_path)
    train.train_and_evaluate(tiny_toy_config(6), workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 7, "loss": 0.')  # a kill while writing
    train.train_and_evaluate(tiny_toy_config(8), workdir)
    steps = [r["step"] for r in reporting.read_metrics(os.path.join(workdir, "metrics.jsonl"))]
    assert steps == [2, 4, 6, 8]


ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
TRAIN = """
import sys
sys.path.insert(0, {tests!r})
from sde_gen.experiments import train
from test_train_loop import tiny_toy_config
config = tiny_toy_config({n})
config.training.snapshot_freq_for_preemption = {every}
config.training.max_to_keep = 1
train.train_and_evaluate(config, {workdir!r})
"""


def _start_training(workdir, n, every=3):
    script = TRAIN.format(tests=os.path.join(ROOT, "tests"), n=n, every=every, workdir=workdir)
    # one device: a training beside other work on 2 cores must not wait on CPU collectives
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", **ONE_DEVICE}
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    log = open(os.path.join(os.path.dirname(workdir), "training.log"), "w")
    return subprocess.Popen(
        [sys.executable, "-c", script], env=env, cwd=ROOT, stdout=log, stderr=log, text=True
    )


def _log(workdir) -> str:
    with open(os.path.join(os.path.dirname(workdir), "training.log")) as f:
        return f.read()[-3000:]


def _wait_for_checkpoint(workdir, proc, timeout=120):
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            raise AssertionError(_log(workdir))
        if checkpoints.CheckpointStore(workdir, read_only=True).steps():
            return
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow  # three training processes beside the suite's own; the lock's unit tests
# (a second holder refused at once, stale locks taken over) are in test_checkpoints.py
def test_a_second_training_on_a_locked_workdir_is_refused_and_the_first_is_untouched(tmp_path):
    workdir = str(tmp_path / "run")
    first = _start_training(workdir, 100)
    _wait_for_checkpoint(workdir, first)
    t0 = time.time()
    second = subprocess.run(
        [sys.executable, "launch.py", "--config=configs/toy_2d.py", f"--workdir={workdir}",
         "--config.training.n_iters=100"],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **ONE_DEVICE},
    )  # fmt: skip
    assert second.returncode != 0
    assert "is in use: PID" in second.stderr and str(first.pid) in second.stderr
    assert "Traceback" not in second.stderr
    assert time.time() - t0 < 60
    assert first.wait(timeout=600) == 0, _log(workdir)
    lone_dir = str(tmp_path / "lone" / "run")
    assert _start_training(lone_dir, 100).wait(timeout=600) == 0, _log(lone_dir)
    experiment = make_experiment(cfg.load(_lone_config(100)))
    abstract = experiment.init_state(jax.random.key(0))
    step, state, _ = checkpoints.CheckpointStore(workdir, read_only=True).restore_latest(abstract)
    lone_step, lone, _ = checkpoints.CheckpointStore(lone_dir, read_only=True).restore_latest(abstract)
    assert step == lone_step == 100
    leaves_equal(lone.params, state.params)
    leaves_equal(lone.opt_state, state.opt_state)


def _lone_config(n):
    config = tiny_toy_config(n)
    config.training.snapshot_freq_for_preemption = 3
    config.training.max_to_keep = 1
    return config


@pytest.mark.slow  # a training process beside the suite's own; a reader beside a writer
# process of checkpoints is in test_checkpoints.py
def test_sampling_in_a_loop_beside_a_running_training_never_crashes(tmp_path):
    workdir = str(tmp_path / "run")
    proc = _start_training(workdir, 150, every=2)
    _wait_for_checkpoint(workdir, proc)
    config = _lone_config(150)
    config.sampling.method, config.sampling.num_steps = "fast", 3
    config.eval.update(num_samples=16, batch_size=8)
    rounds = 0
    while proc.poll() is None and rounds < 6:
        folders = evaluate.sample(config, workdir)
        assert len(folders) == 1
        rounds += 1
    assert proc.wait(timeout=600) == 0, _log(workdir)
    assert rounds >= 1


def test_changing_the_sampler_samples_afresh_and_another_sde_is_refused(tmp_path):
    workdir = str(tmp_path)
    config = tiny_toy_config(3)
    config.sampling.method, config.sampling.num_steps = "fast", 3
    config.eval.update(num_samples=16, batch_size=8)
    train.train_and_evaluate(config, workdir)
    (first,) = evaluate.sample(config, workdir)
    config.sampling.num_steps = 4
    (second,) = evaluate.sample(config, workdir)
    assert first != second
    config.sampling.eps = 2e-3
    (third,) = evaluate.sample(config, workdir)
    assert third not in (first, second)
    config.training.sde = "subvpsde"
    with pytest.raises(cfg.ConfigError, match="config.training.sde = 'vpsde'; this config has 'subvpsde'"):
        evaluate.sample(config, workdir)


def test_eval_with_the_adaptive_pf_ode_sampler_reports_its_counted_nfe(tmp_path):
    workdir = str(tmp_path)
    config = tiny_toy_config(3)
    config.sampling.update(method="ode", rtol=1e-2, atol=1e-2, noise_removal=False)
    config.eval.update(num_samples=16, batch_size=8, enable_bpd=False)
    train.train_and_evaluate(config, workdir)
    (report,) = evaluate.evaluate(config, workdir)
    # Tsit5 is FSAL with 7 stages: 1 + 6 per step, at least one step
    assert report["nfe"] >= 7 and (report["nfe"] - 1) % 6 == 0
    assert report["num_samples"] == 16 and np.isfinite(report["data_fid"])


def test_reference_statistics_are_keyed_by_their_settings(tmp_path):
    config = tiny_toy_config(3)
    settings = cfg.load(config)
    experiment = make_experiment(settings)
    space = experiment.feature_space(str(tmp_path))
    a = space.reference("test", 100)
    b = space.reference("test", 200)
    assert a[1].shape == (100, 2) and b[1].shape == (200, 2)
    assert len(glob.glob(os.path.join(tmp_path, "eval", "reference_*.npz"))) == 2
    x, _, _ = data.load_arrays("gmm", "test", 200)
    np.testing.assert_allclose(b[1], x)
