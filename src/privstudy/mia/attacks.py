"""Membership inference attacks: recorded per-example scores of M models in, membership scores out.

Every attack scores the examples for one *target* model, using the other M - 1 models of the study as
shadow / reference models (whose membership, the keep matrix, the attacker is assumed to know), and
returns one score per example, higher meaning "more likely a member of the target's training set".
Pure numpy / scipy / scikit-learn: no TensorFlow, no files.

Attacks (name -> what):

* ``loss``, ``confidence``, ``entropy``, ``modified_entropy``: global-threshold attacks on the target's
  loss, true-class probability, prediction entropy and modified entropy (Song and Mittal 2021).
* ``shadow``: Shokri et al. 2017: per class, an attack classifier trained on the shadow models'
  prediction vectors labelled in / out, applied to the target's prediction vectors of *other* examples
  (two folds, cross-fitted).
* ``lira_online``, ``lira_online_fixed``: LiRA (Carlini et al. 2022), per-example Gaussians of the
  logit-scaled confidence from IN and OUT shadows (median as the mean, as in the authors' code),
  per-example variances, or one global variance shared by IN and OUT (as the authors' code),
  log-likelihood ratio averaged over test-time views.
* ``lira_offline``, ``lira_offline_fixed``: OUT shadows only; the one-sided test on
  Pr[Z > s], Z ~ N(mu_out, sigma_out^2) (scored as -log Pr[Z > s]), averaged over views. One-sided as in
  the paper: the authors' plot.py scores |s - mu_out| two-sided, which also flags examples the target
  fits *worse* than its shadows do (not a membership signal).
* ``reference``: the reference-model likelihood ratio (Mireshghallah et al. 2022): mean OUT reference
  loss minus the target's loss. ``lira_offset``: the target's statistic minus the mean OUT one.
* ``rmia``: RMIA offline (Zarifzadeh et al. 2024): LR(x) = p_target(x) / Pr(x) with
  Pr(x) = ((1 + a) mean_OUT p_ref(x) + (1 - a)) / 2, scored as the fraction of population points z
  (here: all scored examples) with LR(x) / LR(z) > gamma.

Each example's Gaussians are fitted on the same number of shadows (the smallest IN count, the
smallest OUT count), with the unbiased variance; with a single shadow per side (M = 4) there is no
variance to estimate and both variants use a zero spread: use M >= 8. The "global variance" of the
fixed-variance LiRA variants is the pooled within-example variance (the
mean over examples of the per-example variance), not the variance of all scores together.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Optional

import numpy as np
from scipy.stats import norm

RMIA_A = 0.3  # RMIA's parameter a: the one offline default every caller shares

THRESHOLD_ATTACKS = ("loss", "confidence", "entropy", "modified_entropy")
ATTACKS = THRESHOLD_ATTACKS + (
    "shadow",
    "lira_online",
    "lira_online_fixed",
    "lira_offline",
    "lira_offline_fixed",
    "reference",
    "lira_offset",
    "rmia",
)
ONLINE = {"lira_online", "lira_online_fixed"}  # need IN and OUT shadows of every example: M >= 4
EPS_STD = 1e-30


@dataclasses.dataclass(frozen=True)
class ScoreSet:
    """The recorded scores of M models on N examples, and who trained on what."""

    keep: np.ndarray  # (M, N) bool: model m trained on example i
    labels: np.ndarray  # (N,)
    loss: np.ndarray  # (M, N)
    p_true: np.ndarray  # (M, N)
    entropy: np.ndarray  # (M, N)
    mentr: np.ndarray  # (M, N)
    views: np.ndarray  # (M, N, V) LiRA statistic per test-time view (view 0: the example itself)
    probs: Optional[np.ndarray] = None  # (M, N, C), for the shadow attack

    def __post_init__(self) -> None:
        m, n = self.keep.shape
        for name in ("loss", "p_true", "entropy", "mentr"):
            if getattr(self, name).shape != (m, n):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {(m, n)}")
        if self.views.shape[:2] != (m, n):
            raise ValueError(f"views has shape {self.views.shape}, expected ({m}, {n}, V)")

    @classmethod
    def from_logits(cls, keep: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> "ScoreSet":
        """The scores of M models given their logits (M, N, C) on N examples with labels (N,).

        The one view is the LiRA statistic; for two classes with logits (0, z) it is exactly z.
        """
        from privstudy.mia.scores import example_scores

        sc = [example_scores(z, labels) for z in logits]
        col = {
            k: np.stack([d[k] for d in sc]) for k in ("loss", "p_true", "entropy", "mentr", "probs", "lira")
        }
        return cls(
            keep=keep,
            labels=np.asarray(labels),
            loss=col["loss"],
            p_true=col["p_true"],
            entropy=col["entropy"],
            mentr=col["mentr"],
            views=col["lira"][..., None],
            probs=col["probs"],
        )

    @property
    def n_models(self) -> int:
        return self.keep.shape[0]


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median over axis 0 of values (S, N, V) where mask (S, N) holds; nan where none."""
    v = np.where(mask[..., None], values, np.nan)
    with warnings.catch_warnings():  # all-nan columns (no such shadow) are expected: nan, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(v, axis=0)


