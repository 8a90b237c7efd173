"""Checkpoints that cannot lie: the one place that saves and restores a training run.

A workdir holds two directories of checkpoints, `checkpoints/` (the last `max_to_keep`
snapshots) and `checkpoints-meta/` (the one latest preemption checkpoint). Each step is an
orbax checkpoint directory named by its step number::

    checkpoints/300/
      state/       the host train state (orbax StandardSave: OCDBT / tensorstore files)
      data/        the input pipeline's iterator state (orbax JsonSave)
      checksums/   sha256 of every array leaf (by pytree path, with dtype and shape) and of
                   the canonical JSON of the data state (orbax JsonSave)
      _CHECKPOINT_METADATA, commit_success.txt   orbax's own bookkeeping
      _SEAL.json   sha256 of every file above; written last

Orbax writes the three items into a temporary directory and renames it when done, so
they are committed together. That rename alone does not protect against what happens to
the files later (a flipped bit, a truncated copy, a file from another step), nor does it
cover orbax's bookkeeping files, which orbax never checks. So orbax saves under a
temporary name (`<step>.orbax-checkpoint-tmp-unsealed`), every file is then hashed (and
flushed to disk) into `_SEAL.json`, and one last rename gives the step its name: a step
directory is complete exactly when it exists under its number, and it is intact exactly
when its seal verifies. On restore the seal, every file, every restored array and the
data state are checked before anything is returned; a corrupt step raises
`CorruptCheckpointError` naming its directory, and `restore_latest` falls back to the
newest step that verifies.

A state with a non-finite leaf is never written (`NonFiniteStateError`). Saves are
synchronous: a full disk or an interrupt surfaces at once, after the step's partial files
are removed, and the previous checkpoint stays the latest. Old steps are deleted seal
first, so a reader (evaluation while training runs) sees a step either complete or gone;
a step that disappears while being read is skipped, never reported as corrupt.

`WorkdirLock` keeps two trainings out of one workdir; `read_metrics` and `repair_metrics`
read a `metrics.jsonl` whose last line was torn by a kill.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from .. import distributed
from .._files import sha256_of_file

SNAPSHOTS, PREEMPTION = "checkpoints", "checkpoints-meta"
SEAL = "_SEAL.json"
ITEMS = ("state", "data", "checksums")
FORMAT = 1  # of the seal and of the checksums item
LOCK_FILE = "lock"

_STEP_NAME = re.compile(r"(0|[1-9][0-9]*)")
_ORBAX_TMP = ".orbax-checkpoint-tmp"  # orbax's suffix for a step still being written
_MAX_REASON = 400  # characters of a wrapped error's message kept in ours

Log = Callable[[str], Any]


# -- errors ----------------------------------------------------------------------------


class CheckpointError(Exception):
    """Base of the errors of this module. `path` is the file or directory concerned."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(_one_line(message))
        self.path = path


class NonFiniteStateError(CheckpointError, ValueError):
    """`save` refused a state with a NaN or infinite leaf (parameters, EMA or optimizer
    state); nothing was written. `leaves` are the pytree paths of the non-finite leaves."""

    def __init__(self, message: str, path: str, leaves: list[str]):
        super().__init__(message, path)
        self.leaves = leaves


class CheckpointSaveError(CheckpointError):
    """Writing a step failed (disk full, I/O error, ...). Its partial files were removed and
    the previous checkpoint is still the latest. The cause is chained (`__cause__`)."""


