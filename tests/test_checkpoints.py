"""Verified checkpoints: every kind of damage is detected and fallen back from, bad states
are never written, failed saves leave nothing behind, readers never crash on a writer."""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sde_gen.experiments import checkpoints as ck
from sde_gen.experiments import reporting
from sde_gen.experiments.checkpoints import (
    CheckpointMismatchError,
    CheckpointSaveError,
    CheckpointStore,
    CorruptCheckpointError,
    MissingCheckpointError,
    NonFiniteStateError,
    NoValidCheckpointError,
    WorkdirLock,
    WorkdirLockedError,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class State(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any


def make_state(step: int, width: int = 4) -> State:
    rng = np.random.default_rng(step)
    params = {
        "dense": {
            "kernel": jnp.asarray(rng.normal(size=(3, width)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(width,)), jnp.float32),
        }
    }
    optimizer = optax.adam(1e-3)
    grads = jax.tree.map(lambda x: x + 1.0, params)
    _, opt_state = optimizer.update(grads, optimizer.init(params), params)
    ema = jax.tree.map(lambda x: 0.5 * x, params)
    return State(jnp.asarray(step, jnp.int32), params, ema, opt_state)


def data_state(step: int) -> dict:
    return {"next_index": 8 * step, "epoch": step // 100, "name": "digits"}


def abstract(width: int = 4):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), make_state(0, width))


def save_steps(workdir, steps=(100, 200), **kw) -> CheckpointStore:
    store = CheckpointStore(str(workdir), 5, **kw)
    for s in steps:
        store.save("snapshot", s, make_state(s), data_state(s))
    return store


def assert_bit_identical(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (p, x), (_, y) in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, p
        assert x.tobytes() == y.tobytes(), p


def step_files(step_dir) -> list[str]:
    out = []
    for root, _, names in os.walk(step_dir):
        out += [os.path.relpath(os.path.join(root, n), step_dir) for n in names]
    return sorted(out)


def tree_listing(path) -> list[tuple[str, int]]:
    """Every path below `path` with its modification time."""
    out = []
    for root, dirs, names in os.walk(path):
        for n in dirs + names:
            full = os.path.join(root, n)
            out.append((os.path.relpath(full, path), os.stat(full).st_mtime_ns))
    return sorted(out)


def step_dir(workdir, step, sub=ck.SNAPSHOTS):
    return os.path.join(str(workdir), sub, str(step))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A workdir with good steps 100 and 200, copied by tests that damage it."""
    workdir = tmp_path_factory.mktemp("template")
    save_steps(workdir)
    return workdir


@pytest.fixture
def workdir(template, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(template, dst)
    return dst


def assert_falls_back_to_100(workdir, damaged=None):
    damaged = damaged or step_dir(workdir, 200)
    store = CheckpointStore(str(workdir), 5, read_only=True)
    with pytest.raises(CorruptCheckpointError) as info:
        store.restore(200, abstract())
    assert damaged in str(info.value) and "\n" not in str(info.value)
    messages = []
    step, state, data = store.restore_latest(abstract(), log=messages.append)
    assert step == 100 and data == data_state(100)
    assert_bit_identical(state, jax.device_get(make_state(100)))
    assert len(messages) == 1
    assert messages[0].startswith(f"corrupt checkpoint {damaged}: ")
    assert messages[0].endswith("; falling back to step 100")
    return info.value


# -- roundtrip and layout ---------------------------------------------------------------


def test_roundtrip_is_bit_identical_and_each_step_holds_checksums_and_seal(tmp_path):
    store = save_steps(tmp_path, steps=(100,))
    store.save("preemption", 150, make_state(150), data_state(150))
    assert store.steps() == [100, 150] and store.latest_step() == 150
    for step, sub in ((100, ck.SNAPSHOTS), (150, ck.PREEMPTION)):
        state, data = store.restore(step, abstract())
        assert_bit_identical(state, jax.device_get(make_state(step)))
        assert data == data_state(step)
        path = step_dir(tmp_path, step, sub)
        assert {"state", "data", "checksums", ck.SEAL} <= set(os.listdir(path))
        with open(os.path.join(path, "checksums", "metadata")) as f:
            checksums = json.load(f)
        assert checksums["format"] == 1 and checksums["step"] == step
        assert checksums["arrays"][".params['dense']['kernel']"]["shape"] == [3, 4]
        assert checksums["arrays"][".opt_state[0].mu['dense']['bias']"]["dtype"] == "float32"
        assert len(checksums["arrays"]) == len(jax.tree.leaves(make_state(0)))
    # restoring into a concrete state works as into the abstract one
    state, _ = store.restore(100, make_state(0))
    assert_bit_identical(state, jax.device_get(make_state(100)))
    assert store.restore_latest(abstract())[0] == 150


def test_snapshots_keep_the_last_k_and_preemption_keeps_one(tmp_path):
    store = CheckpointStore(str(tmp_path), 2)
    for s in (1, 2, 3, 4):
        store.save("snapshot", s, make_state(s), data_state(s))
        store.save("preemption", s * 10, make_state(s * 10), data_state(s * 10))
    assert sorted(os.listdir(tmp_path / ck.SNAPSHOTS)) == ["3", "4"]
    assert os.listdir(tmp_path / ck.PREEMPTION) == ["40"]
    assert store.steps() == [3, 4, 40]


def test_empty_workdir_has_no_checkpoint(tmp_path):
    store = CheckpointStore(str(tmp_path / "new"), 3, read_only=True)
    assert store.restore_latest(abstract()) is None
    assert store.steps() == [] and store.latest_step() is None
    assert not os.path.exists(tmp_path / "new")  # read-only creates nothing
    with pytest.raises(MissingCheckpointError, match="no checkpoint for step 5"):
        store.restore(5, abstract())


# -- damage -----------------------------------------------------------------------------


def test_a_flipped_byte_in_any_file_of_a_step_is_detected_and_fallen_back_from(
    template, tmp_path
):
    files = step_files(step_dir(template, 200))
    kinds = {f.split(os.sep)[0] for f in files}
    assert {"state", "data", "checksums", "_CHECKPOINT_METADATA", ck.SEAL} <= kinds
    assert any("ocdbt.process_0/d/" in f for f in files)  # array data files
    for i, rel in enumerate(files):
        workdir = tmp_path / f"flip{i}"
        shutil.copytree(template, workdir)
        file = os.path.join(step_dir(workdir, 200), rel)
        with open(file, "r+b") as f:
            raw = bytearray(f.read())
            raw[len(raw) // 2] ^= 0x01
            f.seek(0)
            f.write(raw)
        assert_falls_back_to_100(workdir)


def test_no_good_checkpoint_left_raises_a_clear_error(workdir):
    for step in (100, 200):
        with open(os.path.join(step_dir(workdir, step), "data", "metadata"), "a") as f:
            f.write(" ")
    store = CheckpointStore(str(workdir), 5, read_only=True)
    messages = []
    with pytest.raises(NoValidCheckpointError) as info:
        store.restore_latest(abstract(), log=messages.append)
    message = str(info.value)
    assert message.startswith(f"no valid checkpoint in {workdir}: tried ")
    for step in (200, 100):
        assert f"{step_dir(workdir, step)} (data/metadata was modified or damaged" in message
    assert "\n" not in message and set(info.value.tried) == {
        step_dir(workdir, 200), step_dir(workdir, 100)
    }
    assert messages[1].endswith("; no older checkpoint to fall back to")


def _largest_data_file(path):
    files = [f for f in step_files(path) if "/d/" in f]
    return os.path.join(path, max(files, key=lambda f: os.path.getsize(os.path.join(path, f))))


def test_truncated_file_is_detected(workdir):
    file = _largest_data_file(step_dir(workdir, 200))
    os.truncate(file, os.path.getsize(file) // 2)
    assert "was modified or damaged" in assert_falls_back_to_100(workdir).reason


def test_zero_filled_file_is_detected(workdir):
    file = _largest_data_file(step_dir(workdir, 200))
    with open(file, "r+b") as f:
        f.write(bytes(os.path.getsize(file)))
    assert "was modified or damaged" in assert_falls_back_to_100(workdir).reason


@pytest.mark.parametrize("rel", ["state/manifest.ocdbt", "_CHECKPOINT_METADATA", "data/metadata"])
def test_deleted_file_is_detected(workdir, rel):
    os.remove(os.path.join(step_dir(workdir, 200), rel))
    assert assert_falls_back_to_100(workdir).reason == f"missing file {rel}"


def test_deleted_seal_is_an_incomplete_step(workdir):
    os.remove(os.path.join(step_dir(workdir, 200), ck.SEAL))
    assert assert_falls_back_to_100(workdir).reason.startswith("incomplete: no _SEAL.json")
    assert CheckpointStore(str(workdir), read_only=True).steps() == [100]


def test_an_empty_step_directory_does_not_block(workdir):
    os.mkdir(step_dir(workdir, 300))
    store = CheckpointStore(str(workdir), 5, read_only=True)
    assert store.steps() == [100, 200]
    messages = []
    step, _, data = store.restore_latest(abstract(), log=messages.append)
    assert (step, data) == (200, data_state(200))
    assert messages == [
        f"corrupt checkpoint {step_dir(workdir, 300)}: incomplete: no _SEAL.json (a "
        "half-written step, or not written by a CheckpointStore); falling back to step 200"
    ]


def test_a_half_written_step_is_detected(workdir):
    half = step_dir(workdir, 300)
    shutil.copytree(step_dir(workdir, 200), half)
    for rel in step_files(half):
        if "/d/" in rel:
            os.remove(os.path.join(half, rel))
    store = CheckpointStore(str(workdir), 5, read_only=True)
    messages = []
    assert store.restore_latest(abstract(), log=messages.append)[0] == 200
    assert messages[0].startswith(f"corrupt checkpoint {half}: ")
    # a complete copy under another step number is caught too
    shutil.rmtree(half)
    shutil.copytree(step_dir(workdir, 200), half)
    messages = []
    assert store.restore_latest(abstract(), log=messages.append)[0] == 200
    assert messages[0].startswith(
        f"corrupt checkpoint {half}: the directory holds step 200, not 300"
    )


def test_a_data_state_swapped_in_from_another_step_is_detected(workdir):
    name = os.path.join("data", "metadata")
    src, dst = step_dir(workdir, 100), step_dir(workdir, 200)
    shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    reason = assert_falls_back_to_100(workdir).reason
    assert reason == "data/metadata was modified or damaged (sha256 mismatch)"


def test_content_checksums_catch_damage_done_before_the_seal(workdir):
    """A step resealed after damage (as if damaged before sealing) is still caught: by the
    checksums of the data state, and of the arrays."""
    path = step_dir(workdir, 200)
    name = os.path.join("data", "metadata")
    shutil.copy(os.path.join(step_dir(workdir, 100), name), os.path.join(path, name))
    ck._write_seal(path, 200)
    assert assert_falls_back_to_100(workdir).reason == (
        "the data iterator state does not match its checksum (from another step?)"
    )
    shutil.rmtree(workdir)
    save_steps(workdir, steps=(100,))
    store = CheckpointStore(str(workdir), 5)
    bad = make_state(200)
    bad = bad.replace(params=jax.tree.map(lambda x: x + 1.0, bad.params))
    store.save("snapshot", 200, bad, data_state(200))
    # put the good checksums of step 200 in the place of the ones of the altered state
    good = CheckpointStore(str(workdir / "good"), 5)
    good.save("snapshot", 200, make_state(200), data_state(200))
    name = os.path.join("checksums", "metadata")
    shutil.copy(os.path.join(step_dir(workdir / "good", 200), name), os.path.join(path, name))
    ck._write_seal(path, 200)
    reason = assert_falls_back_to_100(workdir).reason
    assert reason == (
        ".params['dense']['bias'] does not match its checksum "
        "(restored values differ from the saved)"
    )


def test_a_step_written_again_after_a_fall_back_replaces_the_damaged_one(workdir):
    damaged = step_dir(workdir, 200)
    os.remove(os.path.join(damaged, ck.SEAL))
    messages = []
    store = CheckpointStore(str(workdir), 5, log=messages.append)
    assert store.restore_latest(abstract(), log=lambda m: None)[0] == 100
    store.save("snapshot", 200, make_state(200), data_state(200))
    assert messages[0].startswith(f"step directory {damaged} exists (not a verified checkpoint)")
    assert store.restore_latest(abstract())[0] == 200
    assert [n for n in os.listdir(workdir / ck.SNAPSHOTS) if n.startswith("200.old-")]


# -- states that must not be written ----------------------------------------------------


@pytest.mark.parametrize("where", ["params", "ema_params", "opt_state"])
def test_a_non_finite_state_is_refused_and_nothing_written(workdir, where):
    state = make_state(300)
    part = jax.tree.map(lambda x: x.at[0].set(jnp.nan) if x.ndim else x, getattr(state, where))
    state = state.replace(**{where: part})
    store = CheckpointStore(str(workdir), 5)
    before = tree_listing(workdir)
    with pytest.raises(NonFiniteStateError) as info:
        store.save("snapshot", 300, state, data_state(300))
    message = str(info.value)
    assert message.startswith(
        f"refusing to save step 300 to {step_dir(workdir, 300)}: non-finite values in .{where}"
    )
    assert message.endswith("; nothing was written, the last checkpoint is kept")
    assert all(p.startswith(f".{where}") for p in info.value.leaves)
    expected = {"params": 2, "ema_params": 2, "opt_state": 4}[where]  # mu and nu
    assert len(info.value.leaves) == expected
    assert tree_listing(workdir) == before and store.latest_step() == 200


def test_a_network_shape_mismatch_names_the_parameter_and_both_shapes(workdir):
    store = CheckpointStore(str(workdir), 5, read_only=True)
    expected = (
        f"checkpoint {step_dir(workdir, 200)} does not fit this config: .params['dense']['bias'] "
        "is float32[4] in the checkpoint but float32[5] in this config (the config's network "
        "differs from the one that wrote it)"
    )
    with pytest.raises(CheckpointMismatchError) as info:
        store.restore(200, abstract(width=5))
    assert str(info.value) == expected
    messages = []
    with pytest.raises(CheckpointMismatchError) as info:
        store.restore_latest(abstract(width=5), log=messages.append)
    assert str(info.value) == expected and messages == []  # no fall-back: it would not help


# -- the lock ---------------------------------------------------------------------------


def _try_lock_in_subprocess(workdir):
    code = (
        "import sys\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from sde_gen.experiments.checkpoints import WorkdirLock, WorkdirLockedError\n"
        "try:\n"
        f"    WorkdirLock({str(workdir)!r}).acquire()\n"
        "except WorkdirLockedError as e:\n"
        "    print(e); sys.exit(3)\n"
        "print('acquired')\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )


def test_workdir_lock_refuses_a_second_holder_at_once(tmp_path):
    with WorkdirLock(str(tmp_path)) as lock:
        with open(lock.path) as f:
            record = json.load(f)
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        result = _try_lock_in_subprocess(tmp_path)
        assert result.returncode == 3, result.stderr
        message = result.stdout.strip()
        assert message.startswith(
            f"workdir {tmp_path} is in use: PID {os.getpid()} on host {socket.gethostname()} "
            f"since {record['since']} holds it"
        )
        assert "Wait for that run to finish or stop it, or use another workdir" in message
        with pytest.raises(WorkdirLockedError, match=f"PID {os.getpid()}"):
            WorkdirLock(str(tmp_path)).acquire()  # another open file in this process
    assert not os.path.exists(tmp_path / ck.LOCK_FILE)
    assert _try_lock_in_subprocess(tmp_path).stdout.strip() == "acquired"


def test_workdir_lock_takes_over_a_stale_lock_of_a_dead_process(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "since": "2024-01-01T00:00:00+00:00"}
    (tmp_path / ck.LOCK_FILE).write_text(json.dumps(stale))
    messages = []
    with WorkdirLock(str(tmp_path), log=messages.append) as lock:
        assert json.loads(open(lock.path).read())["pid"] == os.getpid()
    assert messages == [
        f"taking over the stale lock {tmp_path / ck.LOCK_FILE} of PID {dead.pid} on "
        f"{socket.gethostname()} (since 2024-01-01T00:00:00+00:00): that process no longer "
        "holds it"
    ]
    # one recorded by another host cannot be checked from here: refused
    stale["host"] = "elsewhere"
    (tmp_path / ck.LOCK_FILE).write_text(json.dumps(stale))
    with pytest.raises(WorkdirLockedError, match="on host elsewhere .* may still hold it"):
        WorkdirLock(str(tmp_path)).acquire()


# -- readers beside a writer ------------------------------------------------------------


def test_a_read_only_store_changes_nothing_and_sees_only_complete_steps(workdir):
    snapshots = workdir / ck.SNAPSHOTS
    os.mkdir(snapshots / "400.orbax-checkpoint-tmp")  # a save in progress
    (snapshots / "400.orbax-checkpoint-tmp" / "part").write_bytes(b"x")
    shutil.copytree(snapshots / "200", snapshots / "300")  # renamed, not yet sealed
    os.remove(snapshots / "300" / ck.SEAL)
    before = tree_listing(workdir)
    reader = CheckpointStore(str(workdir), 1, read_only=True)
    assert reader.steps() == [100, 200] and reader.latest_step() == 200
    assert reader.restore_latest(abstract(), log=lambda m: None)[0] == 200
    reader.restore(100, abstract())
    with pytest.raises(CheckpointSaveError, match="is read-only"):
        reader.save("snapshot", 500, make_state(500), data_state(500))
    assert tree_listing(workdir) == before
    # a writable store removes the unfinished save
    messages = []
    CheckpointStore(str(workdir), 5, log=messages.append)
    assert messages == [f"removing the unfinished save {snapshots / '400.orbax-checkpoint-tmp'}"]
    assert not os.path.exists(snapshots / "400.orbax-checkpoint-tmp")


def test_a_step_deleted_between_listing_and_restore_is_skipped(workdir, monkeypatch):
    reader = CheckpointStore(str(workdir), 5, read_only=True)
    original = ck._check_seal
    deleted = []

    def delete_then_check(path, step):
        if not deleted:  # the writer prunes the step the reader just listed
            deleted.append(path)
            os.remove(os.path.join(path, ck.SEAL))
            shutil.rmtree(path)
        return original(path, step)

    monkeypatch.setattr(ck, "_check_seal", delete_then_check)
    messages = []
    step, _, data = reader.restore_latest(abstract(), log=messages.append)
    assert deleted == [step_dir(workdir, 200)] and (step, data) == (100, data_state(100))
    assert messages == []  # gone is not corrupt
    deleted.clear()
    with pytest.raises(MissingCheckpointError, match="was deleted while being read"):
        reader.restore(100, abstract())


# A read that orbax abandons because the step was deleted under it can leave a tensorstore
# callback aimed at a closed event loop: "Exception ignored", not an error of the reader.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_reader_beside_a_running_training_never_crashes(tmp_path):
    CheckpointStore(str(tmp_path), 1).save("snapshot", 1, make_state(1), data_state(1))
    code = (
        "import sys\n"
        f"sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]\n"
        "from test_checkpoints import CheckpointStore, make_state, data_state\n"
        f"store = CheckpointStore({str(tmp_path)!r}, 1)\n"
        "for s in range(2, 40):\n"
        "    store.save('snapshot', s, make_state(s), data_state(s))\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    training = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    reader = CheckpointStore(str(tmp_path), 1, read_only=True)
    seen, messages = [], []
    try:
        while training.poll() is None:
            step, state, data = reader.restore_latest(abstract(), log=messages.append)
            assert data == data_state(step) and int(state.step) == step
            seen.append(step)
    finally:
        _, stderr = training.communicate(timeout=120)
    assert training.returncode == 0, stderr.decode()[-2000:]
    assert len(set(seen)) > 2 and seen == sorted(seen) and messages == []
    assert reader.restore_latest(abstract())[0] == 39


# -- failed saves -----------------------------------------------------------------------


def _assert_failed_save_left_nothing(workdir, before):
    assert tree_listing(workdir / ck.SNAPSHOTS) == before
    store = CheckpointStore(str(workdir), 5, read_only=True)
    assert store.latest_step() == 200
    step, state, _ = store.restore_latest(abstract())
    assert step == 200
    assert_bit_identical(state, jax.device_get(make_state(200)))


def test_disk_full_raises_at_once_and_leaves_nothing_behind(workdir, monkeypatch):
    def no_space(self, x, directory):
        raise OSError(errno.ENOSPC, "No space left on device", str(directory / "metadata"))

    from orbax.checkpoint._src.handlers import json_checkpoint_handler

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", no_space)
    store = CheckpointStore(str(workdir), 5)
    before = tree_listing(workdir / ck.SNAPSHOTS)
    with pytest.raises(CheckpointSaveError) as info:
        store.save("snapshot", 300, make_state(300), data_state(300))
    message = str(info.value)
    assert message.startswith(f"could not save step 300 to {step_dir(workdir, 300)}: ")
    assert "No space left on device" in message and "\n" not in message
    assert message.endswith(
        "its partial files were removed, the latest checkpoint is still step 200"
    )
    _assert_failed_save_left_nothing(workdir, before)


def test_an_interrupt_during_a_save_is_re_raised_after_cleaning_up(workdir, monkeypatch):
    def interrupted(path, step):
        raise KeyboardInterrupt

    monkeypatch.setattr(ck, "_write_seal", interrupted)  # after orbax's commit
    store = CheckpointStore(str(workdir), 5)
    before = tree_listing(workdir / ck.SNAPSHOTS)
    with pytest.raises(KeyboardInterrupt):
        store.save("snapshot", 300, make_state(300), data_state(300))
    _assert_failed_save_left_nothing(workdir, before)


def test_disk_full_on_a_small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        workdir = mnt / "run"
        save_steps(workdir, steps=(100, 200))
        with open(mnt / "filler", "wb", buffering=0) as f:  # fill the disk
            try:
                while True:
                    f.write(bytes(4096))
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
        store = CheckpointStore(str(workdir), 5)
        before = tree_listing(workdir / ck.SNAPSHOTS)
        with pytest.raises(CheckpointSaveError, match="could not save step 300 to .*its partial"):
            store.save("snapshot", 300, make_state(300), data_state(300))
        _assert_failed_save_left_nothing(workdir, before)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# -- metrics.jsonl ----------------------------------------------------------------------


def test_a_torn_last_metrics_line_is_tolerated_and_repaired(tmp_path):
    path = tmp_path / "metrics.jsonl"
    good = '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.25}\n'
    path.write_text(good + '{"step": 3, "lo')
    messages = []
    assert reporting.read_metrics(str(path), log=messages.append) == [
        {"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}
    ]
    assert messages == [f"{path}: ignoring a torn last line"]
    assert reporting.repair_metrics(str(path), log=messages.append) is True
    assert path.read_text() == good
    assert messages[1] == f"{path}: dropped a torn last line (a write cut short)"
    assert reporting.repair_metrics(str(path)) is False and path.read_text() == good
    # a complete record without its newline is kept
    path.write_text(good + '{"step": 3}')
    assert reporting.repair_metrics(str(path), log=messages.append) is True
    assert path.read_text() == good + '{"step": 3}\n' and len(messages) == 2
    # damage in the middle is not a torn line
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(ValueError, match=f"{path}:2: not a metrics record"):
        reporting.read_metrics(str(path))
