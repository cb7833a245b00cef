"""What the attacker knows: the shadow data of Shokri et al. (2017) and their per-class attack models.

Pure numpy / scikit-learn; a model is reached only through a ``query`` function (records -> released
probability vectors), so that the model-based synthesis sees exactly what a user of the model sees.

Knowledge levels (``KNOWLEDGE``), strongest first:

* ``real``: records from the target's population, disjoint from its training data.
* ``noisy``: the same records with a fraction of their binary features flipped (exactly
  ``round(fraction * d)`` features per record, chosen uniformly), labels kept.
* ``marginals``: records sampled feature by feature from per-class marginal frequencies (labels drawn
  from the class frequencies): the attacker knows each feature's frequency within each class, nothing
  about how features co-occur. The paper does not say how its marginal-based records got labels;
  per-class marginals are the reading under which the records can train a classifier at all.
* ``model``: Algorithm 1 of the paper (hill climbing on the target's confidence), one search per
  record, queries counted.
* ``random``: uniformly random features and labels: no information (the null attacker).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

KNOWLEDGE = ("real", "noisy", "marginals", "model", "random")
Query = Callable[[np.ndarray], np.ndarray]


def flip_features(x: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Copies of binary records with exactly ``round(fraction * d)`` features flipped in each, the
    flipped features drawn uniformly without replacement per record."""
    x = np.asarray(x)
    if not np.isin(x, (0, 1)).all():
        raise ValueError("noisy shadow data flips binary features: this dataset has non-binary features")
    n, d = x.shape
    k = int(round(fraction * d))
    out = x.astype(np.uint8, copy=True)
    if k == 0:
        return out
    # the k smallest of d uniform keys per row: a uniform k-subset of the features, vectorised
    cols = np.argpartition(rng.random((n, d)), k - 1, axis=1)[:, :k]
    rows = np.arange(n)[:, None]
    out[rows, cols] ^= 1
    return out


