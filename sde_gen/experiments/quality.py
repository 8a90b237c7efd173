"""Sample quality: FID / KID, improved precision and recall, Inception Score (or a
classifier's score) of samples against data, in one of three feature spaces.

- "inception": the standard FID InceptionV3 (weights from a local file);
- "classifier": a small CNN trained once on the data set's labels (digits, grayscale data);
- "data": the raw coordinates (2-D toy data), plus exact metrics against a known density.

Everything here takes arrays, a data loader and a cache folder, never a config. Cached
files (the domain classifier, reference statistics) are named by a hash of every setting
they depend on, so a changed setting makes a fresh cache instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import metrics as metrics_lib
from ..metrics import inception
from ..metrics.classifier import get_classifier
from ..data import DataInfo

# Report keys of each feature space start with its prefix: fid, classifier_fid, data_fid.
METRIC_PREFIX = {"inception": "", "classifier": "classifier_", "data": "data_"}

# load_split(split, limit) -> (x, labels): examples of the data, in order
LoadSplit = Callable[[str, "int | None"], tuple[np.ndarray, np.ndarray]]


def cache_key(**settings) -> str:
    """A short hash of everything a cached file depends on."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _file_digest(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:10]


def _to_unit(x, data_range):
    lo, hi = data_range
    return np.clip((np.asarray(x) - lo) / (hi - lo), 0.0, 1.0)


class FeatureSpace:
    """Features (and logits) of samples or data in the space `kind`.

    `data_key` describes the data the features are computed on (its name and every data
    setting that changes the values); it and the feature extractor's own settings key the
    caches in `cache_dir`.
    """

    def __init__(
        self,
        kind: str,
        info: DataInfo,
        cache_dir: str,
        load_split: LoadSplit,
        *,
        data_key: dict,
        inception_weights: str | None = None,
        classifier_steps: int = 1500,
    ):
        self.kind, self.info, self.cache_dir, self.extra = kind, info, cache_dir, {}
        self.load_split = load_split
        self.key = {"features": kind, **data_key}
        if kind == "inception":
            variables = inception.load_inception(inception_weights)
            net = inception.FIDInception()
            self._apply = jax.jit(lambda x: net.apply(variables, x))
            self.key["inception_weights"] = _file_digest(inception_weights)
        elif kind == "classifier":
            self.key["classifier_steps"] = classifier_steps
            path = os.path.join(cache_dir, f"classifier_{info.name}_{cache_key(**self.key)}.npz")
            self.classifier = get_classifier(
                path, lambda split: load_split(split, None), steps=classifier_steps
            )
            self.extra["classifier_test_accuracy"] = self.classifier.accuracy

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.kind == "data":
            return {"features": np.asarray(x).reshape(len(x), -1)}
        if self.kind == "classifier":
            return self.classifier(np.asarray(x, np.float32))
        images = _to_unit(x, self.info.data_range)
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        outs = [self._apply(jnp.asarray(images[i : i + 64])) for i in range(0, len(images), 64)]
        return {
            "features": np.concatenate([np.asarray(o["pool3"]) for o in outs]),
            "logits": np.concatenate([np.asarray(o["logits"]) for o in outs]),
        }

    def reference(self, split: str, examples: int):
        """Feature statistics and features (for KID) of the first `examples` of `split`,
        cached by everything they depend on."""
        key = cache_key(**self.key, split=split, examples=examples)
        path = os.path.join(self.cache_dir, f"reference_{self.kind}_{self.info.name}_{key}.npz")
        if os.path.exists(path):
            try:
                with np.load(path) as f:
                    stats = metrics_lib.FeatureStats(f["mu"], f["sigma"], int(f["n"]))
                    return stats, f["features"]
            except (OSError, ValueError, KeyError):  # a torn cache file: compute it again
                pass
        x, _ = self.load_split(split, examples)
        features = self(x)["features"]
        stats = metrics_lib.feature_stats(features)
        os.makedirs(self.cache_dir, exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, mu=stats.mu, sigma=stats.sigma, n=stats.n, features=features)
        os.replace(tmp, path)
        return stats, features


def sample_quality(
    samples: np.ndarray,
    space: FeatureSpace,
    reference: tuple,
    labels: np.ndarray | None = None,
    exact_density=None,
) -> dict:
    """FID / KID, improved precision and recall (and IS or the classifier score) of
    `samples` against `reference = (stats, features)` in `space`. With the classes the
    samples were drawn for (`labels`) and the classifier feature space, also
    `classifier_accuracy`. With the data's exact density (an `AbstractAnalyticDensity`), the
    mean log-density of the samples and of fresh data, and the total variation of the
    samples' component weights from the true ones."""
    ref_stats, ref_features = reference
    out = space(samples)
    stats = metrics_lib.feature_stats(out["features"])
    kid, kid_std = metrics_lib.kernel_distance(
        out["features"], ref_features, num_subsets=50, subset_size=min(1000, len(samples))
    )
    prefix = METRIC_PREFIX[space.kind]
    n_pr = min(len(samples), len(ref_features), 5000)
    precision, recall = metrics_lib.precision_recall(ref_features[:n_pr], out["features"][:n_pr])
    report = {
        f"{prefix}fid": metrics_lib.frechet_distance(stats, ref_stats),
        f"{prefix}kid": kid,
        f"{prefix}kid_std": kid_std,
        f"{prefix}precision": precision,
        f"{prefix}recall": recall,
        "features": space.kind,
        **space.extra,
    }
    if labels is not None and space.kind == "classifier":
        report["classifier_accuracy"] = float(np.mean(out["logits"].argmax(-1) == labels))
    if "logits" in out:
        name = "inception_score" if space.kind == "inception" else "classifier_score"
        splits = min(10, len(samples) // 2)
        report[name], report[name + "_std"] = metrics_lib.inception_score(out["logits"], splits)
    if exact_density is not None:
        x = jnp.asarray(samples)
        report["exact_mean_log_density"] = float(jnp.mean(exact_density.log_prob(x)))
        data = exact_density.sample(jax.random.key(0), len(samples))
        report["exact_mean_log_density_of_data"] = float(jnp.mean(exact_density.log_prob(data)))
        true = np.asarray(exact_density.components()[0])
        nearest = np.asarray(exact_density.responsibilities(x)).argmax(1)
        weights = np.bincount(nearest, minlength=len(true)) / len(samples)
        report["component_weights_tv"] = float(0.5 * np.abs(weights - true).sum())
    return report