class CorruptCheckpointError(CheckpointError):
    """A step directory is incomplete or damaged: missing, extra, unreadable or modified
    files, a checksum or step mismatch, non-finite values. `reason` says which."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"corrupt checkpoint {path}: {reason}", path)
        self.reason = _one_line(reason)


class CheckpointMismatchError(CheckpointError, ValueError):
    """An intact checkpoint does not fit the state asked for: the config's network (or
    optimizer) differs from the one that wrote it. Falling back would not help."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """No directory for the step asked for, or it was deleted while being read (old steps
    deleted by a training that is still running)."""


class NoValidCheckpointError(CheckpointError):
    """Checkpoints exist but none verifies. `tried` maps each directory to its reason."""

    def __init__(self, message: str, path: str, tried: dict[str, str]):
        super().__init__(message, path)
        self.tried = tried


class WorkdirLockedError(RuntimeError):
    """Another live process holds the workdir's lock. `holder` is the lock file's record
    (`pid`, `host`, `since`), where it could be read."""

    def __init__(self, message: str, path: str, holder: dict | None):
        super().__init__(_one_line(message))
        self.path = path
        self.holder = holder


# -- the store --------------------------------------------------------------------------


class _Candidate(NamedTuple):
    step: int
    path: str


class CheckpointStore:
    """The checkpoints of one workdir: verified save, restore and fall-back.

    Args:
      workdir: the run's directory (`checkpoints/` and `checkpoints-meta/` below it).
      max_to_keep: snapshots kept in `checkpoints/`; `checkpoints-meta/` keeps one.
      read_only: for evaluation or sampling while a training may be writing: creates,
        deletes and cleans up nothing, and `save` is refused.
      log: where warnings go (skipped corrupt steps, removed leftovers).

    A writable store assumes it is the only writer (hold a `WorkdirLock`): on creation it
    removes orbax temporary directories left by a killed save.

    In a multi-process run every process holds a store of the same workdir (a filesystem
    they share) and calls `save` and `restore_latest` together: orbax's multi-process
    protocol writes each step (process 0 writes the replicated host state and commits),
    process 0 alone seals, renames, prunes and cleans up, and the others wait until the
    step is sealed; `restore_latest` restores the step process 0 chose and verified.
    """

    def __init__(
        self,
        workdir: str,
        max_to_keep: int = 5,
        *,
        read_only: bool = False,
        log: Log = logging.warning,
    ):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be at least 1; got {max_to_keep}")
        self.workdir = os.path.abspath(workdir)
        self.max_to_keep = int(max_to_keep)
        self.read_only = read_only
        self._log = log
        self._dirs = {
            "snapshot": os.path.join(self.workdir, SNAPSHOTS),
            "preemption": os.path.join(self.workdir, PREEMPTION),
        }
        self._checkpointer = None
        self._main = distributed.is_main()
        if not read_only and self._main:
            for d in self._dirs.values():
                os.makedirs(d, exist_ok=True)
                for name in _listdir(d):
                    if _ORBAX_TMP in name:
                        log(f"removing the unfinished save {os.path.join(d, name)}")
                        _rmtree(os.path.join(d, name))

    # listing

    def _candidates(self) -> list[_Candidate]:
        """Every step directory, sealed or not, newest first (snapshots before preemption
        at one step). Temporary and set-aside directories are not steps."""
        found = []
        for order, d in enumerate(self._dirs.values()):
            for name in _listdir(d):
                path = os.path.join(d, name)
                if _STEP_NAME.fullmatch(name) and os.path.isdir(path):
                    found.append((-int(name), order, _Candidate(int(name), path)))
        return [c for *_, c in sorted(found)]

    def has_checkpoints(self) -> bool:
        """Whether the workdir holds any step directory, complete or not."""
        return bool(self._candidates())

    def steps(self) -> list[int]:
        """The complete (sealed) steps of both directories, ascending."""
        sealed = {c.step for c in self._candidates() if os.path.exists(_seal_path(c.path))}
        return sorted(sealed)

    def latest_step(self) -> int | None:
        """The newest complete step, or None. (Complete is not verified: `restore` checks.)"""
        steps = self.steps()
        return steps[-1] if steps else None

    # saving

    def save(
        self,
        which: Literal["snapshot", "preemption"],
        step: int,
        state: Any,
        data_state: dict,
    ) -> str:
        """Write `state` (any pytree; device arrays are fetched to the host) and the JSON
        `data_state` as step `step` of the snapshots or the preemption checkpoint; returns
        the step directory. Raises `NonFiniteStateError` (nothing written) or
        `CheckpointSaveError` (partial files removed; previous checkpoint kept)."""
        if self.read_only:
            raise CheckpointSaveError(
                f"cannot save step {step}: the checkpoint store of {self.workdir} is read-only",
                self.workdir,
            )
        if which not in self._dirs:
            raise ValueError(f"unknown checkpoint kind {which!r}; choose snapshot or preemption")
        step = int(step)
        directory = self._dirs[which]
        path = os.path.join(directory, str(step))
        host_state = jax.device_get(state)
        leaves = _leaves(host_state)
        bad = [p for p, x in leaves if not _finite(x)]
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise NonFiniteStateError(
                f"refusing to save step {step} to {path}: non-finite values in {shown}; nothing "
                "was written, the last checkpoint is kept",
                path,
                bad,
            )
        try:
            data_json = json.loads(json.dumps(data_state, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise ValueError(f"data state of step {step} is not plain JSON: {e}") from e
        checksums = {
            "format": FORMAT,
            "step": step,
            "arrays": {p: _array_record(x) for p, x in leaves},
            "data_sha256": _sha256(_canonical_json(data_json)),
        }
        if os.path.lexists(path) and self._main:
            # A step written again after a fall-back from a damaged later one.
            aside = f"{path}.old-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            self._log(f"step directory {path} exists (not a verified checkpoint); moved to {aside}")
            os.rename(path, aside)
        previous = self.latest_step()
        try:
            import orbax.checkpoint as ocp

            if self._checkpointer is None:
                self._checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
            # orbax commits the items together by renaming its temporary directory to
            # `staging` (still a temporary name); sealed there, the step appears under its
            # own name by one more rename, so a reader never sees it unsealed.
            staging = os.path.join(directory, f"{step}{_ORBAX_TMP}-unsealed")
            self._checkpointer.save(
                staging,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(host_state),
                    data=ocp.args.JsonSave(data_json),
                    checksums=ocp.args.JsonSave(checksums),
                ),
            )
            if self._main:
                _write_seal(staging, step)
                os.rename(staging, path)
                _fsync_dir(directory)
            distributed.barrier("checkpoint-sealed")
        except BaseException as e:
            _await_orbax_writers()
            if self._main:
                _remove_partial(directory, step)
            if not isinstance(e, Exception):  # KeyboardInterrupt, SystemExit
                raise
            kept = f"step {previous}" if previous is not None else "none"
            raise CheckpointSaveError(
                f"could not save step {step} to {path}: {_describe(e)}; its partial files were "
                f"removed, the latest checkpoint is still {kept}",
                path,
            ) from e
        if self._main:
            self._prune(directory, self.max_to_keep if which == "snapshot" else 1)
        return path

    def _prune(self, directory: str, keep: int) -> None:
        sealed = sorted(
            (int(n) for n in _listdir(directory)
             if _STEP_NAME.fullmatch(n) and os.path.exists(_seal_path(os.path.join(directory, n)))),
            reverse=True,
        )  # fmt: skip
        for step in sealed[keep:]:
            path = os.path.join(directory, str(step))
            _remove(_seal_path(path))  # first: readers now see the step as gone
            _rmtree(path)

    # restoring

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """The verified `(state, data_state)` of step `step`, shaped like `abstract_state`
        (a state of the same structure, or its `jax.ShapeDtypeStruct`s); host arrays.

        Raises `CorruptCheckpointError`, `CheckpointMismatchError` (the state asked for
        has other parameters or shapes), or `MissingCheckpointError`."""
        paths = [c.path for c in self._candidates() if c.step == int(step)]
        if not paths:
            raise MissingCheckpointError(
                f"no checkpoint for step {step} in {self.workdir}", self.workdir
            )
        errors = []
        for path in paths:
            try:
                return self._restore_path(path, int(step), abstract_state)
            except (CorruptCheckpointError, MissingCheckpointError) as e:
                errors.append(e)
        corrupt = [e for e in errors if isinstance(e, CorruptCheckpointError)]
        raise (corrupt or errors)[0]

    def restore_latest(
        self, abstract_state: Any, log: Log | None = None
    ) -> tuple[int, Any, dict] | None:
        """`(step, state, data_state)` of the newest step that verifies, or None if the
        workdir has no checkpoint at all. Each corrupt step is reported to `log` by path
        and skipped; a step deleted while being read is skipped silently and the steps
        listed again. Raises `NoValidCheckpointError` if none verifies, and
        `CheckpointMismatchError` at once if an intact one does not fit `abstract_state`.
        In a multi-process run process 0 chooses (and says so), the others restore its step."""
        if jax.process_count() > 1:
            chosen = self._restore_latest(abstract_state, log) if self._main else None
            step = distributed.broadcast(
                "checkpoint-restore", None if chosen is None else chosen[0]
            )
            if self._main or step is None:
                return chosen
            return (step, *self.restore(step, abstract_state))
        return self._restore_latest(abstract_state, log)

    def _restore_latest(self, abstract_state: Any, log: Log | None) -> tuple[int, Any, dict] | None:
        log = self._log if log is None else log
        tried: dict[str, str] = {}
        while True:
            remaining = [c for c in self._candidates() if c.path not in tried]
            if not remaining:
                corrupt = {p: r for p, r in tried.items() if r != _GONE}
                if not corrupt:
                    return None
                listed = "; ".join(f"{p} ({r})" for p, r in corrupt.items())
                raise NoValidCheckpointError(
                    f"no valid checkpoint in {self.workdir}: tried {listed}. Restore the "
                    "workdir from a copy, or start afresh in another workdir",
                    self.workdir,
                    corrupt,
                )
            candidate = remaining[0]
            try:
                state, data = self._restore_path(candidate.path, candidate.step, abstract_state)
            except MissingCheckpointError:
                tried[candidate.path] = _GONE
                continue
            except CorruptCheckpointError as e:
                tried[candidate.path] = e.reason
                older = [c for c in remaining[1:]]
                then = (
                    f"falling back to step {older[0].step}" if older
                    else "no older checkpoint to fall back to"
                )  # fmt: skip
                log(f"{e}; {then}")
                continue
            return candidate.step, state, data

    def _restore_path(self, path: str, step: int, abstract_state: Any) -> tuple[Any, dict]:
        if not os.path.isdir(path):
            raise MissingCheckpointError(f"checkpoint {path} does not exist", path)
        sealed = os.path.exists(_seal_path(path))
        try:
            return _verified_restore(path, step, abstract_state)
        except Exception as e:
            if isinstance(e, CheckpointMismatchError):
                raise
            if (sealed and not os.path.exists(_seal_path(path))) or not os.path.isdir(path):
                raise MissingCheckpointError(
                    f"checkpoint {path} was deleted while being read", path
                ) from e
            if isinstance(e, CorruptCheckpointError):
                raise
            raise CorruptCheckpointError(path, _describe(e)) from e


_GONE = "deleted while being read"


def _verified_restore(path: str, step: int, abstract_state: Any) -> tuple[Any, dict]:
    _check_seal(path, step)
    checksums = _read_checksums(path, step)
    records = checksums["arrays"]
    wanted = _leaves(abstract_state)
    _check_fits(path, records, wanted)

    import orbax.checkpoint as ocp

    try:
        # each process reads on its own: orbax's restore ends in a barrier over the
        # processes it is told of, and the processes of a run do not restore together
        # (process 0 verifies and chooses first)
        me = jax.process_index()
        alone = ocp.options.MultiprocessingOptions(
            primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"restore-{me}"
        )
        checkpointer = ocp.Checkpointer(
            ocp.CompositeCheckpointHandler(), multiprocessing_options=alone
        )
        restored = checkpointer.restore(
            path,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
            ),
        )
        # host arrays: the restored ones are committed to one device, which pmap would
        # refuse to re-shard
        state, data = jax.device_get(restored["state"]), restored["data"]
    except Exception as e:
        raise CorruptCheckpointError(path, f"orbax could not read it: {_describe(e)}") from e

    got = _leaves(state)
    if [p for p, _ in got] != [p for p, _ in wanted]:
        raise CorruptCheckpointError(path, "the restored state has another structure")
    for p, x in got:
        if _array_record(x) != records[p]:
            raise CorruptCheckpointError(
                path, f"{p} does not match its checksum (restored values differ from the saved)"
            )
        if not _finite(x):
            raise CorruptCheckpointError(path, f"{p} holds non-finite values")
    if _sha256(_canonical_json(data)) != checksums["data_sha256"]:
        raise CorruptCheckpointError(
            path, "the data iterator state does not match its checksum (from another step?)"
        )
    saved_step = getattr(state, "step", None)
    if saved_step is not None and np.ndim(saved_step) == 0 and int(saved_step) != step:
        raise CorruptCheckpointError(path, f"the state's step is {int(saved_step)}, not {step}")
    return state, data


def _check_fits(path: str, records: dict, wanted: list[tuple[str, Any]]) -> None:
    """The checkpoint's leaves against the state asked for: same paths, shapes, dtypes."""
    names = [p for p, _ in wanted]
    for p, leaf in wanted:
        if p not in records:
            raise CheckpointMismatchError(
                f"checkpoint {path} does not fit this config: {p} is not in the checkpoint "
                "(the config's network or optimizer differs from the one that wrote it)",
                path,
            )
        shape, dtype = tuple(np.shape(leaf)), _dtype(leaf)
        saved_shape, saved_dtype = tuple(records[p]["shape"]), records[p]["dtype"]
        if shape != saved_shape or dtype != saved_dtype:
            raise CheckpointMismatchError(
                f"checkpoint {path} does not fit this config: {p} is {saved_dtype}"
                f"{list(saved_shape)} in the checkpoint but {dtype}{list(shape)} in this config "
                "(the config's network differs from the one that wrote it)",
                path,
            )
    extra = sorted(set(records) - set(names))
    if extra:
        raise CheckpointMismatchError(
            f"checkpoint {path} does not fit this config: it has {extra[0]}"
            f"{f' and {len(extra) - 1} more' if len(extra) > 1 else ''}, which this config's "
            "state lacks (the config's network or optimizer differs from the one that wrote it)",
            path,
        )


