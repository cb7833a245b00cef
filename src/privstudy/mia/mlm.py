"""Membership inference on masked language models (Mireshghallah et al., EMNLP 2022): the note splits,
the attack scores from pseudo-log-likelihoods, and note-level ("user-level") aggregation.

Scores are "higher = more likely a member". The loss attack uses the target's PLL alone; the
likelihood-ratio attack uses PLL_target - PLL_reference (the paper's statistic log p(s; theta_R) -
log p(s; theta) <= t, sign flipped; the energy normalisers Z only shift the threshold). The
``_per_token`` variants divide by the number of scored tokens (the "normalised energy" of the
released code).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

ATTACKS = ("loss", "loss_per_token", "ratio", "ratio_per_token")
LEVELS = ("sequence", "note_mean", "note_max")
PARTS = ("member", "nonmember", "population", "near", "far")
CONTRASTS = {"nonmember": "non-members", "near": "near externals", "far": "far externals"}


class SplitError(ValueError):
    """The corpus cannot give the asked-for parts."""


@dataclasses.dataclass(frozen=True)
class NoteSplit:
    """Disjoint sets of distinct-note indices: target training (members), the attacker's population (the
    reference model's training), held-out non-members, and near externals (notes filed under a held-out
    specialty, used nowhere else)."""

    members: np.ndarray
    population: np.ndarray
    nonmembers: np.ndarray
    near: np.ndarray


def split_notes(
    specialties: Sequence[tuple[str, ...]],
    external_specialties: Sequence[str],
    n_members: int,
    n_population: int,
    n_nonmembers: int,
    n_near: int,
    seed: int,
) -> NoteSplit:
    """Split distinct notes: every note filed under any of ``external_specialties`` is a near external
    (and nothing else); the rest are shuffled by ``seed`` and cut into members, population and
    non-members. Each part takes the first n of its shuffled notes.

    Raises:
        SplitError: when the corpus has fewer notes than asked for, with the counts.
    """
    held = set(external_specialties)
    is_near = np.array([bool(held & set(s)) for s in specialties], dtype=bool)
    rng = np.random.default_rng(seed)
    inside = rng.permutation(np.flatnonzero(~is_near))
    outside = rng.permutation(np.flatnonzero(is_near))
    need = n_members + n_population + n_nonmembers
    if need > len(inside):
        raise SplitError(
            f"member, reference and non-member notes ({n_members} + {n_population} + {n_nonmembers}) "
            f"exceed the {len(inside)} notes outside the external specialties; lower them"
        )
    if n_near > len(outside):
        raise SplitError(
            f"near_notes={n_near} exceeds the {len(outside)} notes filed under "
            f"{sorted(held) or 'no external specialty'}; lower it or name other external_specialties"
        )
    a, b = n_members, n_members + n_population
    return NoteSplit(
        np.sort(inside[:a]), np.sort(inside[a:b]), np.sort(inside[b:need]), np.sort(outside[:n_near])
    )


def attack_scores(
    attack: str, pll_target: np.ndarray, pll_reference: np.ndarray, n_tokens: np.ndarray
) -> np.ndarray:
    """Per-sequence membership scores of ``attack`` (one of ``ATTACKS``), higher = member.

    Args:
        pll_target, pll_reference, n_tokens: (n,) PLLs in nats and the tokens they sum over.
    """
    t = np.asarray(pll_target, np.float64)
    n = np.asarray(n_tokens, np.float64)
    if attack == "loss":
        return t
    if attack == "loss_per_token":
        return t / n
    r = t - np.asarray(pll_reference, np.float64)
    if attack == "ratio":
        return r
    if attack == "ratio_per_token":
        return r / n
    raise ValueError(f"unknown attack {attack!r}; valid: {', '.join(ATTACKS)}")


def by_note(scores: np.ndarray, notes: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Note-level scores: the mean or max of each note's sequence scores.

    Returns:
        (note ids sorted, (n_notes,) their scores).
    """
    ids, inv = np.unique(np.asarray(notes), return_inverse=True)
    s = np.asarray(scores, np.float64)
    if how == "mean":
        return ids, np.bincount(inv, weights=s) / np.bincount(inv)
    if how == "max":
        out = np.full(len(ids), -np.inf)
        np.maximum.at(out, inv, s)
        return ids, out
    raise ValueError(f"unknown note aggregation {how!r}; valid: mean, max")


def pseudo_perplexity(pll: np.ndarray, n_tokens: np.ndarray) -> float:
    """exp(-sum PLL / sum tokens): the pseudo-perplexity of a set of sequences."""
    total = float(np.sum(n_tokens))
    return float(np.exp(-float(np.sum(pll)) / total)) if total > 0 else float("nan")
