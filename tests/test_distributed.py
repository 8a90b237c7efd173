"""Multi-process runs on a localhost cluster (`sde_gen.distributed`): processes of
`python -m sde_gen` joined by `--coordinator_address` on a free port, each with its own
forced CPU devices, talking through JAX's CPU collectives (gloo).

Tolerances. A run over 2 processes x 2 devices and one over 1 process x 4 devices compute
the same global batch with the same per-example keys; what differs is the order in which
the gradients of the 4 devices are summed (gloo's all-reduce against XLA's in-process
one). A float32 sum of 4 terms in another order differs by a few units in the last place
(2^-24 ~ 6e-8 relative); Adam's update is a smooth function of it, so over the few steps
here the parameters differ by O(steps x ulp). Measured: 6e-8 (one ulp) after 12 steps. The
bound is 2e-6 relative (to max(1, |x|)), 30 ulp; a run that saw other data or other keys
differs by 1e-3 or more. Runs with the same process layout are compared bit for bit.
"""

import json
import os
import shutil
import signal
import sys
import time

import numpy as np
import pytest

from sde_gen import data, distributed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import multiprocess as mp  # noqa: E402

TOLERANCE = 2e-6
TOY = {
    "training.batch_size": 16, "training.n_iters": 12, "training.log_freq": 2,
    "training.snapshot_freq": 8, "training.snapshot_freq_for_preemption": 3,
    "training.snapshot_sampling": False, "model.hidden": 16, "model.num_layers": 1,
    "model.embed_dim": 8, "optim.warmup": 2,
}  # fmt: skip
EVAL = {
    "eval.num_samples": 64, "eval.batch_size": 32, "eval.bpd_num_examples": 40,
    "eval.bpd_batch_size": 16, "sampling.rtol": 1e-3, "sampling.atol": 1e-3,
}  # fmt: skip


def train_args(workdir, **changes) -> list[str]:
    values = {**TOY, **changes}
    return [
        "--config=configs/toy_2d.py",
        "--mode=train",
        f"--workdir={workdir}",
        *mp.overrides(values),
    ]


def train(workdir, processes, devices, **changes):
    mp.run(train_args(workdir, **changes), processes, devices, str(workdir))


def metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def assert_states_close(a, b, tolerance=TOLERANCE):
    for part in ("params", "ema_params", "opt_state"):
        assert mp.max_difference(getattr(a, part), getattr(b, part)) <= tolerance, part
    assert int(a.step) == int(b.step)


def assert_states_equal(a, b):
    assert mp.max_difference(a, b) == 0.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The toy run over 2 x 2 devices and over 1 x 4, 12 steps each."""
    root = tmp_path_factory.mktemp("runs")
    train(root / "two", 2, 2)
    train(root / "one", 1, 4)
    return root


def test_two_processes_train_what_one_process_does(runs):
    two, data_two = mp.restore(str(runs / "two"), 12)
    one, data_one = mp.restore(str(runs / "one"), 12)
    assert_states_close(two, one)
    assert data_two == data_one == {"next_index": 12}
    # one writer: each log step once, the metrics of the global batch
    m_two, m_one = metrics(runs / "two"), metrics(runs / "one")
    assert [m["step"] for m in m_two] == [m["step"] for m in m_one] == list(range(2, 13, 2))
    for a, b in zip(m_two, m_one, strict=True):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=TOLERANCE)
    # snapshots 8 and 12 and the preemption checkpoint 9, as in a one-process run
    assert sorted(os.listdir(runs / "two" / "checkpoints")) == ["12", "8"]
    assert os.listdir(runs / "two" / "checkpoints-meta") == ["9"]
    log_other = open(f"{runs / 'two'}.p1.log").read()
    assert "steps/s" not in log_other  # only process 0 logs progress


@pytest.mark.slow  # checks the tolerance itself, not the code
def test_another_seed_is_far_outside_the_tolerance(runs, tmp_path):
    # what the tolerance separates: the same run with other example keys
    train(tmp_path / "seed", 1, 4, seed=1)
    other, _ = mp.restore(str(tmp_path / "seed"), 12)
    one, _ = mp.restore(str(runs / "one"), 12)
    assert mp.max_difference(other.params, one.params) > 1e3 * TOLERANCE


EXIT_AFTER_SAVE = """
import os, sys
from sde_gen.experiments import checkpoints
save = checkpoints.CheckpointStore.save
def save_then_die(self, which, step, *args):
    path = save(self, which, step, *args)
    if step == {step}:
        os._exit(9)  # every process, right after the step is sealed: as if all were killed
    return path