def class_marginals(x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(class frequencies (C,), per-class feature frequencies (C, d)) of binary records; classes absent
    from ``y`` get frequency 0 and the overall feature frequencies."""
    x = np.asarray(x, np.float64)
    prior = np.bincount(y, minlength=n_classes) / len(y)
    overall = x.mean(axis=0)
    freq = np.tile(overall, (n_classes, 1))
    for c in np.flatnonzero(prior):
        freq[c] = x[y == c].mean(axis=0)
    return prior, freq


def sample_marginals(
    prior: np.ndarray, freq: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n records: a label from ``prior``, then every feature independently Bernoulli(freq[label])."""
    y = rng.choice(len(prior), size=n, p=prior)
    x = (rng.random((n, freq.shape[1])) < freq[y]).astype(np.uint8)
    return x, y


def random_records(n: int, d: int, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n records of uniform random bits with uniform random labels."""
    return rng.integers(0, 2, (n, d), dtype=np.uint8), rng.integers(0, n_classes, n)


@dataclasses.dataclass(frozen=True)
class SynthesisParams:
    """Algorithm 1's parameters: features re-drawn per step start at k_max and halve (not below k_min)
    after more than rej_max consecutive rejections; a record is released with probability y_c once
    y_c > conf_min and c is the predicted class; a search gives up after iter_max queries.

    Defaults: the paper's Purchase values (k_max 128, k_min 4, conf_min 0.2, rej_max 10); it gives no
    iter_max (it reports 156 queries per synthetic record on Purchase-100): 1,000 here."""

    k_max: int = 128
    k_min: int = 4
    conf_min: float = 0.2
    rej_max: int = 10
    iter_max: int = 1000

    def __post_init__(self) -> None:
        if not 1 <= self.k_min <= self.k_max:
            raise ValueError(f"need 1 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}")
        if not 0 <= self.conf_min < 1 or self.rej_max < 0 or self.iter_max < 1:
            raise ValueError("need 0 <= conf_min < 1, rej_max >= 0, iter_max >= 1")


@dataclasses.dataclass(frozen=True)
class Synthesis:
    """The records found, their classes, and the search's cost."""

    x: np.ndarray  # (found, d) uint8
    y: np.ndarray  # (found,)
    queries: np.ndarray  # (searches,) queries spent by every search, found or not
    found: np.ndarray  # (searches,) bool
    start_conf: np.ndarray  # (searches,) target's confidence in the class for the initial record
    best_conf: np.ndarray  # (searches,) the last accepted confidence (found: the released record's)


def synthesize(
    query: Query, classes: np.ndarray, d: int, params: SynthesisParams, rng: np.random.Generator
) -> Synthesis:
    """Algorithm 1 of Shokri et al., one search per entry of ``classes``, all searches in lockstep.

    Each search: x = a uniformly random record; y*_c = 0; j = 0; k = k_max. Per iteration: query y =
    f(x). If y_c >= y*_c (accept): when y_c > conf_min and c = argmax y, release x with probability
    y_c (the search ends); else x* = x, y*_c = y_c, j = 0. Otherwise (reject): j += 1, and when
    j > rej_max, k = max(k_min, ceil(k / 2)) and j = 0. Then x = x* with k features re-drawn
    uniformly. A search fails after iter_max queries. The same record queried by many searches costs
    one query each: the count is what the target's owner would see.
    """
    classes = np.asarray(classes, np.int64)
    s = len(classes)
    k_max = min(params.k_max, d)
    k_min = min(params.k_min, k_max)
    x = rng.integers(0, 2, (s, d), dtype=np.uint8)
    best_x = x.copy()
    best = np.zeros(s)
    j = np.zeros(s, np.int64)
    k = np.full(s, k_max, np.int64)
    queries = np.zeros(s, np.int64)
    found = np.zeros(s, bool)
    start = np.full(s, np.nan)
    active = np.ones(s, bool)
    for it in range(params.iter_max):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        probs = np.asarray(query(x[idx]), np.float64)
        queries[idx] += 1
        yc = probs[np.arange(len(idx)), classes[idx]]
        if it == 0:
            start[idx] = yc
        accept = yc >= best[idx]
        top = probs.argmax(axis=1) == classes[idx]
        candidate = accept & (yc > params.conf_min) & top
        released = candidate & (rng.random(len(idx)) < yc)
        found[idx[released]] = True
        active[idx[released]] = False
        # an accepted record becomes x* (a released one too: best_conf then holds its confidence)
        best_x[idx[accept]] = x[idx[accept]]
        best[idx[accept]] = yc[accept]
        j[idx[accept]] = 0
        rej = idx[~accept]
        j[rej] += 1
        halve = rej[j[rej] > params.rej_max]
        k[halve] = np.maximum(k_min, -(-k[halve] // 2))
        j[halve] = 0
        # next proposals: x* with k features re-drawn uniformly (k varies per search)
        go = np.flatnonzero(active)
        if len(go):
            x[go] = best_x[go]
            # a uniform k-subset per search: the k smallest of d uniform keys (only k_max can be needed)
            keys = rng.random((len(go), d))
            near = (
                np.argpartition(keys, k_max - 1, axis=1)[:, :k_max]
                if k_max < d
                else np.tile(np.arange(d), (len(go), 1))
            )
            near = np.take_along_axis(near, np.take_along_axis(keys, near, axis=1).argsort(axis=1), axis=1)
            take = np.arange(near.shape[1])[None, :] < k[go][:, None]
            r, c = np.nonzero(take)
            x[go[r], near[r, c]] = rng.integers(0, 2, len(r), dtype=np.uint8)
    return Synthesis(best_x[found].copy(), classes[found].copy(), queries, found, start, best)


@dataclasses.dataclass(frozen=True)
class AttackModels:
    """One fitted classifier per class (None: no contrast to learn, score 0.5)."""

    models: dict[int, object]
    kind: str

    def score(self, probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Membership probability of each (released vector, label) pair."""
        out = np.full(len(labels), 0.5)
        feats = attack_features(probs)
        for c, clf in self.models.items():
            rows = np.flatnonzero(labels == c)
            if clf is not None and len(rows):
                out[rows] = clf.predict_proba(feats[rows])[:, 1]
        return out


ATTACK_CLASSIFIERS = ("gbdt", "mlp", "logreg")


def attack_features(probs: np.ndarray) -> np.ndarray:
    """The attack models' input: the log of the released probability vector (floored at 1e-12)."""
    return np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0))


def _classifier(kind: str, seed: int):
    if kind == "gbdt":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=50, random_state=seed)
    if kind == "mlp":
        from sklearn.neural_network import MLPClassifier

        # the paper's attack models are small neural networks; one hidden layer of 64
        return MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=seed)
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=1000)
    raise ValueError(f"unknown attack classifier {kind!r}; valid: {', '.join(ATTACK_CLASSIFIERS)}")


def fit_attack_models(
    probs: np.ndarray,
    labels: np.ndarray,
    is_in: np.ndarray,
    n_classes: int,
    kind: str = "gbdt",
    seed: int = 0,
    max_rows_per_class: Optional[int] = 20000,
) -> AttackModels:
    """Per class c, a classifier of IN (1) vs OUT (0) on the shadows' released vectors of the records
    labelled c (pooled over shadows); at most ``max_rows_per_class`` rows per class, drawn at random."""
    rng = np.random.default_rng([seed, 0x61747461])
    feats = attack_features(probs)
    is_in = np.asarray(is_in, bool)
    models: dict[int, object] = {}
    for c in range(n_classes):
        rows = np.flatnonzero(labels == c)
        if max_rows_per_class and len(rows) > max_rows_per_class:
            rows = rng.choice(rows, max_rows_per_class, replace=False)
        y = is_in[rows]
        if len(rows) < 2 or y.all() or not y.any():
            models[c] = None
            continue
        models[c] = _classifier(kind, seed).fit(feats[rows], y)
    return AttackModels(models, kind)


def shadow_splits(
    n_records: int, size: int, n_shadows: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(IN, OUT) record indices of every shadow: two disjoint random sets of ``size`` records from the
    attacker's ``n_records`` (shadows overlap one another, as in the paper)."""
    if 2 * size > n_records:
        raise ValueError(f"each shadow needs 2 x {size} records (IN and OUT); the attacker has {n_records}")
    out = []
    for s in range(n_shadows):
        perm = np.random.default_rng([seed, s, 0x73686477]).permutation(n_records)
        out.append((np.sort(perm[:size]), np.sort(perm[size : 2 * size])))
    return out
