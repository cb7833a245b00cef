"""Study-level membership: which of the M models trains on which of the N pool examples.

LiRA's construction (Carlini et al. 2022): draw an M x N matrix of uniforms and, per example (column),
mark IN the models holding the M/2 smallest draws. Every example is then IN for exactly M/2 models,
and every model trains on about N/2 examples. The matrix is a pure function of (M, N, seed), so every
trial of a study computes the same one, and the analysis recomputes it to check the shards.
"""

from __future__ import annotations

import numpy as np


def keep_matrix(n_models: int, n_examples: int, seed: int) -> np.ndarray:
    """Boolean (n_models, n_examples): True where model m trains on example i."""
    if n_models < 2 or n_models % 2:
        raise ValueError(f"n_models must be even and >= 2, got {n_models}")
    if n_examples < 1:
        raise ValueError(f"n_examples must be >= 1, got {n_examples}")
    draws = np.random.default_rng(seed).uniform(size=(n_models, n_examples))
    order = draws.argsort(axis=0).argsort(axis=0)  # rank of each model's draw, per example
    return order < n_models // 2


def pool_indices(n_available: int, pool_size: int, seed: int) -> np.ndarray:
    """Which examples of a dataset form the study's pool: a seeded sample without replacement."""
    if not 1 <= pool_size <= n_available:
        raise ValueError(f"pool_size must be in 1..{n_available}, got {pool_size}")
    return np.sort(np.random.default_rng(seed).permutation(n_available)[:pool_size])