def _read_checksums(path: str, step: int) -> dict:
    file = os.path.join(path, "checksums", "metadata")
    try:
        with open(file, "rb") as f:
            checksums = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise CorruptCheckpointError(path, f"unreadable checksums: {_describe(e)}") from e
    if (
        not isinstance(checksums, dict)
        or set(checksums) != {"format", "step", "arrays", "data_sha256"}
        or not isinstance(checksums["arrays"], dict)
    ):
        raise CorruptCheckpointError(path, "the checksums file is not in the expected form")
    if checksums["format"] != FORMAT:
        raise CorruptCheckpointError(path, f"unknown checksums format {checksums['format']!r}")
    if checksums["step"] != step:
        raise CorruptCheckpointError(
            path, f"the checksums are those of step {checksums['step']}, not {step}"
        )
    return checksums


# -- the seal ---------------------------------------------------------------------------


def _seal_path(step_dir: str) -> str:
    return os.path.join(step_dir, SEAL)


def _files(step_dir: str) -> list[str]:
    """Every file below `step_dir` but the seal, as sorted '/'-separated relative paths."""
    out = []
    for root, dirs, names in os.walk(step_dir):
        dirs.sort()
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), step_dir).replace(os.sep, "/")
            if rel != SEAL and not rel.startswith(SEAL + "."):
                out.append(rel)
    return sorted(out)