checkpoints.CheckpointStore.save = save_then_die
from sde_gen.launch import main
main()
"""


def test_killed_cluster_restarted_continues_bit_for_bit(runs, tmp_path):
    workdir = tmp_path / "killed"
    args = train_args(workdir)
    command = [sys.executable, "-c", EXIT_AFTER_SAVE.format(step=9)]
    with mp.Cluster(args, 2, 2, str(workdir), command=command) as cluster:
        codes = cluster.wait(300)
    assert codes[0] == 9 and codes[1] in (9, distributed.EXIT_LOST), codes
    assert not os.path.exists(workdir / "checkpoints" / "12")
    train(workdir, 2, 2)  # the same command again
    resumed, data_state = mp.restore(str(workdir), 12)
    straight, _ = mp.restore(str(runs / "two"), 12)
    assert_states_equal(resumed, straight)
    assert data_state == {"next_index": 12}


@pytest.mark.parametrize("before, after", [(2, 1), pytest.param(1, 2, marks=pytest.mark.slow)])
def test_resume_with_another_number_of_processes(runs, tmp_path, before, after):
    # 7 steps over `before` processes, then on to 12 over `after` (4 devices in all)
    workdir = tmp_path / "elastic"
    train(workdir, before, 4 // before, **{"training.n_iters": 7})
    train(workdir, after, 4 // after)
    resumed, data_state = mp.restore(str(workdir), 12)
    straight, _ = mp.restore(str(runs / "one"), 12)
    assert_states_close(resumed, straight)
    assert data_state == {"next_index": 12}  # the data position carried over


def test_a_two_process_eval_reports_what_one_process_does(runs, tmp_path):
    reports = {}
    for processes in (1, 2):
        workdir = tmp_path / f"eval{processes}"
        shutil.copytree(runs / "two", workdir)  # the same checkpoint for both
        args = [f"--config={workdir / 'config.json'}", "--mode=eval", f"--workdir={workdir}",
                *mp.overrides(EVAL)]  # fmt: skip
        mp.run(args, processes, 4 // processes, f"{workdir}.eval")
        (name,) = [f for f in os.listdir(workdir / "eval") if f.startswith("report_")]
        with open(workdir / "eval" / name) as f:
            reports[processes] = json.load(f)
    one, two = reports[1], reports[2]
    timing = {"seconds", "sampling_seconds", "bpd_seconds", "samples_folder"}
    assert one.keys() == two.keys()
    assert {k for k in one if one[k] != two[k]} <= timing, {
        k: (one[k], two[k]) for k in one if k not in timing and one[k] != two[k]
    }
    assert "data_fid" in one and "nll_bits_per_dim" in one and one["num_samples"] == 64


def test_one_epoch_across_processes_sees_every_example_once(monkeypatch):
    n, batch, processes = 96, 12, 3  # 8 global batches an epoch, 4 rows per process
    source = data._ArraySource(np.arange(n, dtype=np.float32)[:, None])
    monkeypatch.setattr(data, "_open", lambda name, split, data_dir: (source, None, None))
    monkeypatch.setattr(data.jax, "process_count", lambda: processes)
    rows = {}
    for p in range(processes):
        monkeypatch.setattr(data.jax, "process_index", lambda p=p: p)
        it, _ = data.get_dataset("gmm", "train", batch, num_devices=2, num_epochs=2, seed=3)
        rows[p] = [b["x"].reshape(-1) for b in it]
        assert len(rows[p]) == 2 * n // batch
    steps = [np.concatenate([rows[p][s] for p in range(processes)]) for s in range(2 * n // batch)]
    for epoch in (0, 1):
        seen = np.concatenate(steps[epoch * 8 : (epoch + 1) * 8])
        np.testing.assert_array_equal(np.sort(seen), np.arange(n))  # each example once
    # and the global stream is the one a single process reads
    monkeypatch.setattr(data.jax, "process_count", lambda: 1)
    monkeypatch.setattr(data.jax, "process_index", lambda: 0)
    it, _ = data.get_dataset("gmm", "train", batch, num_devices=2, num_epochs=2, seed=3)
    np.testing.assert_array_equal(
        np.concatenate(steps), np.concatenate([b["x"].reshape(-1) for b in it])
    )


@pytest.mark.parametrize("victim", [1, 0])
def test_losing_a_process_stops_the_other_within_a_minute(tmp_path, victim):
    workdir = tmp_path / "lost"
    args = train_args(workdir, **{
        "training.n_iters": 10**6, "training.log_freq": 20, "training.snapshot_freq": 10**6,
        "training.snapshot_freq_for_preemption": 10**6,
    })  # fmt: skip
    with mp.Cluster(args, 2, 2, str(workdir)) as cluster:
        deadline = time.monotonic() + 300
        while not os.path.exists(workdir / "metrics.jsonl"):  # training is under way
            assert time.monotonic() < deadline and all(p.poll() is None for p in cluster.procs)
            time.sleep(0.5)
        os.kill(cluster.procs[victim].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        survivor = 1 - victim
        try:
            code = cluster.procs[survivor].wait(90)
        except Exception:
            code = None
        waited = time.monotonic() - killed_at
        log = cluster.log(survivor)
    assert code not in (None, 0), log[-2000:]
    assert waited < 60, waited
    errors = "\n".join(line for line in log.splitlines() if "rror" in line or "FATAL" in line)
    if victim == 0:
        # The coordinator: the runtime stops the other at once, by whichever notices first:
        # the coordination service's error poll, or (when the survivor was inside an
        # all-reduce, seen once under a loaded CI run) gloo's transport, an abort.
        stops = (
            "JAX distributed service detected fatal errors",
            "Connection closed by peer",
            "Fatal Python error: Aborted",
        )
        assert any(s in log for s in stops), errors[-3000:] or log[-3000:]
    else:
        assert f"lost process {victim} of 2" in log, log[-2000:]


@pytest.mark.parametrize(
    "flags, message",
    [
        (dict(coordinator_address="localhost:1234"), "missing --num_processes, --process_id"),
        (dict(coordinator_address="localhost", num_processes=2, process_id=0), "not HOST:PORT"),
        (dict(coordinator_address="h:1", num_processes=2, process_id=2), r"must lie in \[0, 1\]"),
        (dict(coordinator_address="h:1", num_processes=0, process_id=0), "at least 1"),
    ],
)
def test_bad_multi_process_flags_are_refused_in_one_line(flags, message):
    args = {"coordinator_address": None, "num_processes": None, "process_id": None, **flags}
    with pytest.raises(distributed.DistributedSetupError, match=message):
        distributed.check_flags(**args)
