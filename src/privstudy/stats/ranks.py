"""Rank statistics shared by trials and analysis: average ranks, rank AUC, Spearman correlation."""

from __future__ import annotations

import math

import numpy as np


def stable_order(
    values: np.ndarray, return_sorted: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The stable ascending sort of (n,) floats: equal values keep their index order.

    The same permutation as ``np.argsort(values, kind="stable")``, several times faster on large
    arrays: a stable argsort of floats is a merge sort, while a plain sort of 64-bit integers is
    vectorised. Each value's bits become an unsigned key of the same order, and the permutation comes
    from two integer sorts with the index packed into the keys' low bits: first by the key's high
    bits, then by (rank of the high bits, low bits). With n < 2^21 the three parts fit in 64 bits and
    the result is exact; larger arrays use the stable argsort.

    Args:
        values: (n,) floats without NaN.
        return_sorted: also return the sorted values, read off the sorted keys (cheaper than
            gathering ``values[order]``); -0.0 comes back as +0.0.

    Returns:
        (n,) int64 permutation; with ``return_sorted``, (permutation, (n,) float64 sorted values).
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    bits = max(1, (n - 1).bit_length())
    if 3 * bits > 64 or n < 2:
        order = np.argsort(v, kind="stable")
        return (order, v[order] + 0.0) if return_sorted else order
    if np.isnan(v).any():
        raise ValueError("stable_order: values contain NaN")
    b = np.uint64(bits)
    low_mask = (np.uint64(1) << b) - np.uint64(1)
    # Adding +0.0 turns -0.0 into +0.0, so values that compare equal get equal bits.
    key = (v + 0.0).view(np.uint64)
    flipped = bool(v.min() < 0)
    if flipped:
        # Negative floats order by inverted bits, the others by their bits with the sign bit set
        # (non-negative floats alone already order by their bits).
        flip = (np.uint64(0) - (key >> np.uint64(63))) >> np.uint64(1)
        flip |= np.uint64(1 << 63)
        key ^= flip
    index = np.arange(n, dtype=np.uint64)
    # Sort 1: by the key's high bits, then index.
    first = key & ~low_mask
    first |= index
    first.sort()
    high = first >> b
    order = first & low_mask
    if not (high[1:] == high[:-1]).any():
        # The high bits alone already decide.
        order = order.astype(np.int64)
        return (order, _key_values(key[order], flipped)) if return_sorted else order
    # Sort 2: (rank of the high bits, low bits of the key, index) = (value, index), exactly.
    second = np.zeros(n, dtype=np.uint64)
    # Written as uint64 before the cumsum: a cumsum of booleans into uint64 is several times slower.
    np.not_equal(high[1:], high[:-1], out=second[1:], casting="unsafe")
    np.cumsum(second, out=second)
    second <<= np.uint64(2 * bits)
    second |= (key[order.astype(np.intp)] & low_mask) << b
    second |= order
    second.sort()
    order = (second & low_mask).astype(np.int64)
    if not return_sorted:
        return order
    # Sort 2 only moves elements within runs of equal high bits, so position p keeps its high bits.
    first &= ~low_mask
    second >>= b
    second &= low_mask
    first |= second
    return order, _key_values(first, flipped)


def _key_values(key: np.ndarray, flipped: bool) -> np.ndarray:
    """The float64 values of ``stable_order``'s (n,) uint64 keys (undoing the sign flip if any)."""
    if flipped:
        # Keys with the top bit set were non-negative values (clear it); the others are inverted.
        key = key ^ (((key >> np.uint64(63)) - np.uint64(1)) | np.uint64(1 << 63))
    return key.view(np.float64)


def average_ranks(
    values: np.ndarray, order: np.ndarray | None = None, sorted_values: np.ndarray | None = None
) -> np.ndarray:
    """1-based ranks of ``values`` with ties given their average rank (scipy's rankdata "average").

    Args:
        values: (n,) numbers without NaN.
        order: (n,) a permutation sorting ``values`` ascending (any order among ties), when one is
            already at hand; it saves the sort.
        sorted_values: (n,) ``values[order]``, when already at hand (only with ``order``).

    Returns:
        (n,) float64 ranks.
    """
    values = np.asarray(values)
    if order is None:
        order = np.argsort(values, kind="stable")
    n = values.size
    if n == 0:
        return np.empty(0, dtype=np.float64)
    sorted_vals = values[order] if sorted_values is None else sorted_values
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], n]  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def average_ranks_of_ints(keys: np.ndarray) -> np.ndarray:
    """``average_ranks`` of (n,) non-negative integers, by counting instead of sorting.

    Time and memory grow with n + max(keys), so it suits keys up to a few times n.

    Returns:
        (n,) float64 ranks, equal to ``average_ranks(keys)``.
    """
    keys = np.asarray(keys)
    if keys.size == 0:
        return np.empty(0, dtype=np.float64)
    counts = np.bincount(keys)
    ends = np.cumsum(counts)  # exclusive end of each key's run in sorted order
    group_rank = (ends - counts + 1 + ends) / 2.0  # as in average_ranks: (start + 1 + end) / 2
    return group_rank[keys]


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