def _masked_std(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Standard deviation over axis 0 of values (S, N, V) where mask (S, N) holds, summed in sorted order:
    then equal sets of values give equal bits whatever their models' order (ties between examples stay
    ties), and ``privstudy.mia.shared`` reproduces it exactly."""
    v = np.sort(np.where(mask[..., None], values, np.nan), axis=0)  # NaN last
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(v, axis=0, ddof=1 if mask.sum(axis=0).min() > 1 else 0)


def balanced(mask: np.ndarray) -> np.ndarray:
    """The first k True entries of every column of ``mask`` (S, N), k the smallest column count.

    Every attack that uses shadow / reference models uses the same number of them for every example:
    with LiRA's keep matrix an example IN for the target is IN for one shadow fewer (and OUT for one
    more) than an example the target did not train on, so the count itself would leak membership. On
    scores with no signal, unbalanced averages scored AUC 0.515 (reference), 0.509 (RMIA) and 0.42
    (online LiRA) at M = 8.
    """
    k = int(mask.sum(axis=0).min())
    return mask & (np.cumsum(mask, axis=0) <= k)


def _gauss_stats(data: ScoreSet, target: int, which: str, fixed: bool) -> tuple[np.ndarray, np.ndarray]:
    shadows = np.arange(data.n_models) != target
    vals = data.views[shadows]
    mask = balanced(data.keep[shadows] if which == "in" else ~data.keep[shadows])
    mu = _masked_median(vals, mask)
    sd = _masked_std(vals, mask)
    if fixed:
        sd = np.full_like(sd, np.sqrt(np.nanmean(sd**2)))
    return mu, sd


def lira(data: ScoreSet, target: int, online: bool, fixed: bool) -> np.ndarray:
    """LiRA membership scores of the target's examples (see the module doc)."""
    if online and data.n_models < 4:
        raise ValueError(
            f"online LiRA needs IN and OUT shadows of every example: n_models >= 4, got {data.n_models}"
        )
    return lira_scores(
        data.views[target], lambda side: _gauss_stats(data, target, side, fixed), online, fixed
    )


def lira_scores(
    obs: np.ndarray, stats: Callable[[str], tuple[np.ndarray, np.ndarray]], online: bool, fixed: bool
) -> np.ndarray:
    """LiRA's scores (N,) from the target's statistics ``obs`` (N, V) and ``stats(side)``, the (median,
    spread) (N, V) of the example's IN or OUT shadows (``side``: "in" or "out")."""
    mu_out, sd_out = stats("out")
    if online:
        mu_in, sd_in = stats("in")
        if fixed:
            # One spread for IN and OUT, as the authors' plot.py (std_in = std_out); theirs is np.std of
            # all IN scores, which also counts the spread between examples' medians: here it is the
            # pooled within-example spread of the IN and OUT shadows.
            sd_in = sd_out = np.sqrt((sd_in**2 + sd_out**2) / 2)
        score = norm.logpdf(obs, mu_in, sd_in + EPS_STD) - norm.logpdf(obs, mu_out, sd_out + EPS_STD)
    else:
        # log Pr[Z <= s] ranks like -log Pr[Z > s], which keeps its resolution far in the upper tail
        # (where logcdf rounds to 0 and members would tie).
        score = -norm.logsf(obs, mu_out, sd_out + EPS_STD)
    return np.nan_to_num(score.mean(axis=1), nan=0.0, posinf=1e300, neginf=-1e300)


def _out_mean(values: np.ndarray, keep: np.ndarray, target: int) -> np.ndarray:
    """Mean over the same number of OUT shadows for every example (see ``balanced``): (N,)."""
    shadows = np.arange(len(values)) != target
    out = balanced(~keep[shadows])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(out, values[shadows], 0.0).sum(axis=0) / out.sum(axis=0)


def reference(data: ScoreSet, target: int) -> np.ndarray:
    """Mean OUT reference loss minus the target's loss."""
    return np.nan_to_num(_out_mean(data.loss, data.keep, target) - data.loss[target])


def lira_offset(data: ScoreSet, target: int) -> np.ndarray:
    """The target's LiRA statistic minus the mean OUT reference statistic (view 0)."""
    return np.nan_to_num(data.views[target, :, 0] - _out_mean(data.views[..., 0], data.keep, target))


def rmia(data: ScoreSet, target: int, a: float = RMIA_A, gamma: float = 1.0) -> np.ndarray:
    """RMIA offline with parameter ``a``; population points z: all the scored examples."""
    return rmia_scores(data.p_true[target], _out_mean(data.p_true, data.keep, target), a, gamma)


def rmia_scores(
    p_target: np.ndarray, p_out_mean: np.ndarray, a: float = RMIA_A, gamma: float = 1.0
) -> np.ndarray:
    """RMIA's scores (N,) from the target's true-class probabilities and their mean over OUT shadows."""
    pr_x = 0.5 * ((1 + a) * np.nan_to_num(p_out_mean, nan=0.0) + (1 - a))
    lr = p_target / np.maximum(pr_x, 1e-300)
    z = np.sort(lr)
    # fraction of z with LR(x) / LR(z) > gamma, i.e. LR(z) < LR(x) / gamma
    return np.searchsorted(z, lr / gamma, side="left") / len(z)


