"""Rank statistics shared by trials and analysis: average ranks, rank AUC, Spearman correlation."""

from __future__ import annotations

import math

import numpy as np


def average_ranks(values: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """1-based ranks of ``values`` with ties given their average rank (scipy's rankdata "average").

    Args:
        values: (n,) numbers without NaN.
        order: (n,) a permutation sorting ``values`` ascending (any order among ties), when one is
            already at hand; it saves the sort.

    Returns:
        (n,) float64 ranks.
    """
    values = np.asarray(values)
    if order is None:
        order = np.argsort(values, kind="stable")
    n = values.size
    if n == 0:
        return np.empty(0, dtype=np.float64)
    sorted_vals = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], n]  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def auc_from_ranks(ranks: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC from precomputed average ranks of the scores (see ``auc``)."""
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman_from_ranks(ra: np.ndarray, rb: np.ndarray) -> float:
    """Pearson correlation of two (n,) rank vectors: Spearman's rho; NaN when either is constant."""
    ra = ra - ra.mean()
    rb = rb - rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / denom) if denom > 0 else float("nan")


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for telling ``labels == True`` from False (ties count one half).

    Args:
        scores: (n,) higher means "more likely positive".
        labels: (n,) booleans.

    Returns:
        P(score of a random positive > score of a random negative) + 0.5 P(tie); NaN when a class
        is empty.
    """
    # Average ranks make a tie between a positive and a negative count one half.
    return auc_from_ranks(average_ranks(np.asarray(scores, dtype=np.float64)), labels)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two (n,) arrays; NaN when either is constant."""
    return spearman_from_ranks(average_ranks(a), average_ranks(b))
