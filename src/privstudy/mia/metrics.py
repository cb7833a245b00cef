"""Metrics of a membership attack from its scores (higher = more likely a member) and the truth.

ROC points come from sweeping one global threshold over the scores (ties move together). TPR at a
given FPR is the best TPR among thresholds whose FPR does not exceed it; PPV there is the attack's
precision on this evaluation set (its member/non-member ratio). The empirical epsilon lower bound at
an operating point is max(log(TPR/FPR), log((1-FPR)/(1-TPR))) computed with one-sided 95%
Clopper-Pearson bounds (TPR from below, FPR from above), as in Jagielski et al. 2020: a differentially
private training with that epsilon (delta = 0) could not have produced this attack, with 95% confidence.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

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


def _cp_lower(k: int, n: int, alpha: float = 0.05) -> float:
    return 0.0 if k == 0 else float(sps.beta.ppf(alpha, k, n - k + 1))


def _cp_upper(k: int, n: int, alpha: float = 0.05) -> float:
    return 1.0 if k == n else float(sps.beta.ppf(1 - alpha, k + 1, n - k))


def epsilon_lower_bound(tpr: float, fpr: float, n_pos: int, n_neg: int) -> float:
    """Empirical epsilon lower bound (delta = 0) of one operating point, Clopper-Pearson at 95%."""
    tp, fp = int(round(tpr * n_pos)), int(round(fpr * n_neg))
    tpr_lo, fpr_hi = _cp_lower(tp, n_pos), _cp_upper(fp, n_neg)
    tnr_lo, fnr_hi = _cp_lower(n_neg - fp, n_neg), _cp_upper(n_pos - tp, n_pos)
    bounds = [0.0]
    if tpr_lo > 0 and fpr_hi > 0:
        bounds.append(np.log(tpr_lo / fpr_hi))
    if tnr_lo > 0 and fnr_hi > 0:
        bounds.append(np.log(tnr_lo / fnr_hi))
    return float(max(bounds))


def attack_metrics(
    scores: np.ndarray, is_member: np.ndarray, fpr_points: tuple[float, ...] = FPR_POINTS
) -> dict[str, float]:
    """AUC, best balanced accuracy, advantage, TPR / PPV / epsilon lower bound at each FPR point."""
    m = np.asarray(is_member, dtype=bool)
    fpr, tpr, _ = roc_curve(scores, m)
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    out = {
        "auc": rank_auc(np.asarray(scores, dtype=np.float64), m),
        "balanced_accuracy": float(np.max((tpr + 1 - fpr) / 2)),
        "advantage": float(np.max(tpr - fpr)),
        "n_members": float(n_pos),
        "n_nonmembers": float(n_neg),
    }
    eps = []
    for point in fpr_points:
        t, f = tpr_at_fpr(fpr, tpr, point)
        tag = f"{point * 100:g}pct"
        out[f"tpr_at_fpr_{tag}"] = t
        tp, fp = t * n_pos, f * n_neg
        out[f"ppv_at_fpr_{tag}"] = float(tp / (tp + fp)) if tp + fp > 0 else float("nan")
        e = epsilon_lower_bound(t, f, n_pos, n_neg)
        out[f"eps_lb_at_fpr_{tag}"] = e
        eps.append(e)
    out["eps_lb"] = float(max(eps))
    return out
