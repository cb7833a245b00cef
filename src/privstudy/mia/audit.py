"""Empirical lower bounds on the epsilon of a training algorithm, with a confidence that holds.

Three bounds, each valid only under its stated use:

* ``epsilon_lower_bound``: one test whose threshold was fixed before the counts were seen, on
  *independent* trials (e.g. models trained with and without a canary). With one-sided Clopper-Pearson
  bounds at alpha/2 on the false-negative and false-positive rates (both hold with probability at
  least 1 - alpha by the union bound), an (epsilon, delta)-DP algorithm must satisfy
  1 - FNR - delta <= e^eps FPR and 1 - FPR - delta <= e^eps FNR (Kairouz et al. 2015; the delta-aware
  form of Nasr et al. 2021), so eps_LB = max(0, ln((1 - FNR_ub - delta) / FPR_ub),
  ln((1 - FPR_ub - delta) / FNR_ub)).
* ``many_run_audit`` (Jagielski, Ullman and Oprea 2020): the threshold is chosen on one part of the
  trials and the bound above computed on the others.
* ``one_run_epsilon`` (Steinke, Nasr and Jagielski, NeurIPS 2023): m canaries, each included in the
  one training run independently with probability 1/2; the auditor guesses "in" for its k+ highest
  scores and "out" for its k- lowest and abstains on the rest; r = k+ + k- guesses, v correct. The
  p-value of v under (eps, delta)-DP is min(1, P[Bin(r, q) >= v] + 2 m delta alpha) with
  q = e^eps / (1 + e^eps) and alpha = max_{i=1..v} P[v - i <= Bin(r, q) < v] / i (the paper's
  Appendix D code); the bound is the largest eps whose p-value is below p (binary search, 30 halvings).
  k+ and k- must be fixed before the scores are seen; choosing among several (k+, k-) needs the
  Bonferroni correction of ``one_run_audit``.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import numpy as np
from scipy import stats as sps


def cp_upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound of a rate from k events in n trials, confidence 1 - alpha."""
    return 1.0 if k >= n else float(sps.beta.ppf(1 - alpha, k + 1, n - k))


