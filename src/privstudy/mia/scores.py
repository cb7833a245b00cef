"""Per-example statistics of a model's output that membership attacks use, computed stably from logits."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp


def example_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Loss, true-class probability, LiRA statistic, entropy, modified entropy, correctness.

    Args:
        logits: (n, classes) pre-softmax outputs (float64 internally).
        labels: (n,) true classes.

    The LiRA statistic is log p_y - log(sum_{j != y} p_j) = z_y - logsumexp_{j != y} z_j, exact in
    logit space even where p_y rounds to 1 in float32. Modified entropy (Song and Mittal 2021):
    -(1 - p_y) log p_y - sum_{j != y} p_j log(1 - p_j).
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n = len(z)
    rows = np.arange(n)
    logp = log_softmax(z, axis=1)
    p = np.exp(logp)
    logp_y = logp[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    lira = z[rows, y] - logsumexp(others, axis=1)
    # log(1 - p_j); p is capped just below 1 so that a saturated class gives a large finite value.
    log1m = np.log1p(-np.minimum(p, 1 - 1e-16))
    entropy = -(p * logp).sum(axis=1)
    p_y = p[rows, y]
    mentr_other = -(p * log1m).sum(axis=1) + p_y * log1m[rows, y]
    mentr = -(1 - p_y) * logp_y + mentr_other
    return {
        "loss": -logp_y,
        "p_true": p_y,
        "lira": lira,
        "entropy": entropy,
        "mentr": mentr,
        "correct": z.argmax(axis=1) == y,
        "probs": p,
    }
