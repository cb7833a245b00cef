"""The integer query grid {0, g, 2g, ..., grid_size}^d: sizes, seeded samples of points, corners."""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np

MAX_GRID_POINTS = 2**62  # point ids are int64 flat indices


def points_per_dim(grid_size: float, granularity: float) -> int:
    """Number of grid values along one axis: 0, g, ..., up to grid_size."""
    # The epsilon absorbs float division error (0.3 / 0.1 = 2.9999999999999996).
    return int(math.floor(grid_size / granularity + 1e-9)) + 1


def total_points(grid_size: float, granularity: float, n_dims: int) -> int:
    """Number of points of the whole grid (a Python int: it can exceed int64)."""
    return points_per_dim(grid_size, granularity) ** n_dims


def ids_to_points(ids: np.ndarray, grid_size: float, granularity: float, n_dims: int) -> np.ndarray:
    """Coordinates of flat point ids (last axis fastest).

    Args:
        ids: (n,) int64 flat indices into the grid.

    Returns:
        (n, n_dims) float64 coordinates.
    """
    n = points_per_dim(grid_size, granularity)
    out = np.empty((ids.size, n_dims), dtype=np.float64)
    rest = ids.astype(np.int64, copy=True)
    for d in range(n_dims - 1, -1, -1):
        out[:, d] = (rest % n) * granularity
        rest //= n
    return out


@lru_cache(maxsize=4)
def query_points(
    test_size: int, grid_size: float, granularity: float, n_dims: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The query points of a setting: ``test_size`` distinct grid points, or the whole grid.

    Cached per process, because every trial of a setting shares them and workers run many trials.

    Returns:
        (points (n, n_dims) float64, ids (n,) int64 sorted ascending), both read-only.
    """
    total = total_points(grid_size, granularity, n_dims)
    if test_size >= total:
        ids = np.arange(total, dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        ids = np.sort(rng.choice(total, size=test_size, replace=False).astype(np.int64))
    points = ids_to_points(ids, grid_size, granularity, n_dims)
    ids.flags.writeable = False
    points.flags.writeable = False
    return points, ids


def corners(grid_size: float, n_dims: int) -> np.ndarray:
    """The 2^d corners of [0, grid_size]^d, shape (2^n_dims, n_dims)."""
    return np.array(list(itertools.product((0.0, float(grid_size)), repeat=n_dims)), dtype=np.float64)
