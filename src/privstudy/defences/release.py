"""Output release as a defence: what an attacker sees of a model's prediction (temperature, rounding)."""

from __future__ import annotations

import numpy as np


def released_logits(logits: np.ndarray, temperature: float = 1.0, round_decimals=None) -> np.ndarray:
    """What an attacker sees, as logits: softmax(logits / T), optionally rounded to some decimals.

    Rounded probabilities are turned back into logits as log(max(p, 1e-12)), so that every score is
    computed from the released, rounded vector (renormalised to sum to 1).
    """
    from scipy.special import softmax

    z = np.asarray(logits, np.float64) / temperature
    if round_decimals is None:
        return z
    p = np.round(softmax(z, axis=1), round_decimals)
    return np.log(np.maximum(p, 1e-12))
