"""Inception Score (Salimans et al. 2016): `exp E_x KL(p(y | x) || p(y))`, from a
classifier's logits, averaged over splits as in the reference implementation."""

from __future__ import annotations

import numpy as np


def inception_score(logits: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """Mean and standard deviation over `num_splits` of `exp(mean KL(p(y|x) || p(y)))`.

    1 for uninformative (identical) predictions; the number of classes for confident,
    evenly spread ones.
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or len(logits) < num_splits:
        raise ValueError(
            f"logits must be (n >= num_splits={num_splits}, classes); got {logits.shape}"
        )
    log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    scores = []
    for part in np.array_split(log_p, num_splits):
        log_marginal = np.logaddexp.reduce(part, axis=0) - np.log(len(part))
        kl = np.sum(np.exp(part) * (part - log_marginal), axis=1)
        scores.append(np.exp(np.mean(kl)))
    return float(np.mean(scores)), float(np.std(scores))
