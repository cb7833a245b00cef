"""Output release as a defence: what an attacker sees of a model's prediction (temperature, top-k,
rounding)."""

from __future__ import annotations

from typing import Optional

import numpy as np


def released_logits(
    logits: np.ndarray, temperature: float = 1.0, round_decimals=None, top_k: Optional[int] = None
) -> np.ndarray:
    """What an attacker sees, as logits: softmax(logits / T), cut to the top k classes and/or rounded.

    Shokri et al.'s top-k release keeps the k largest probabilities and zeroes the rest; the released
    vector is renormalised to sum to 1, so k = 1 releases the predicted label only. Rounding applies
    after the cut. A cut or rounded vector is turned back into logits as log(max(p, 1e-12)), so that
    every score is computed from the released vector (renormalised to sum to 1).
    """
    from scipy.special import softmax

    z = np.asarray(logits, np.float64) / temperature
    if round_decimals is None and top_k is None:
        return z
    p = softmax(z, axis=1)
    if top_k is not None and top_k < p.shape[1]:
        # the k largest by a stable order (ties to the lower class index), so the cut is deterministic
        order = np.argsort(-p, axis=1, kind="stable")
        cut = np.zeros_like(p)
        rows = np.arange(len(p))[:, None]
        cut[rows, order[:, :top_k]] = p[rows, order[:, :top_k]]
        p = cut / cut.sum(axis=1, keepdims=True)
    if round_decimals is not None:
        p = np.round(p, round_decimals)
    return np.log(np.maximum(p, 1e-12))


def released_probs(
    logits: np.ndarray, temperature: float = 1.0, round_decimals=None, top_k: Optional[int] = None
) -> np.ndarray:
    """The released probability vectors (rows sum to 1): softmax of ``released_logits``."""
    from scipy.special import softmax

    return softmax(released_logits(logits, temperature, round_decimals, top_k), axis=1)
