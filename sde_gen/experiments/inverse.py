"""Inverse problems of `--mode=sample`: inpainting and colorization of data images by
`sde_gen.sample_inpaint` / `sample_colorize` (the config's `sampling.impute_method`:
replacement, sequential Monte Carlo or reconstruction guidance, on the PC sampler's
predictor), with before/after grids and the error on the restored pixels."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from .. import plotting
from .._checks import choose
from ..sampling import sample_colorize, sample_inpaint
from .config import INPAINT_MASKS, TaskSettings
from .quality import cache_key
from .reporting import write_report


def task_mask(name: str, height: int, width: int, seed: int = 0) -> np.ndarray:
    """An `(H, W)` inpainting mask, 1 where pixels are known: "left_half" ... "bottom_half"
    (that half known), "center" (a centered square of half the size unknown), "random"
    (half of the pixels known, drawn with `seed`)."""
    choose("inpaint mask", name, dict.fromkeys(INPAINT_MASKS))
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    known = {
        "left_half": np.broadcast_to(cols < width // 2, (height, width)),
        "right_half": np.broadcast_to(cols >= width // 2, (height, width)),
        "top_half": np.broadcast_to(rows < height // 2, (height, width)),
        "bottom_half": np.broadcast_to(rows >= height // 2, (height, width)),
        "center": ~(
            (abs(rows - (height - 1) / 2) < height / 4) & (abs(cols - (width - 1) / 2) < width / 4)
        ),
        "random": np.random.default_rng(seed).random((height, width)) < 0.5,
    }[name]
    return known.astype(np.float32)


def solve_inverse_problem(
    task: TaskSettings,
    sde,
    score_fn,
    x: np.ndarray,
    data_range: tuple[float, float],
    folder: str,
    key: jax.Array,
    seed: int = 0,
    extra: dict | None = None,
) -> dict:
    """Degrade the images `x` (a mask of `task.mask`, or the channel mean), restore them with
    the task's imputation method and write `before_after.png` (rows of 8 in threes: the original,
    what the sampler sees, the result), `results.npz` and `report.json` (with `extra`, e.g.
    the checkpoint step, first) into `folder`."""
    os.makedirs(folder, exist_ok=True)
    low, high = data_range
    t0 = time.perf_counter()
    if task.task == "inpaint":
        mask = task_mask(task.mask, *x.shape[1:3], seed=seed)[None, :, :, None]
        result, nfe = sample_inpaint(key, sde, score_fn, jnp.asarray(x), mask, **_pc_options(task))
        observed = x * mask + 0.5 * (low + high) * (1 - mask)  # unknown pixels shown gray
        unknown = np.broadcast_to(1 - mask, x.shape)
    else:
        gray = x.mean(-1)
        result, nfe = sample_colorize(key, sde, score_fn, jnp.asarray(gray), **_pc_options(task))
        observed = np.repeat(gray[..., None], x.shape[-1], -1)
        unknown = np.ones_like(x)
    result = np.asarray(result)
    seconds = time.perf_counter() - t0
    rows = []
    for i in range(0, len(x), 8):
        rows += [x[i : i + 8], observed[i : i + 8], result[i : i + 8]]
    plotting.save_image_grid(
        os.path.join(folder, "before_after.png"), np.concatenate(rows), data_range,
        scale=max(1, 64 // x.shape[1]), cols=min(8, len(x)),
    )  # fmt: skip
    np.savez(os.path.join(folder, "results.npz"), original=x, observed=observed, result=result)
    report = {
        **(extra or {}),
        **task.describe(),
        "nfe": int(nfe),
        "mse_restored": float(np.sum((result - x) ** 2 * unknown) / np.sum(unknown)),
        "mse_observed_baseline": float(np.sum((observed - x) ** 2 * unknown) / np.sum(unknown)),
        "seconds": seconds,
    }
    write_report(os.path.join(folder, "report.json"), report)
    logging.info("%s of %d images in %.1fs -> %s", task.task, len(x), seconds, folder)
    return report


def _pc_options(task: TaskSettings) -> dict:
    s = task.sampler
    return dict(
        predictor=s.predictor, corrector=s.corrector, num_steps=s.num_steps, eps=s.eps,
        denoise=s.denoise, **task.impute_options(),
    )  # fmt: skip


def task_folder(workdir: str, step: int, task: TaskSettings, extra: dict) -> str:
    """`eval/<task>_<step>_<hash>`: one folder per task, checkpoint and setting."""
    digest = cache_key(task=task.describe(), extra=extra)
    return os.path.join(workdir, "eval", f"{task.task}_{step}_{digest}")