def shadow_folds(n: int, seed: int = 0) -> np.ndarray:
    """Fold (0 or 1) of each of n examples: the shadow attack scores fold f with classifiers trained on
    the other fold only, so no example is scored by a classifier that saw its own rows."""
    return np.random.default_rng([seed, 0x73686164]).permutation(n) % 2


def shadow(data: ScoreSet, target: int, seed: int = 0, max_rows_per_class: int = 10000) -> np.ndarray:
    """Shokri et al.: per-class in/out classifiers on the shadows' outputs, applied to the target's.

    As in the paper, the attack models learn from the shadows' own IN/OUT data and are then applied to
    other data: the examples are split in two folds (``shadow_folds``), and the target's examples of one
    fold are scored by classifiers trained on the shadows' rows of the other fold (cross-fitting). The
    classifier is gradient boosting (50 rounds) on the log-probabilities, fitted on at most
    ``max_rows_per_class`` (shadow model, example) pairs per class and fold: it is by far the costliest
    attack (measured: 16-36 s per target at N = 10,000 with 20,000 rows and 100 rounds on 2 busy cores).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    if data.probs is None:
        raise ValueError("the shadow attack needs the recorded probability vectors (column probs)")
    rng = np.random.default_rng(seed)
    shadows = np.flatnonzero(np.arange(data.n_models) != target)
    keep = data.keep[shadows]
    # As many IN as OUT rows of every example: otherwise an example IN for the target is IN for one
    # shadow fewer than the others, and the classifier could learn that per-example prior.
    k = int(min(keep.sum(axis=0).min(), (~keep).sum(axis=0).min()))
    use = (keep & (np.cumsum(keep, axis=0) <= k)) | (~keep & (np.cumsum(~keep, axis=0) <= k))
    fold = shadow_folds(data.keep.shape[1], seed)
    scores = np.zeros(data.keep.shape[1])
    for c in np.unique(data.labels):
        for f in (0, 1):
            train_cols = np.flatnonzero((data.labels == c) & (fold != f))
            test_cols = np.flatnonzero((data.labels == c) & (fold == f))
            if not len(train_cols) or not len(test_cols):
                continue
            # The (shadow, example) rows used, as flat indices into (shadows, train_cols); features are
            # computed for the sampled rows only (the whole log-probability array is M x N x C).
            rows = np.flatnonzero(use[:, train_cols].reshape(-1))
            y = keep[:, train_cols].reshape(-1)[rows]
            if len(rows) > max_rows_per_class:
                pick = rng.choice(len(rows), max_rows_per_class, replace=False)
                rows, y = rows[pick], y[pick]
            if y.all() or not y.any():
                continue  # no contrast to learn: score 0 for these examples
            s_idx, c_idx = np.divmod(rows, len(train_cols))
            x = _log_probs(data.probs[shadows[s_idx], train_cols[c_idx]])
            clf = HistGradientBoostingClassifier(max_iter=50, random_state=seed).fit(x, y)
            scores[test_cols] = clf.predict_proba(_log_probs(data.probs[target, test_cols]))[:, 1]
    return scores


def _log_probs(probs: np.ndarray) -> np.ndarray:
    """The shadow attack's features: log-probabilities (float64, floored at 1e-30)."""
    return np.log(np.clip(probs.astype(np.float64), 1e-30, 1.0))


def run_attack(name: str, data: ScoreSet, target: int, rmia_a: float = RMIA_A, seed: int = 0) -> np.ndarray:
    """Membership scores (higher = member) of every example for one target model."""
    table: dict[str, Callable[[], np.ndarray]] = {
        "loss": lambda: -data.loss[target],
        "confidence": lambda: data.p_true[target],
        "entropy": lambda: -data.entropy[target],
        "modified_entropy": lambda: -data.mentr[target],
        "shadow": lambda: shadow(data, target, seed),
        "lira_online": lambda: lira(data, target, online=True, fixed=False),
        "lira_online_fixed": lambda: lira(data, target, online=True, fixed=True),
        "lira_offline": lambda: lira(data, target, online=False, fixed=False),
        "lira_offline_fixed": lambda: lira(data, target, online=False, fixed=True),
        "reference": lambda: reference(data, target),
        "lira_offset": lambda: lira_offset(data, target),
        "rmia": lambda: rmia(data, target, a=rmia_a),
    }
    if name not in table:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACKS)}")
    return np.asarray(table[name](), dtype=np.float64)


def available_attacks(data: ScoreSet) -> list[str]:
    """The attacks this score set supports (online LiRA needs M >= 4; shadow needs probability vectors)."""
    names = [a for a in ATTACKS if not (a in ONLINE and data.n_models < 4)]
    return [a for a in names if not (a == "shadow" and data.probs is None)]
