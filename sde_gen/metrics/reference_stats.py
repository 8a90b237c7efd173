"""Precomputed reference statistics of a data set's features, read from the files that
published FIDs were computed against, so that a FID here is comparable to theirs.

Formats read (all `.npz`; the first that matches wins):

- `mu` `(d,)` and `sigma` `(d, d)`: pytorch-fid (`--save-stats`), clean-fid (its
  downloadable and `make_custom_stats` files), TTUR's `fid_stats_*.npz`, and sde_gen's own
  `FeatureStats.save` (which adds `n`, and its reference cache, which adds `features`);
- `pool_3` `(n, d)`: score_sde's `cifar10_stats.npz`, the pool3 features themselves (of
  the 50,000 CIFAR-10 training images); mean and unbiased covariance are computed here, as
  `tfgan.eval.frechet_classifier_distance_from_activations` does in score_sde;
- `feats` `(n, d)`: clean-fid's `*_kid.npz` feature files.

Files holding features also give KID and precision/recall; files holding only `mu` and
`sigma` give the FID alone. Every check failure is one `ValueError` line that names the
file and what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

from .._files import sha256_of_file
from .frechet import FeatureStats, feature_stats

# (name, keys) in the order tried; the name is what the report records.
FORMATS = (
    ("mu_sigma", ("mu", "sigma")),
    ("score_sde_pool_3", ("pool_3",)),
    ("clean_fid_feats", ("feats",)),
)


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    """Statistics read from `path`: `features` `(n, d)` when the file holds them, `n` the
    number of examples behind the statistics when the file says (else `None`)."""

    stats: FeatureStats
    features: np.ndarray | None
    n: int | None
    format: str
    path: str
    sha256: str

    def describe(self) -> dict:
        """What a report says about these statistics."""
        return {
            "reference_stats": self.path,
            "reference_stats_sha256": self.sha256,
            "reference_stats_format": self.format,
            "reference_examples": self.n,
        }


def _check_finite(path: str, name: str, value: np.ndarray) -> None:
    bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
    if bad:
        raise ValueError(f"{path}: {name} has {bad} non-finite values")


def _check_features(path: str, name: str, features: np.ndarray, dim: int) -> np.ndarray:
    if features.ndim != 2 or features.shape[1] != dim or features.shape[0] < 2:
        raise ValueError(
            f"{path}: {name} has shape {features.shape}; expected (n >= 2, {dim}) features"
        )
    _check_finite(path, name, features)
    return features


def check_stats(path: str, mu: np.ndarray, sigma: np.ndarray, dim: int) -> None:
    """`mu` `(dim,)`, `sigma` `(dim, dim)`, both finite, `sigma` symmetric with a
    non-negative diagonal; else a `ValueError` naming `path`."""
    if mu.shape != (dim,):
        raise ValueError(f"{path}: mu has shape {mu.shape}; expected ({dim},)")
    if sigma.shape != (dim, dim):
        raise ValueError(f"{path}: sigma has shape {sigma.shape}; expected ({dim}, {dim})")
    _check_finite(path, "mu", mu)
    _check_finite(path, "sigma", sigma)
    scale = max(float(np.abs(sigma).max()), np.finfo(np.float64).tiny)
    asymmetry = float(np.abs(sigma - sigma.T).max()) / scale
    if asymmetry > 1e-5:  # float32 rounding of a symmetric matrix stays far below
        raise ValueError(
            f"{path}: sigma is not symmetric (max |sigma - sigma^T| / max |sigma| = "
            f"{asymmetry:.2g})"
        )
    if np.any(np.diag(sigma) < 0):
        raise ValueError(f"{path}: sigma has negative variances on its diagonal")


def load_reference_stats(
    path: str | None, *, dim: int = 2048, config_key: str = "eval.reference_stats"
) -> ReferenceStats:
    """Reference statistics of `dim` features from a shared `.npz` (see the module
    docstring for the formats), checked. `FileNotFoundError` names `config_key` when the
    file is missing."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(
            f"reference statistics not found at {path!r}: set config.{config_key} to a local "
            ".npz with mu and sigma (pytorch-fid, clean-fid) or pool_3 features (score_sde's "
            "cifar10_stats.npz); see docs/interop.md#fid"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    for name, keys in FORMATS:
        if all(k in arrays for k in keys):
            break
    else:
        raise ValueError(
            f"{path}: holds {sorted(arrays)}; expected mu and sigma (pytorch-fid, clean-fid), "
            "pool_3 (score_sde) or feats (clean-fid KID features)"
        )
    features = None
    if name == "mu_sigma":
        mu = np.asarray(arrays["mu"], np.float64)
        sigma = np.asarray(arrays["sigma"], np.float64)
        check_stats(path, mu, sigma, dim)
        n = int(arrays["n"]) if "n" in arrays and np.ndim(arrays["n"]) == 0 else None
        if "features" in arrays:  # sde_gen's reference cache
            features = _check_features(path, "features", arrays["features"], dim)
            n = len(features)
        stats = FeatureStats(mu, sigma, n or 0)
    else:
        features = _check_features(path, keys[0], arrays[keys[0]], dim)
        stats = feature_stats(features)
        n = len(features)
    return ReferenceStats(stats, features, n, name, os.path.abspath(path), sha256_of_file(path))
