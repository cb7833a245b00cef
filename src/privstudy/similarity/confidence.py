"""Confidence-vs-similarity summaries of the LP and the image pipelines: extreme sets and binned curves."""

from __future__ import annotations

import numpy as np


def set_size(n: int, percent: float) -> int:
    """Size of the top and bottom sets: ``min(n, round(n * percent / 100))``, as published."""
    return min(n, round(n * percent * 0.01))


def confidence_order(confidence: np.ndarray, tiebreak: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Indices sorting points by confidence, ascending; ties by ``tiebreak``, then by id.

    Float confidences saturate (a sigmoid is exactly 1.0 for every far point), so the tiebreak
    (e.g. the unsaturated margin) keeps the extreme sets well defined instead of leaving them to
    array order.

    Args:
        confidence: (n,) the confidence.
        tiebreak: (n,) a finer key ordered like the confidence.
        ids: (n,) point ids, the last key.

    Returns:
        (n,) int64 permutation.
    """
    return np.lexsort((ids, tiebreak, confidence))


def extreme_sets(order: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The bottom-k and top-k indices of a confidence order, each listed most extreme first.

    Returns:
        (bottom (k,), top (k,)): bottom[0] is the least confident point, top[0] the most.
    """
    return order[:k], order[::-1][:k]


def bins_by_rank(order: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin number (0..n_bins-1) of each point by its rank in ``order``: equal-count bins.

    Returns:
        (n,) int64; points of bin 0 are the least confident.
    """
    n = order.size
    bins = np.empty(n, dtype=np.int64)
    bins[order] = (np.arange(n, dtype=np.int64) * n_bins) // n
    return bins


def binned_means(bins: np.ndarray, n_bins: int, **values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-bin count and mean of each named (n,) array (NaNs ignored).

    Returns:
        {"n_points": (n_bins,), name: (n_bins,) mean for each value}.
    """
    all_counts = np.bincount(bins, minlength=n_bins)
    out = {"n_points": all_counts.astype(np.int64)}
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        nan = np.isnan(v)
        if nan.any():
            counts = all_counts - np.bincount(bins[nan], minlength=n_bins)
            # A NaN counts as +0.0 in the sums: the same sums as leaving it out, since a sum that
            # starts at +0.0 is never -0.0, and x + 0.0 == x bit for bit for every other x.
            v = np.where(nan, 0.0, v)
        else:
            counts = all_counts
        sums = np.bincount(bins, weights=v, minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out
