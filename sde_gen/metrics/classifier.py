"""A domain feature extractor for data sets where InceptionV3 is meaningless or unavailable
offline (8x8 digits, small grayscale images): a small CNN classifier trained by the
framework on the data set's labels. Its penultimate layer gives the features for FID/KID
"in classifier space", its logits a classifier score (the Inception Score's formula) and
its accuracy says how much those features can be trusted.
"""

from __future__ import annotations

import dataclasses
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import traverse_util


class SmallCNN(nn.Module):
    """conv(32) -> conv(64, stride 2) -> conv(64, stride 2) -> mean pool -> dense(features)
    -> dense(classes). Works on any image size."""

    num_classes: int = 10
    features: int = 128

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Conv(32, (3, 3))(x))
        h = nn.relu(nn.Conv(64, (3, 3), strides=2)(h))
        h = nn.relu(nn.Conv(64, (3, 3), strides=2)(h))
        h = jnp.mean(h, axis=(1, 2))
        features = nn.relu(nn.Dense(self.features)(h))
        features = nn.Dropout(0.2, deterministic=not train)(features)
        return {"features": features, "logits": nn.Dense(self.num_classes)(features)}


@dataclasses.dataclass
class DomainClassifier:
    """A trained `SmallCNN` and its test accuracy; `__call__(images)` gives features and
    logits, batched on the default device."""

    params: dict
    num_classes: int
    accuracy: float

    def __call__(self, images: np.ndarray, batch_size: int = 512) -> dict[str, np.ndarray]:
        model = SmallCNN(self.num_classes)
        apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
        outs = [
            apply(self.params, images[i : i + batch_size])
            for i in range(0, len(images), batch_size)
        ]
        return {k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in outs[0]}

    def save(self, path: str) -> None:
        flat = traverse_util.flatten_dict(jax.device_get(self.params), sep="/")
        np.savez(path, num_classes=self.num_classes, accuracy=self.accuracy, **flat)

    @classmethod
    def load(cls, path: str) -> DomainClassifier:
        with np.load(path) as f:
            flat = {k: f[k] for k in f.files if k not in ("num_classes", "accuracy")}
            return cls(
                traverse_util.unflatten_dict(flat, sep="/"),
                int(f["num_classes"]),
                float(f["accuracy"]),
            )


def train_classifier(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
) -> DomainClassifier:
    """Train `SmallCNN` with Adam on `(images, labels)`; report test accuracy."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    model = SmallCNN(num_classes)
    key = jax.random.key(seed)
    params = model.init(key, jnp.asarray(train_x[:1]))["params"]
    optimizer = optax.adam(optax.cosine_decay_schedule(lr, steps))
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, x, y, key):
        def loss_fn(p):
            logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})["logits"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for i in range(steps):
        idx = rng.integers(0, len(train_x), batch_size)
        params, opt_state, loss = step(
            params, opt_state, train_x[idx], train_y[idx], jax.random.fold_in(key, i)
        )
        if (i + 1) % max(steps // 5, 1) == 0:
            rate = (i + 1) / (time.perf_counter() - start)
            logging.info(
                "domain classifier: step %d/%d  loss %.4f  %.1f steps/s",
                i + 1,
                steps,
                float(loss),
                rate,
            )
    classifier = DomainClassifier(params, num_classes, 0.0)
    predicted = classifier(test_x)["logits"].argmax(-1)
    classifier.accuracy = float(np.mean(predicted == test_y))
    return classifier


def get_classifier(
    cache_path: str, load_split, steps: int = 1500, seed: int = 0
) -> DomainClassifier:
    """The classifier cached at `cache_path`, or one trained now (and cached) on
    `load_split("train")` / `load_split("test")`, each returning `(images, labels)`."""
    if os.path.exists(cache_path):
        return DomainClassifier.load(cache_path)
    (train_x, train_y), (test_x, test_y) = load_split("train"), load_split("test")
    classifier = train_classifier(train_x, train_y, test_x, test_y, steps=steps, seed=seed)
    os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
    classifier.save(cache_path)
    logging.info("domain classifier: test accuracy %.4f -> %s", classifier.accuracy, cache_path)
    return classifier
