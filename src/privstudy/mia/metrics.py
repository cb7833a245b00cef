"""Metrics of a membership attack from its scores (higher = more likely a member) and the truth.

ROC points come from sweeping one global threshold over the scores (ties move together). TPR at a
given FPR is the best TPR among thresholds whose FPR does not exceed it; PPV there is the attack's
precision on this evaluation set (its member/non-member ratio; NaN where no example is flagged).
Advantage is max(TPR - FPR) over thresholds (TensorFlow Privacy reports max |TPR - FPR|, which also
counts an attack that is right by being reliably wrong).

No epsilon lower bound is computed here: the examples of one trained model are not independent trials
of a DP mechanism. Bounds with a confidence that holds are in ``privstudy.mia.audit``.
"""

from __future__ import annotations

import numpy as np

from privstudy.stats.ranks import auc as rank_auc

FPR_POINTS = (0.001, 0.01, 0.1)


def roc_curve(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) from the strictest threshold (0, 0) to the loosest (1, 1)."""
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(is_member, dtype=bool)
    if s.shape != m.shape or s.ndim != 1:
        raise ValueError(f"scores and is_member must be 1-d of one length, got {s.shape} and {m.shape}")
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("need at least one member and one non-member")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, m_sorted = s[order], m[order]
    tp, fp = np.cumsum(m_sorted), np.cumsum(~m_sorted)
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tpr = np.r_[0.0, tp[last_of_tie] / n_pos]
    fpr = np.r_[0.0, fp[last_of_tie] / n_neg]
    thr = np.r_[np.inf, s_sorted[last_of_tie]]
    return fpr, tpr, thr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> tuple[float, float]:
    """The best (tpr, fpr) among ROC points with fpr <= target."""
    ok = fpr <= target + 1e-12
    i = int(np.argmax(np.where(ok, tpr, -1.0)))
    return float(tpr[i]), float(fpr[i])


MIN_RESOLVING_NONMEMBERS = 10
"""A TPR at FPR f is reported only where n_nonmembers * f >= this: below it the "FPR" is a handful of
non-members (at 0.1% FPR with 900 non-members, TPR at zero false positives)."""


def resolves(n_nonmembers: int, fpr: float) -> bool:
    """Whether ``n_nonmembers`` non-members can resolve a false-positive rate of ``fpr``."""
    return n_nonmembers * fpr >= MIN_RESOLVING_NONMEMBERS


def attack_metrics(
    scores: np.ndarray,
    is_member: np.ndarray,
    fpr_points: tuple[float, ...] = FPR_POINTS,
    roc: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """AUC, best balanced accuracy, advantage = max(TPR - FPR), TPR and PPV at each FPR point.

    ``roc``: ``roc_curve(scores, is_member)`` where the caller has it already."""
    m = np.asarray(is_member, dtype=bool)
    fpr, tpr, _ = roc if roc is not None else roc_curve(scores, m)
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    out = {
        "auc": rank_auc(np.asarray(scores, dtype=np.float64), m),
        "balanced_accuracy": float(np.max((tpr + 1 - fpr) / 2)),
        "advantage": float(np.max(tpr - fpr)),
        "n_members": float(n_pos),
        "n_nonmembers": float(n_neg),
    }
    for point in fpr_points:
        t, f = tpr_at_fpr(fpr, tpr, point)
        tag = f"{point * 100:g}pct"
        out[f"tpr_at_fpr_{tag}"] = t
        tp, fp = t * n_pos, f * n_neg
        out[f"ppv_at_fpr_{tag}"] = float(tp / (tp + fp)) if tp + fp > 0 else float("nan")
    return out
