"""The changes closed-form unlearning corrects, and the measures of how well it did. Pure numpy.

A change names the affected training points Z (indices), and gives their corrected versions Z~:

* ``flip_labels``: label poisoning as the reference code of Warnecke et al. (NDSS 2023) injects it: the
  classes are paired (s, C-1-s) (for ten classes (0, 9), (1, 8), ...), and ``budget / C`` points of each
  source class s, drawn by a seeded permutation, get label C-1-s. Unlearning restores the true labels.
  With an odd number of classes the middle class is its own partner and is left alone (its share of the
  budget is spread over the others).
* ``change_features``: chosen feature columns (a pixel position with all its channels, for images) of
  all or a fraction of the training points are set to zero or to the column's training mean.

Measures: macro-F1, the restored fraction (acc_after - acc_poisoned) / (acc_clean - acc_poisoned), and
the membership of the old labels: the target-label logit statistic log p(y') - log(1 - p(y')) of each
changed point's old (poisoned) label y', against the same statistic of unchanged training points of the
source classes under the label a flip would have given them, compared within each class. A model that
never saw the poisoned labels (retraining) scores both groups alike (AUC 0.5, since the changed points
are a random draw from their class); one that still remembers them scores the changed points higher.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FEATURE_VALUES = ("zero", "mean")


@dataclasses.dataclass(frozen=True)
class Change:
    """Affected points ``idx`` (training-set positions, sorted); the training set before (x_old, y_old)
    and after (x_new, y_new) the correction. Unlearning moves a model trained on the old set to one
    trained on the new set."""

    idx: np.ndarray
    x_old: np.ndarray
    y_old: np.ndarray
    x_new: np.ndarray
    y_new: np.ndarray
    columns: np.ndarray  # feature columns changed (empty for labels)

    @property
    def n_changed(self) -> int:
        return len(self.idx)


def flip_partner(n_classes: int) -> np.ndarray:
    """partner[s] = C - 1 - s: the pairs (0, C-1), (1, C-2), ..."""
    return np.arange(n_classes)[::-1].copy()


def flip_labels(y: np.ndarray, n_classes: int, budget: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(poisoned labels, flipped indices): ``budget // sources`` points of every source class (a class
    that is not its own partner), the first of that class in a seeded permutation, relabelled to the
    partner class. A class with fewer points gives all of them."""
    y = np.asarray(y)
    if budget < 0:
        raise ValueError(f"flip budget must be >= 0, got {budget}")
    partner = flip_partner(n_classes)
    sources = [s for s in range(n_classes) if partner[s] != s]
    per_class = budget // len(sources) if sources else 0
    order = np.random.default_rng([seed, 0x666C6970]).permutation(len(y))
    chosen = [order[y[order] == s][:per_class] for s in sources]
    idx = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    poisoned = y.copy()
    poisoned[idx] = partner[y[idx]]
    return poisoned, idx.astype(np.int64)


def label_change(x: np.ndarray, y_true: np.ndarray, n_classes: int, budget: int, seed: int) -> Change:
    """Poisoning then its correction: old labels poisoned, new labels true; features unchanged."""
    poisoned, idx = flip_labels(y_true, n_classes, budget, seed)
    return Change(idx, x, poisoned, x, np.asarray(y_true).copy(), np.zeros(0, np.int64))


def feature_columns(x: np.ndarray, n_columns: int, seed: int) -> np.ndarray:
    """``n_columns`` feature columns drawn (seeded) among those that vary over the training set; for
    images (n, H, W, C) a column is a pixel position (flat index h * W + w)."""
    flat = x.reshape(len(x), -1) if x.ndim == 2 else x.reshape(len(x), x.shape[1] * x.shape[2], -1).max(-1)
    varying = np.flatnonzero(flat.max(axis=0) != flat.min(axis=0))
    if not 1 <= n_columns <= len(varying):
        raise ValueError(
            f"feature_columns must be in 1..{len(varying)} (the columns that vary), got {n_columns}"
        )
    rng = np.random.default_rng([seed, 0x66656174])
    return np.sort(rng.choice(varying, size=n_columns, replace=False))


