"""Intervals over trials: the mean and its Student-t interval."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps


def mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and Student-t interval of per-trial values (NaNs dropped).

    Args:
        values: (n_trials,) one number per trial.
        level: coverage of the interval.

    Returns:
        (mean, low, high, n); low = high = mean when n == 1; all NaN when n == 0.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    n = v.size
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    if n == 1:
        return m, m, m, 1
    half = float(sps.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half, n
