"""Nearest neighbours by normalised angular distance, computed in blocks (never an n x n matrix).

The normalised angular distance between u and v is arccos(cos_sim(u, v)) / pi, in [0, 1].
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def angular(cos_sim: np.ndarray) -> np.ndarray:
    """arccos(cos) / pi with the cosine clipped to [-1, 1] (float64)."""
    return np.arccos(np.clip(np.asarray(cos_sim, dtype=np.float64), -1.0, 1.0)) / np.pi


def nearest_angular(
    queries: np.ndarray,
    refs: np.ndarray,
    query_ref_index: Optional[np.ndarray] = None,
    query_labels: Optional[np.ndarray] = None,
    ref_labels: Optional[np.ndarray] = None,
    block: int = 4096,
    use_gpu: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the nearest reference by angular distance, and its index.

    Args:
        queries: (q, d) vectors.
        refs: (r, d) vectors.
        query_ref_index: (q,) for queries that are themselves references, their row in ``refs``
            (excluded: a member's nearest *other* training point); -1 for the others.
        query_labels, ref_labels: when given, only references of the query's label count.
        block: queries per block; memory is 4 x block x r bytes (float32 similarities).
        use_gpu: compute the similarities with TensorFlow (on its default device, the GPU if any).

    Returns:
        (distance (q,) float64, index (q,) int64); distance inf and index -1 where no reference qualifies.
    """
    qn, rn = unit_rows(queries), unit_rows(refs)
    n = len(qn)
    best_sim = np.full(n, -np.inf, dtype=np.float64)
    best_idx = np.full(n, -1, dtype=np.int64)
    if len(rn) == 0:
        return np.full(n, np.inf), best_idx
    if use_gpu:
        import tensorflow as tf

        rt = tf.constant(rn)
    for start in range(0, n, block):
        stop = min(n, start + block)
        if use_gpu:
            sim = tf.linalg.matmul(tf.constant(qn[start:stop]), rt, transpose_b=True).numpy()
        else:
            sim = qn[start:stop] @ rn.T
        if query_ref_index is not None:
            own = query_ref_index[start:stop]
            rows = np.flatnonzero(own >= 0)
            sim[rows, own[rows]] = -np.inf
        if query_labels is not None:
            sim[query_labels[start:stop, None] != ref_labels[None, :]] = -np.inf
        idx = sim.argmax(axis=1)
        best_idx[start:stop] = idx
        best_sim[start:stop] = sim[np.arange(stop - start), idx]
    none = ~np.isfinite(best_sim)
    dist = angular(np.where(none, 0.0, best_sim))
    dist[none] = np.inf
    best_idx[none] = -1
    return dist, best_idx