def _write_seal(step_dir: str, step: int) -> None:
    """Hash (and flush to disk) every file of a finished step, then write the seal: the
    step is complete from the rename of the seal on."""
    body = {
        "format": FORMAT,
        "step": step,
        "files": {
            rel: sha256_of_file(os.path.join(step_dir, rel), sync=True) for rel in _files(step_dir)
        },
    }
    body["sha256"] = _sha256(_canonical_json(body))
    tmp = _seal_path(step_dir) + ".tmp"
    with open(tmp, "w") as f:
        f.write(_canonical_json(body))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, _seal_path(step_dir))
    _fsync_dir(step_dir)


def _check_seal(path: str, step: int) -> None:
    try:
        with open(_seal_path(path), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise CorruptCheckpointError(
            path,
            f"incomplete: no {SEAL} (a half-written step, or not written by a CheckpointStore)",
        ) from None
    except OSError as e:
        raise CorruptCheckpointError(path, f"unreadable {SEAL}: {_describe(e)}") from e
    try:
        seal = json.loads(raw)
        claimed = seal.pop("sha256")
        intact = (
            _sha256(_canonical_json(seal)) == claimed
            and set(seal) == {"format", "step", "files"}
            and isinstance(seal["files"], dict)
        )
    except (ValueError, AttributeError, KeyError, TypeError):
        intact = False
    if not intact:
        raise CorruptCheckpointError(path, f"{SEAL} is damaged")
    if seal["format"] != FORMAT:
        raise CorruptCheckpointError(path, f"unknown seal format {seal['format']!r}")
    if seal["step"] != step:
        raise CorruptCheckpointError(path, f"the directory holds step {seal['step']}, not {step}")
    present = _files(path)
    sealed = seal["files"]
    missing = sorted(set(sealed) - set(present))
    if missing:
        raise CorruptCheckpointError(path, f"missing file {missing[0]}")
    extra = sorted(set(present) - set(sealed))
    if extra:
        raise CorruptCheckpointError(path, f"unexpected file {extra[0]}")
    for rel in present:
        if sha256_of_file(os.path.join(path, rel)) != sealed[rel]:
            raise CorruptCheckpointError(path, f"{rel} was modified or damaged (sha256 mismatch)")
    for item in ITEMS:
        if not os.path.isdir(os.path.join(path, item)):
            raise CorruptCheckpointError(path, f"no item {item!r}")


# -- helpers ----------------------------------------------------------------------------


def _leaves(tree: Any) -> list[tuple[str, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(p), x) for p, x in flat]


def _dtype(leaf: Any) -> str:
    return str(np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype)


def _array_record(x: Any) -> dict:
    a = np.asarray(x)
    a = a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "sha256": _sha256(a.tobytes())}


