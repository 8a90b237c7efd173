"""Sample quality: FID / KID, improved precision and recall, Inception Score (or a
classifier's score) of samples against data, in one of three feature spaces.

- "inception": the standard FID InceptionV3 (weights from a local file);
- "classifier": a small CNN trained once on the data set's labels (digits, grayscale data);
- "data": the raw coordinates (2-D toy data), plus exact metrics against a known density.

Everything here takes arrays, a data loader and a cache folder, never a config. Cached
files (the domain classifier, reference statistics) are named by a hash of every setting
they depend on, so a changed setting makes a fresh cache instead of reusing a stale one.
Reference statistics can also come from a shared file (pytorch-fid, clean-fid, score_sde;
`sde_gen.metrics.load_reference_stats`), which is what makes a FID comparable to a paper's.

In a multi-process run the features are computed in fixed chunks shared out over the
processes (`sde_gen.distributed.map_chunks`), the same chunks one process computes alone,
so every process ends with the same features and the reports equal one process's; caches
are written by process 0.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import distributed
from .. import metrics as metrics_lib
from ..data import DataInfo
from ..metrics import inception
from ..metrics.classifier import get_classifier

# Report keys of each feature space start with its prefix: fid, classifier_fid, data_fid.
METRIC_PREFIX = {"inception": "", "classifier": "classifier_", "data": "data_"}

# examples per call of a feature network (the domain classifier batches by 512 itself)
CHUNK = {"inception": 64, "classifier": 512}

# load_split(split, limit) -> (x, labels): examples of the data, in order
LoadSplit = Callable[[str, "int | None"], tuple[np.ndarray, np.ndarray]]


def cache_key(**settings) -> str:
    """A short hash of everything a cached file depends on."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


class Reference(NamedTuple):
    """Reference statistics, their features (`None` when a statistics file holds only mu
    and sigma: then no KID and no precision/recall), and what the report says of them."""

    stats: metrics_lib.FeatureStats
    features: np.ndarray | None
    info: dict


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
        self._references: dict = {}
        if kind == "inception":
            variables = inception.load_inception(inception_weights)
            net = inception.FIDInception()
            self._apply = jax.jit(lambda x: net.apply(variables, x))
            digest = metrics_lib.sha256_of_file(inception_weights)
            self.key["inception_weights"] = digest[:10]
            source = inception.weights_source(inception_weights)
            self.extra.update(
                feature_extractor=inception.FEATURE_EXTRACTOR,
                inception_weights=os.path.abspath(inception_weights),
                inception_weights_sha256=digest,
                inception_weights_converted_from=source.get("file"),
                inception_weights_converted_from_sha256=source.get("sha256"),
            )
        elif kind == "classifier":
            self.key["classifier_steps"] = classifier_steps
            path = os.path.join(cache_dir, f"classifier_{info.name}_{cache_key(**self.key)}.npz")
            train = lambda split: load_split(split, None)  # noqa: E731
            if distributed.is_main():  # trains it once, if it is not cached yet
                self.classifier = get_classifier(path, train, steps=classifier_steps)
            distributed.barrier("feature-classifier")
            if not distributed.is_main():
                self.classifier = get_classifier(path, train, steps=classifier_steps)
            self.extra["classifier_test_accuracy"] = self.classifier.accuracy

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """`{"features": (N, F)}` and, for a network, `"logits"`: in chunks of
        `CHUNK[kind]` examples, shared out over the processes of a multi-process run."""
        if self.kind == "data":
            return {"features": np.asarray(x).reshape(len(x), -1)}
        size = CHUNK[self.kind]
        outs = distributed.map_chunks(
            lambda i: self._chunk(x[i * size : (i + 1) * size]), -(-len(x) // size)
        )
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def _chunk(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.kind == "classifier":
            return self.classifier(np.asarray(x, np.float32))
        images = _to_unit(x, self.info.data_range)
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        out = self._apply(jnp.asarray(images))
        return {"features": np.asarray(out["pool3"]), "logits": np.asarray(out["logits"])}

    def reference(self, split: str, examples: int, stats_file: str | None = None) -> Reference:
        """Feature statistics and features (for KID) of the first `examples` of `split`,
        cached by everything they depend on; or, with `stats_file`, the statistics that
        file holds (computed elsewhere on `split`, which the report records)."""
        args = (split, examples, stats_file)
        if args not in self._references:
            if stats_file is None:
                self._references[args] = self._computed_reference(split, examples)
            else:
                self._references[args] = self._file_reference(split, stats_file)
        return self._references[args]

    def _file_reference(self, split: str, stats_file: str) -> Reference:
        if self.kind != "inception":
            raise ValueError(
                f"reference statistics from a file ({stats_file}) are Inception pool3 "
                f"statistics; this feature space is {self.kind!r}"
            )
        ref = metrics_lib.load_reference_stats(stats_file, dim=2048)
        return Reference(ref.stats, ref.features, {"reference_split": split, **ref.describe()})

    def _computed_reference(self, split: str, examples: int) -> Reference:
        key = cache_key(**self.key, split=split, examples=examples)
        path = os.path.join(self.cache_dir, f"reference_{self.kind}_{self.info.name}_{key}.npz")
        stats = features = None
        if distributed.broadcast("reference-cached", os.path.exists(path)):
            try:
                with np.load(path) as f:
                    stats = metrics_lib.FeatureStats(f["mu"], f["sigma"], int(f["n"]))
                    features = f["features"]
            except (OSError, ValueError, KeyError):  # a torn cache file: compute it again
                stats = None
        if stats is None:
            x, _ = self.load_split(split, examples)
            features = self(x)["features"]
            stats = metrics_lib.feature_stats(features)
            if distributed.is_main():
                os.makedirs(self.cache_dir, exist_ok=True)
                tmp = path + ".tmp.npz"
                np.savez(tmp, mu=stats.mu, sigma=stats.sigma, n=stats.n, features=features)
                os.replace(tmp, path)
        info = {"reference_split": split, "reference_examples": stats.n, "reference_stats": None}
        return Reference(stats, features, info)


def sample_quality(
    samples: np.ndarray,
    space: FeatureSpace,
    reference: Reference,
    labels: np.ndarray | None = None,
    exact_density=None,
) -> dict:
    """FID / KID, improved precision and recall (and IS or the classifier score) of
    `samples` against `reference` in `space` (KID and precision/recall only when the
    reference has features), and what the reference is. With the classes the
    samples were drawn for (`labels`) and the classifier feature space, also
    `classifier_accuracy`. With the data's exact density (an `AbstractAnalyticDensity`), the
    mean log-density of the samples and of fresh data, and the total variation of the
    samples' component weights from the true ones."""
    ref_stats, ref_features, ref_info = reference
    out = space(samples)
    stats = metrics_lib.feature_stats(out["features"])
    prefix = METRIC_PREFIX[space.kind]
    report = {f"{prefix}fid": metrics_lib.frechet_distance(stats, ref_stats)}
    if ref_features is not None:
        kid, kid_std = metrics_lib.kernel_distance(
            out["features"], ref_features, num_subsets=50, subset_size=min(1000, len(samples))
        )
        n_pr = min(len(samples), len(ref_features), 5000)
        features = out["features"][:n_pr]
        precision, recall = metrics_lib.precision_recall(ref_features[:n_pr], features)
        report.update({
            f"{prefix}kid": kid, f"{prefix}kid_std": kid_std,
            f"{prefix}precision": precision, f"{prefix}recall": recall,
        })  # fmt: skip
    report.update(features=space.kind, **space.extra, **ref_info)
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
