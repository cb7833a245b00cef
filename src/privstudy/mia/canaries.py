"""Audit canaries: extra examples each model trains on with probability 1/2, independently.

A study with ``canaries: m`` draws m examples from outside its pool and holdout. Every model m'
includes each canary in its training set by its own fair coin (``canary_inclusion``), independently of
the keep matrix, of the other canaries and of the other models: the setting of Steinke, Nasr and
Jagielski's one-run audit (each canary is a Bernoulli(1/2) trial of one training run) and, across the
models of a setting, of a many-run audit (each model is an independent trial of each canary).

Because the coins are independent across models, the other models of a setting may serve as shadows
for a canary (``canary_scores``) without the count of their IN / OUT shadows saying anything about
the target's coin (unlike the pool, whose keep matrix puts every example in exactly M/2 models).

Canary types: ``natural`` (the example with its label) and ``mislabelled`` (its label replaced by a
uniformly drawn different class, the same for every model): a mislabelled example is learnt only by
memorising it, the worst case the audit literature uses.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import norm

CANARY_TYPES = ("mislabelled", "natural")
SCORES = ("loss", "lira")  # how a canary is scored for the audit (see canary_scores)


def canary_inclusion(n_canaries: int, seed: int, model_index: int) -> np.ndarray:
    """(n_canaries,) bool: which canaries model ``model_index`` trains on; a fair coin each."""
    return np.random.default_rng([seed, model_index, 0x63616E]).random(n_canaries) < 0.5


def canary_indices(candidates: np.ndarray, n_canaries: int, seed: int) -> np.ndarray:
    """A seeded sample of ``n_canaries`` of the ``candidates`` (indices outside the pool and holdout)."""
    if n_canaries > len(candidates):
        raise ValueError(
            f"canaries={n_canaries} exceed the {len(candidates)} examples outside the pool and holdout; "
            f"lower canaries or pool_size"
        )
    return np.sort(np.random.default_rng([seed, 0x63616E64]).permutation(candidates)[:n_canaries])


def canary_labels(labels: np.ndarray, n_classes: int, kind: str, seed: int) -> np.ndarray:
    """The canaries' training labels: as they are (natural), or each moved to another class (mislabelled)."""
    labels = np.asarray(labels)
    if kind == "natural":
        return labels.copy()
    if kind != "mislabelled":
        raise ValueError(f"unknown canary type {kind!r}; valid: {', '.join(CANARY_TYPES)}")
    shift = np.random.default_rng([seed, 0x6C6162]).integers(1, n_classes, size=len(labels))
    return ((labels + shift) % n_classes).astype(labels.dtype)


def canary_scores(stat: np.ndarray, loss: np.ndarray, included: np.ndarray, target: int) -> dict:
    """Membership scores (higher = "included") of every canary for one target model.

    Args:
        stat: (M, m) each model's LiRA statistic (logit-scaled confidence in the canary's label).
        loss: (M, m) each model's loss on each canary.
        included: (M, m) each model's coins.
        target: the model audited.

    Returns:
        ``{"loss": -loss[target], "lira": ...}``. ``lira`` is online LiRA with one global spread: per
        canary, the medians of the other models' statistics where they included it (IN) and where they
        did not (OUT), a Gaussian log-likelihood ratio with the pooled within-canary spread. A canary no
        other model included (or excluded) uses the mean IN (OUT) median of the others. The other models'
        coins are independent of the target's, so the score is a function of the target's output and of
        independent randomness only, as the one-run audit requires.
    """
    stat, included = np.asarray(stat, float), np.asarray(included, bool)
    others = np.arange(len(stat)) != target
    s, inc = stat[others], included[others]

    def side(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = np.where(mask, s, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns: no such shadow
            med = np.nanmedian(v, axis=0)
            var = np.nanvar(v, axis=0, ddof=1)
        fill = np.nanmean(med) if np.isfinite(med).any() else 0.0
        return np.where(np.isfinite(med), med, fill), var

    mu_in, var_in = side(inc)
    mu_out, var_out = side(~inc)
    pooled = np.concatenate([var_in[np.isfinite(var_in)], var_out[np.isfinite(var_out)]])
    sd = float(np.sqrt(pooled.mean())) if len(pooled) else 1.0
    sd = sd if sd > 0 else 1.0
    obs = stat[target]
    lira = norm.logpdf(obs, mu_in, sd) - norm.logpdf(obs, mu_out, sd)
    return {"loss": -np.asarray(loss, float)[target], "lira": np.nan_to_num(lira, nan=0.0)}


def default_guesses(n_canaries: int) -> list[tuple[int, int]]:
    """The (k+, k-) guesses of the one-run audit, fixed before any score is seen: k+ = k- at 5%, 10% and
    25% of the canaries, and k+ alone at 10% (a memorised canary stands out at the top; an excluded one
    is not always at the bottom). Pairs that round to no guess are dropped."""
    out = []
    for k_plus, k_minus in (
        (n_canaries // 20, n_canaries // 20),
        (n_canaries // 10, n_canaries // 10),
        (n_canaries // 4, n_canaries // 4),
        (n_canaries // 10, 0),
    ):
        if k_plus + k_minus > 0 and (k_plus, k_minus) not in out:
            out.append((k_plus, k_minus))
    return out