def _finite(x: Any) -> bool:
    a = np.asarray(x)
    if not jnp.issubdtype(a.dtype, jnp.inexact):  # bfloat16 included
        return True
    return bool(np.isfinite(a.astype(np.float32) if a.dtype.itemsize < 4 else a).all())


def _sha256(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _canonical_json(x: Any) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _describe(e: BaseException) -> str:
    text = _one_line(str(e)) or "(no message)"
    if len(text) > _MAX_REASON:
        text = text[:_MAX_REASON] + "..."
    return f"{type(e).__name__}: {text}"


def _listdir(d: str) -> list[str]:
    try:
        return os.listdir(d)
    except FileNotFoundError:
        return []


def _remove(file: str) -> None:
    try:
        os.remove(file)
    except FileNotFoundError:
        pass


def _rmtree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _remove_partial(directory: str, step: int) -> None:
    """Whatever a failed save of `step` left: orbax's temporary directories (the step
    directory itself appears only by the last rename, complete)."""
    for name in _listdir(directory):
        if name.startswith(f"{step}{_ORBAX_TMP}"):
            _rmtree(os.path.join(directory, name))


def _await_orbax_writers(timeout: float = 60.0) -> None:
    """Wait for the write threads of a failed orbax save: when one item fails the others
    go on writing, and would recreate what `_remove_partial` removes."""
    try:
        from orbax.checkpoint._src.futures.future import _SignalingThread
    except ImportError:  # another orbax layout: its threads cannot be told apart
        return
    deadline = time.monotonic() + timeout
    for t in threading.enumerate():
        if isinstance(t, _SignalingThread) and t is not threading.current_thread():
            t.join(max(0.0, deadline - time.monotonic()))


def _fsync_dir(d: str) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the workdir lock -------------------------------------------------------------------


class WorkdirLock:
    """Keeps two trainings out of one workdir: `with WorkdirLock(workdir): ...`.

    The lock is an `fcntl.flock` on `<workdir>/lock`, which the OS releases when the holder
    dies however it dies; the file records the holder's PID, host and start time for the
    message of whoever is refused. A lock file left by a dead process on this host is taken
    over with a warning. One recorded by another host is refused (that host's process
    cannot be checked from here): delete the file if that run is known to be over.
    """

    def __init__(self, workdir: str, *, log: Log = logging.warning):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
        self._log = log
        self._fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this WorkdirLock")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise self._locked(_read_holder(self.path), "holds it") from None
            # The holder before us may have removed the file after we opened it: then our
            # lock is on a dead inode, and we try again on the current file.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            self._take_over(_read_holder(self.path))
        except BaseException:
            os.close(fd)
            raise
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def _take_over(self, holder: dict | None) -> None:
        """We hold the flock; a record left in the file is from a holder that is gone."""
        if not holder:
            return
        if holder.get("host") != socket.gethostname():
            raise self._locked(holder, "may still hold it (another host; cannot check)")
        pid = holder.get("pid")
        self._log(
            f"taking over the stale lock {self.path} of PID {pid} on {holder.get('host')} "
            f"(since {holder.get('since')}): that process no longer holds it"
            + ("" if not _alive(pid) else " (the PID is alive, reused by another process)")
        )

    def _locked(self, holder: dict | None, what: str) -> WorkdirLockedError:
        workdir = os.path.dirname(self.path)
        if holder:
            pid, host, since = (holder.get(k) for k in ("pid", "host", "since"))
            who = f"PID {pid} on host {host} since {since}"
        else:
            who = "another process (its record is not written yet)"
        return WorkdirLockedError(
            f"workdir {workdir} is in use: {who} {what} ({self.path}). Wait for that run to "
            "finish or stop it, or use another workdir; if it is known to be over, delete "
            f"{self.path}",
            self.path,
            holder,
        )

    def release(self) -> None:
        if self._fd is None:
            return
        _remove(self.path)  # while still held, so no one locks the old inode afterwards
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _read_holder(path: str) -> dict | None:
    try:
        with open(path) as f:
            holder = json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
