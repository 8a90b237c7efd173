"""Fréchet distance between Gaussians fitted to features (FID when the features are
InceptionV3's pool3), computed stably in float64 without complex square roots.

    d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2})

`S_1^{1/2} S_2 S_1^{1/2}` is symmetric positive semi-definite, so its square root's trace
is the sum of the square roots of its (clipped, non-negative) eigenvalues: no `sqrtm` of a
non-symmetric product, hence no imaginary parts to discard.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Mean `(d,)` and covariance `(d, d)` of a feature set, and how many examples made them."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    def save(self, path: str) -> None:
        np.savez(path, mu=self.mu, sigma=self.sigma, n=self.n)

    @classmethod
    def load(cls, path: str) -> FeatureStats:
        with np.load(path) as f:
            return cls(f["mu"], f["sigma"], int(f["n"]))


def feature_stats(features: np.ndarray) -> FeatureStats:
    """Mean and (unbiased) covariance of `(n, d)` features, in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (n >= 2, d); got shape {features.shape}")
    return FeatureStats(features.mean(0), np.cov(features, rowvar=False), features.shape[0])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigvals, eigvecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(a.mu, a.sigma) and
    N(b.mu, b.sigma)."""
    mu1, mu2 = np.asarray(a.mu, np.float64), np.asarray(b.mu, np.float64)
    s1, s2 = np.atleast_2d(a.sigma).astype(np.float64), np.atleast_2d(b.sigma).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"statistics do not match: means {mu1.shape} / {mu2.shape}, covariances "
            f"{s1.shape} / {s2.shape}"
        )
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sum(np.sqrt(np.clip(eigvals, 0.0, None)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)