def change_features(
    x: np.ndarray, y: np.ndarray, n_columns: int, fraction: float, value: str, seed: int
) -> Change:
    """Set ``n_columns`` columns of a ``fraction`` of the points (all when 1) to 0 or the column's mean
    over the training set; the labels stay."""
    if value not in FEATURE_VALUES:
        raise ValueError(f"feature value must be one of {', '.join(FEATURE_VALUES)}, got {value!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"feature fraction must be in (0, 1], got {fraction}")
    cols = feature_columns(x, n_columns, seed)
    rng = np.random.default_rng([seed, 0x706F696E])
    k = max(1, int(round(fraction * len(x))))
    idx = np.sort(rng.choice(len(x), size=k, replace=False)) if k < len(x) else np.arange(len(x))
    x_new = np.array(x, dtype=np.float32, copy=True)
    view = x_new.reshape(len(x), -1) if x.ndim == 2 else x_new.reshape(len(x), x.shape[1] * x.shape[2], -1)
    fill = 0.0 if value == "zero" else view[:, cols].mean(axis=0)
    rows = view[idx]
    rows[:, cols] = fill
    view[idx] = rows
    return Change(idx.astype(np.int64), np.asarray(x, np.float32), y, x_new, y, cols)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean over classes of F1 (a class never predicted nor present counts 0 and is left out
    only when absent from both)."""
    from sklearn.metrics import f1_score

    labels = np.union1d(np.unique(y_true), np.unique(y_pred))
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def restored_fraction(acc_after: float, acc_poisoned: float, acc_clean: float) -> float:
    """(after - poisoned) / (clean - poisoned); NaN when poisoning cost nothing (clean <= poisoned)."""
    lost = acc_clean - acc_poisoned
    return float((acc_after - acc_poisoned) / lost) if lost > 0 else float("nan")


def label_statistic(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p(label) - log(1 - p(label)) from logits (n, C), computed stably."""
    from scipy.special import log_softmax, logsumexp

    logp = log_softmax(np.asarray(logits, np.float64), axis=1)
    rows = np.arange(len(labels))
    own = logp[rows, labels]
    others = logp.copy()
    others[rows, labels] = -np.inf
    return own - logsumexp(others, axis=1)


def old_label_groups(change: Change, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(changed indices, control indices, the labels scored): the changed points under their old
    labels; the unchanged training points of the source classes under their partner label."""
    partner = flip_partner(n_classes)
    flipped = np.zeros(len(change.y_new), bool)
    flipped[change.idx] = True
    sources = np.unique(change.y_new[change.idx])
    control = np.flatnonzero(~flipped & np.isin(change.y_new, sources))
    labels = np.asarray(change.y_old).copy()
    labels[control] = partner[change.y_new[control]]
    return change.idx, control, labels


def old_label_auc(logits_train: np.ndarray, change: Change, n_classes: int) -> float:
    """AUC of the old-label statistic, changed points (positives) against the controls, stratified by
    true class: the AUC within each source class, averaged with the class's share of the changed
    points as weight (classes differ in how plausible their partner label is, and the changed points
    are spread evenly over the classes while the controls are not). NaN without both groups."""
    from privstudy.stats.ranks import auc

    changed, control, labels = old_label_groups(change, n_classes)
    if not len(changed) or not len(control):
        return float("nan")
    stat = label_statistic(logits_train, labels)
    total, weight = 0.0, 0
    for s in np.unique(change.y_new[changed]):
        pos = changed[change.y_new[changed] == s]
        neg = control[change.y_new[control] == s]
        if not len(neg):
            continue
        scores = np.r_[stat[pos], stat[neg]]
        total += len(pos) * auc(scores, np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)])
        weight += len(pos)
    return total / weight if weight else float("nan")
