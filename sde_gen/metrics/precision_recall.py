r"""Improved precision and recall of generative models (Kynkäänniemi et al. 2019).

Each feature set is approximated by a union of balls: around each of its points, of radius
the distance to its k-th nearest neighbour in the same set. Precision is the fraction of
generated points inside the real manifold (fidelity), recall the fraction of real points
inside the generated one (diversity). With k = 3 as in the paper.
"""

from __future__ import annotations

import numpy as np


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _kth_radius(x: np.ndarray, k: int, batch: int) -> np.ndarray:
    """The squared distance of each point to its k-th nearest other point of the set."""
    out = np.empty(len(x))
    for i in range(0, len(x), batch):
        d = _squared_distances(x[i : i + batch], x)
        out[i : i + batch] = np.partition(d, k, axis=1)[:, k]  # index 0 is the point itself
    return out


def _coverage(points: np.ndarray, centers: np.ndarray, radii: np.ndarray, batch: int) -> float:
    inside = [
        np.any(_squared_distances(points[i : i + batch], centers) <= radii[None, :], axis=1)
        for i in range(0, len(points), batch)
    ]
    return float(np.mean(np.concatenate(inside)))


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, batch: int = 1024
) -> tuple[float, float]:
    """`(precision, recall)` of `fake` against `real` features, both `(n, d)`."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (n, d) with the same d; got {real.shape}, {fake.shape}")
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(
            f"k must lie in [1, {min(len(real), len(fake))}) for sets of {len(real)} and "
            f"{len(fake)} points; got {k}"
        )
    precision = _coverage(fake, real, _kth_radius(real, k, batch), batch)
    recall = _coverage(real, fake, _kth_radius(fake, k, batch), batch)
    return precision, recall