def cp_lower(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound of a rate from k events in n trials, confidence 1 - alpha."""
    return 0.0 if k <= 0 else float(sps.beta.ppf(alpha, k, n - k + 1))


def epsilon_lower_bound(
    tp: int, n_pos: int, fp: int, n_neg: int, delta: float = 0.0, alpha: float = 0.05
) -> float:
    """Epsilon lower bound of one pre-registered test (see the module doc), confidence 1 - alpha.

    Args:
        tp: positives (trials with the canary) the test flags; n_pos: such trials.
        fp: negatives (trials without it) the test flags; n_neg: such trials.
        delta: the delta of the (epsilon, delta)-DP claim being tested.
        alpha: 1 - confidence; each of the two Clopper-Pearson bounds gets alpha / 2.
    """
    if not 0 < alpha < 1 or not 0 <= delta < 1:
        raise ValueError(f"need 0 < alpha < 1 and 0 <= delta < 1, got alpha={alpha}, delta={delta}")
    fnr_ub = cp_upper(n_pos - tp, n_pos, alpha / 2)
    fpr_ub = cp_upper(fp, n_neg, alpha / 2)
    best = 0.0
    for hit_lb, miss_ub in ((1 - fnr_ub, fpr_ub), (1 - fpr_ub, fnr_ub)):
        if hit_lb - delta > 0 and miss_ub > 0:
            best = max(best, math.log((hit_lb - delta) / miss_ub))
    return best


def many_run_audit(
    pos_scores: np.ndarray,
    neg_scores: np.ndarray,
    delta: float = 0.0,
    alpha: float = 0.05,
    search_fraction: float = 0.5,
    seed: int = 0,
) -> dict[str, float]:
    """Jagielski et al.'s audit of independent trials: threshold chosen on a search split, bound on the rest.

    Args:
        pos_scores: (n_pos,) the attack's score of the canary in each trial that included it (higher =
            "included"); one number per independently trained model.
        neg_scores: (n_neg,) the same in each trial without it.
        delta, alpha: as in ``epsilon_lower_bound``.
        search_fraction: share of each group's trials used only to choose the threshold.
        seed: of the split.

    Returns:
        ``eps_lb``, the ``threshold`` and the evaluation counts ``tp, n_pos, fp, n_neg``.
    """
    rng = np.random.default_rng(seed)
    pos, neg = rng.permutation(np.asarray(pos_scores, float)), rng.permutation(np.asarray(neg_scores, float))
    sp, sn = int(len(pos) * search_fraction), int(len(neg) * search_fraction)
    if min(sp, sn, len(pos) - sp, len(neg) - sn) < 1:
        raise ValueError("need at least one trial of each group on each side of the split")
    # The threshold maximising the bound on the search split (flag score >= threshold).
    best_t, best_eps = np.inf, -1.0
    for t in np.unique(np.r_[pos[:sp], neg[:sn]]):
        eps = epsilon_lower_bound(
            int((pos[:sp] >= t).sum()), sp, int((neg[:sn] >= t).sum()), sn, delta, alpha
        )
        if eps > best_eps:
            best_t, best_eps = t, eps
    ep, en = pos[sp:], neg[sn:]
    tp, fp = int((ep >= best_t).sum()), int((en >= best_t).sum())
    return {
        "eps_lb": epsilon_lower_bound(tp, len(ep), fp, len(en), delta, alpha),
        "threshold": float(best_t),
        "tp": tp,
        "n_pos": len(ep),
        "fp": fp,
        "n_neg": len(en),
    }


def many_run_canary_audit(
    stat: np.ndarray,
    included: np.ndarray,
    delta: float = 0.0,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Jagielski et al.'s many-run audit over the M models of a setting, each an independent trial of
    every canary (``privstudy.mia.canaries``).

    The models are split at random in two halves. On the search half, the canary and the threshold on
    its statistic (flag ``stat >= threshold``) that maximise the bound (then TPR - FPR) are chosen; the
    bound is then computed on the evaluation half only, whose models played no part in the choice, so the
    Clopper-Pearson confidence (alpha/2 per rate, see ``epsilon_lower_bound``) holds without correction.

    Args:
        stat: (M, m) the statistic of each canary in each model (higher = "included").
        included: (M, m) whether each model trained on each canary.

    Returns:
        ``eps_lb``, the chosen ``canary`` and ``threshold``, the evaluation counts ``tp, n_pos, fp,
        n_neg`` and ``n_search`` models.
    """
    stat, included = np.asarray(stat, float), np.asarray(included, bool)
    n_models = len(stat)
    perm = np.random.default_rng([seed, 0x6D616E79]).permutation(n_models)
    search, evaluate = np.sort(perm[: n_models // 2]), np.sort(perm[n_models // 2 :])
    bound = functools.lru_cache(maxsize=None)(
        lambda tp, n_pos, fp, n_neg: epsilon_lower_bound(tp, n_pos, fp, n_neg, delta, alpha)
    )
    best = (-1.0, -1.0, 0, np.inf)
    for c in range(stat.shape[1]):
        s, inc = stat[search, c], included[search, c]
        n_pos, n_neg = int(inc.sum()), int((~inc).sum())
        if not n_pos or not n_neg:
            continue
        for t in np.unique(s):
            tp, fp = int((s[inc] >= t).sum()), int((s[~inc] >= t).sum())
            # The bound first; among equal bounds (all 0 with few search models) the largest TPR - FPR.
            key = (bound(tp, n_pos, fp, n_neg), tp / n_pos - fp / n_neg)
            if key > best[:2]:
                best = (*key, c, float(t))
    _, _, c, t = best
    s, inc = stat[evaluate, c], included[evaluate, c]
    tp, fp = int((s[inc] >= t).sum()), int((s[~inc] >= t).sum())
    n_pos, n_neg = int(inc.sum()), int((~inc).sum())
    eps = epsilon_lower_bound(tp, n_pos, fp, n_neg, delta, alpha) if n_pos and n_neg else 0.0
    return {
        "eps_lb": eps,
        "canary": c,
        "threshold": t,
        "tp": tp,
        "n_pos": n_pos,
        "fp": fp,
        "n_neg": n_neg,
        "n_search": len(search),
    }


def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P-value of v correct guesses out of r (m canaries) under (eps, delta)-DP (the paper's Appendix D)."""
    if not 0 <= v <= r <= m or eps < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need 0 <= v <= r <= m, eps >= 0, 0 <= delta <= 1; got m={m} r={r} v={v}")
    q = 1.0 / (1.0 + math.exp(-eps))
    beta = float(sps.binom.sf(v - 1, r, q))  # P[Bin(r, q) >= v]
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    below = sps.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[Bin = v - i] for i = 1..v
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(beta + alpha * delta * 2 * m, 1.0)


def one_run_epsilon(m: int, r: int, v: int, delta: float, p: float = 0.05) -> float:
    """The largest eps (to 2^-30 of the bracket) whose one-run p-value is below p: the lower bound."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = 0.0, 1.0  # p_value(lo) < p (or lo = 0), p_value(hi) >= p
    while one_run_p_value(m, r, v, hi, delta) < p:
        hi += 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) < p:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_audit(
    scores: np.ndarray,
    included: np.ndarray,
    guesses: Sequence[tuple[int, int]],
    delta: float,
    p: float = 0.05,
) -> dict[str, Optional[float]]:
    """The one-run audit of one training run over its canaries, at confidence 1 - p.

    Args:
        scores: (m,) each canary's membership score (higher = "included").
        included: (m,) whether the run really trained on it.
        guesses: candidate (k_plus, k_minus) pairs, fixed in advance; with several, each is tested at
            p / len(guesses) (Bonferroni) and the best bound is returned, so the confidence holds.
        delta: the delta of the DP claim under audit.
        p: 1 - confidence.

    Returns:
        ``eps_lb`` and the ``k_plus, k_minus, r, v`` of the best guess.
    """
    s, inc = np.asarray(scores, float), np.asarray(included, bool)
    m = len(s)
    order = np.argsort(-s, kind="mergesort")
    best = {"eps_lb": 0.0, "k_plus": None, "k_minus": None, "r": 0, "v": 0}
    for k_plus, k_minus in guesses:
        if k_plus < 0 or k_minus < 0 or k_plus + k_minus > m:
            raise ValueError(f"guess ({k_plus}, {k_minus}) does not fit {m} canaries")
        # Right "in" guesses among the k+ highest, right "out" guesses among the k- lowest.
        v = int(inc[order[:k_plus]].sum() + (~inc[order[m - k_minus :]]).sum())
        r = k_plus + k_minus
        eps = one_run_epsilon(m, r, v, delta, p / len(guesses))
        if eps > best["eps_lb"] or best["k_plus"] is None:
            best = {"eps_lb": eps, "k_plus": k_plus, "k_minus": k_minus, "r": r, "v": v}
    return best
