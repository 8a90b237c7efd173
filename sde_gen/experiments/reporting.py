"""What a run shows and leaves behind: progress lines with rate and ETA, metrics as JSON
lines and TensorBoard events, the loss curve, JSON reports."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import numpy as np
from absl import logging

from ..plotting import save_curve

Log = Callable[[str], None]


def format_seconds(seconds: float) -> str:
    """`1h02m03s` / `2m03s`; "?" when unknown."""
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Logs `what: done/total  rate/s  ETA` for long work (sampling, likelihoods)."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.start = what, total, time.perf_counter()

    def __call__(self, done: int) -> None:
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        eta = format_seconds((self.total - done) / rate) if rate > 0 else "?"
        logging.info("%s: %d/%d  %.3g/s  ETA %s", self.what, done, self.total, rate, eta)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def _parse_metrics(path: str) -> tuple[list[dict], bytes, bool]:
    """(records, bytes of the good lines, whether a torn last line was dropped)."""
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    records, good, torn = [], [], False
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if all(not rest.strip() for rest in lines[i + 1 :]):
                torn = True  # the last line: a write cut short
                break
            raise ValueError(f"{path}:{i + 1}: not a metrics record ({e})") from None
        records.append(record)
        good.append(line + b"\n")
    return records, b"".join(good), torn


def read_metrics(path: str, *, log: Log = logging.warning) -> list[dict]:
    """The records of a `metrics.jsonl` file; a torn last line (a kill during a write) is
    left out with a warning. Any other unreadable line raises `ValueError` naming it."""
    records, _, torn = _parse_metrics(path)
    if torn:
        log(f"{path}: ignoring a torn last line")
    return records


def repair_metrics(path: str, *, log: Log = logging.warning) -> bool:
    """Drop a torn last line from a `metrics.jsonl` file (rewritten atomically, with a
    warning); returns whether the file was changed. A missing file is left alone."""
    if not os.path.exists(path):
        return False
    with open(path, "rb") as f:
        raw = f.read()
    _, good, torn = _parse_metrics(path)
    if not torn and good == raw:
        return False
    if torn:
        log(f"{path}: dropped a torn last line (a write cut short)")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(good)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return True


class MetricsWriter:
    """Metrics as JSON lines (`metrics.jsonl`) and TensorBoard events (`tensorboard/`).

    On resume from step s, lines after s (written before a crash, then replayed) and a torn
    last line are dropped, so that the file holds each step once."""

    def __init__(self, workdir: str, resume_step: int, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not enabled:
            return
        if os.path.exists(self.path):
            repair_metrics(self.path)
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
            os.replace(tmp, self.path)
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # optional: JSON lines are always written
            SummaryWriter = None
        if SummaryWriter is not None:
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        values = {k: v if np.isfinite(v) else None for k, v in values.items()}  # JSON null
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **values}) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if v is not None:
                    self._tb.add_scalar(f"train/{k}", v, int(step))

    def image(self, step: int, tag: str, image) -> None:
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, image, int(step), dataformats="HWC")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def save_loss_curve(workdir: str, metrics_path: str) -> None:
    """`loss.png`: the training loss against the step."""
    if not os.path.exists(metrics_path):
        return
    records = read_metrics(metrics_path)
    if len(records) >= 2:
        steps = [r["step"] for r in records]
        losses = [r["loss"] for r in records]
        save_curve(os.path.join(workdir, "loss.png"), steps, {"training loss": losses})


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically (a temporary file renamed into place)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_report(path: str, report: dict) -> str:
    """Write a JSON report atomically and log it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)
    logging.info("%s -> %s", json.dumps(report)[:2000], path)
    return path
