"""What people look at instead of reading logs: sample grids, scatter plots, loss curves.

Everything writes PNG files through matplotlib's object API (no pyplot state, no display
needed), so it is safe in training loops and on headless machines.
"""

from __future__ import annotations

import math
import os

import numpy as np
from matplotlib import image as mpimg
from matplotlib.figure import Figure


def image_grid(
    images: np.ndarray,
    data_range: tuple[float, float] = (-1.0, 1.0),
    padding: int = 1,
    cols: int | None = None,
) -> np.ndarray:
    """Tile `(N, H, W, C)` images (C = 1 or 3, values in `data_range`) into one uint8
    `(rows * (H + p), cols * (W + p), 3)` image, row by row; `cols` defaults to a
    near-square grid."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, 1 or 3); got shape {images.shape}")
    lo, hi = data_range
    images = np.clip((images - lo) / (hi - lo), 0.0, 1.0)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    n, h, w, _ = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (h + padding) + padding, cols * (w + padding) + padding, 3))
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top : top + h, left : left + w] = img
    return (grid * 255).round().astype(np.uint8)


def save_image_grid(
    path: str,
    images: np.ndarray,
    data_range: tuple[float, float] = (-1.0, 1.0),
    scale: int = 1,
    cols: int | None = None,
) -> str:
    """Write `image_grid(images)` to `path` as PNG, each pixel enlarged `scale` times."""
    grid = image_grid(images, data_range, cols=cols)
    if scale > 1:
        grid = np.kron(grid, np.ones((scale, scale, 1), np.uint8))
    _makedirs(path)
    mpimg.imsave(path, grid)
    return path


def save_scatter(
    path: str, points: np.ndarray, reference: np.ndarray | None = None, title: str = ""
) -> str:
    """A 2-D scatter plot of `points`, with `reference` points (e.g. data) behind them."""
    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    if reference is not None:
        ref = np.asarray(reference)
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.75", label="data")
    pts = np.asarray(points)
    ax.scatter(pts[:, 0], pts[:, 1], s=2, c="C0", label="samples")
    ax.set_aspect("equal")
    ax.set_title(title)
    if reference is not None:
        ax.legend(loc="upper right", markerscale=4)
    _makedirs(path)
    fig.savefig(path, bbox_inches="tight")
    return path


def save_curve(
    path: str, x, ys: dict[str, np.ndarray], xlabel: str = "step", log_y: bool = True
) -> str:
    """Line plot of each named series in `ys` against `x` (e.g. losses against steps)."""
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for name, y in ys.items():
        ax.plot(x, y, label=name)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    _makedirs(path)
    fig.savefig(path, bbox_inches="tight")
    return path


def _makedirs(path: str) -> None:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
