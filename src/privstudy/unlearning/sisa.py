"""SISA (Bourtoule et al., IEEE S&P 2021): sharded, isolated, sliced, aggregated training, and its
exact unlearning. Pure numpy: the plan of shards, slices, stages and checkpoints; unlearning requests
and what each one retrains; aggregation of the shard models' outputs; the cost model.

Training, as in the reference code (``sisa.py``): a seeded shuffle of the N training points, S
contiguous shards, each cut into R contiguous slices; shard s trains in stages r = 1..R on slices
1..r (cumulative) for ``int(r e') - int((r - 1) e')`` epochs, e' = 2e / (R + 1), and saves a checkpoint
after every stage, keyed by a hash of the indices it has seen. A request deletes its points from their
shard; the shard resumes from the checkpoint of the last stage that never saw them (its key is
unchanged) and retrains the later stages on the surviving points.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional, Sequence

import numpy as np

REQUEST_DISTRIBUTIONS = ("uniform", "exponential", "pareto")
AGGREGATIONS = ("vote", "average")
WEIGHTINGS = ("uniform", "proportional")


def stage_epochs(epochs: int, slices: int) -> list[int]:
    """Epochs of stages r = 1..R: int(r e') - int((r - 1) e') with e' = 2e / (R + 1).

    Stage r trains r slices, so the work per point, sum over r of epochs_r * r / R, is e (exactly
    when 2e / (R + 1) is a whole number; up to the rounding otherwise).
    """
    if epochs < 1 or slices < 1:
        raise ValueError(f"need epochs >= 1 and slices >= 1, got {epochs} and {slices}")
    e_avg = 2.0 * epochs / (slices + 1)
    return [int(r * e_avg) - int((r - 1) * e_avg) for r in range(1, slices + 1)]


def indices_key(indices: np.ndarray) -> str:
    """The checkpoint key of a stage: sha256 of the sorted point indices it has seen (16 hex digits)."""
    arr = np.ascontiguousarray(np.sort(np.asarray(indices, np.int64)))
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


@dataclasses.dataclass
class ShardPlan:
    """One shard: its slices (point indices, in training order) and what has been deleted."""

    slices: list[np.ndarray]

    def seen(self, stage: int) -> np.ndarray:
        """Points trained on by the end of stage ``stage`` (1-based): slices 1..stage."""
        return np.concatenate(self.slices[:stage]) if stage else np.zeros(0, np.int64)

    def key(self, stage: int) -> str:
        return indices_key(self.seen(stage))

    @property
    def points(self) -> np.ndarray:
        return self.seen(len(self.slices))


@dataclasses.dataclass
class SisaPlan:
    """S shards of R slices over N points, after a seeded shuffle."""

    shards: list[ShardPlan]
    epochs: int

    @classmethod
    def build(cls, n_points: int, n_shards: int, n_slices: int, epochs: int, seed: int) -> "SisaPlan":
        """Shuffle 0..N-1 with ``seed``, cut into S contiguous shards (sizes differ by at most one), each
        into R contiguous slices."""
        if not 1 <= n_shards * n_slices <= n_points:
            raise ValueError(
                f"{n_shards} shards x {n_slices} slices need at least one point per slice; "
                f"there are {n_points} points"
            )
        order = np.random.default_rng([seed, 0x73697361]).permutation(n_points)
        shards = [
            ShardPlan([np.asarray(s, np.int64) for s in np.array_split(block, n_slices)])
            for block in np.array_split(order, n_shards)
        ]
        return cls(shards, epochs)

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def n_slices(self) -> int:
        return len(self.shards[0].slices)

    def schedule(self) -> list[int]:
        return stage_epochs(self.epochs, self.n_slices)

    def sizes(self) -> np.ndarray:
        return np.array([len(s.points) for s in self.shards])


@dataclasses.dataclass(frozen=True)
class Retrain:
    """What one request (or batch) costs on one shard: resume after ``from_stage`` stages (0: from
    scratch) and retrain stages from_stage+1..R; ``point_epochs`` the points times epochs trained."""

    shard: int
    from_stage: int
    point_epochs: int


def delete(plan: SisaPlan, points: Sequence[int]) -> list[Retrain]:
    """Remove ``points`` from the plan (in place) and return the retraining each touched shard needs.

    A shard resumes from the last stage whose slices hold none of the deleted points: that stage's
    checkpoint key is unchanged. Points not in the plan (already deleted) are ignored.
    """
    return _retrain(plan, points, remove=True)


def change(plan: SisaPlan, points: Sequence[int]) -> list[Retrain]:
    """The retraining each shard needs when ``points`` stay but change (corrected labels or features):
    as ``delete``, from the last stage that never saw them, without removing them."""
    return _retrain(plan, points, remove=False)


def _retrain(plan: SisaPlan, points: Sequence[int], remove: bool) -> list[Retrain]:
    points = np.asarray(points, np.int64)
    schedule = plan.schedule()
    out = []
    for s, shard in enumerate(plan.shards):
        hit = [np.isin(sl, points) for sl in shard.slices]
        touched = [r for r, g in enumerate(hit) if g.any()]
        if not touched:
            continue
        first = touched[0]  # 0-based slice of the earliest affected point
        if remove:
            for r in touched:
                shard.slices[r] = shard.slices[r][~hit[r]]
        # stages first+1..R (1-based) are retrained, stage k on slices 1..k
        work = sum(schedule[k - 1] * len(shard.seen(k)) for k in range(first + 1, plan.n_slices + 1))
        out.append(Retrain(s, first, int(work)))
    return out


def draw_requests(
    distribution: str, n_points: int, k: int, rng: np.random.Generator, distinct: bool = True
) -> np.ndarray:
    """K request indices into 0..N-1 (positions in the shuffled training order).

    uniform: every point alike. exponential: floor of an Exponential with rate lambda = -ln(0.05) / N
    (5% of the mass beyond N), truncated to 0..N-1. pareto: floor of a Lomax(a = 1.16) variable (what
    ``np.random.pareto`` draws), truncated to 0..N-1. These are the reference code's distributions
    and defaults; its request path compared the continuous draws with integer indices, so only its
    uniform requests ever matched a point. With ``distinct``, a point already requested is drawn again.
    """
    if distribution not in REQUEST_DISTRIBUTIONS:
        raise ValueError(
            f"unknown request distribution {distribution!r}; valid: {', '.join(REQUEST_DISTRIBUTIONS)}"
        )
    if distinct and k > n_points:
        raise ValueError(f"{k} distinct requests exceed the {n_points} points")
    out: list[int] = []
    seen: set[int] = set()
    while len(out) < k:
        need = k - len(out)
        if distribution == "uniform":
            raw = rng.integers(0, n_points, 2 * need + 8)
        elif distribution == "exponential":
            raw = np.floor(rng.exponential(n_points / -np.log(0.05), 2 * need + 8)).astype(np.int64)
        else:
            raw = np.floor(rng.pareto(1.16, 2 * need + 8)).astype(np.int64)
        for i in raw[raw < n_points]:
            if len(out) == k:
                break
            if distinct and int(i) in seen:
                continue
            seen.add(int(i))
            out.append(int(i))
    return np.array(out, np.int64)


def aggregate(probs: np.ndarray, how: str = "vote", weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Combine S shard models' probability vectors (S, n, C) into class predictions (n,).

    vote: each model's argmax as a one-hot vote (the reference code's default); average: the probability
    vectors themselves. Weighted by ``weights`` (S,) (uniform when None); ties go to the lowest class.
    """
    probs = np.asarray(probs, np.float64)
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; valid: {', '.join(AGGREGATIONS)}")
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, np.float64)
    if how == "vote":
        onehot = np.zeros_like(probs)
        idx = probs.argmax(axis=2)
        np.put_along_axis(onehot, idx[..., None], 1.0, axis=2)
        probs = onehot
    return np.tensordot(w, probs, axes=1).argmax(axis=1)


def ensemble_logits(shard_logits: np.ndarray) -> np.ndarray:
    """Log of the shards' averaged probability vectors (S, n, C) -> (n, C): logits of the
    probability-averaging ensemble (softmax of them is the average)."""
    from scipy.special import log_softmax, logsumexp

    return logsumexp(log_softmax(shard_logits, axis=-1), axis=0) - np.log(len(shard_logits))


def shard_weights(sizes: np.ndarray, how: str = "uniform") -> np.ndarray:
    """Aggregation weights: uniform, or proportional to the shards' current sizes."""
    if how not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {how!r}; valid: {', '.join(WEIGHTINGS)}")
    sizes = np.asarray(sizes, np.float64)
    return np.ones_like(sizes) if how == "uniform" else sizes / sizes.sum()


def expected_request_cost(n_points: int, n_shards: int, n_slices: int, epochs: int) -> float:
    """Expected point-epochs of one uniform request: (2R + 1) / (3R) * N / S * e."""
    return (2 * n_slices + 1) / (3 * n_slices) * n_points / n_shards * epochs


def expected_batch_points(n_points: int, n_shards: int, k: int) -> float:
    """Expected points retrained from scratch by K uniform requests served as one batch with R = 1:
    N (1 - (1 - 1/S)^K) (the expected number of distinct shards hit, times N / S)."""
    return n_points * (1 - (1 - 1 / n_shards) ** k)


def expected_cost(n_points: int, n_shards: int, n_slices: int, epochs: int, k: int = 1) -> float:
    """Expected point-epochs to serve K uniform requests as one batch, for the actual stage schedule.

    Each shard holds N/S points in R slices of N/(SR). A request falls in slices 1..j of a given shard
    with probability j/(SR); the shard retrains from its earliest hit slice j, stages j..R, stage r on r
    slices. So E = S * sum_j [(1 - (j-1)/(SR))^K - (1 - j/(SR))^K] * sum_{r=j..R} e_r r N/(SR), with the
    requests drawn independently (with replacement) and the deleted points' own share neglected. K = 1
    gives (2R + 1)/(3R) N/S e where 2e/(R + 1) is whole; R = 1 gives N e (1 - (1 - 1/S)^K).
    """
    sched = stage_epochs(epochs, n_slices)
    per_slice = n_points / (n_shards * n_slices)
    total = 0.0
    for j in range(1, n_slices + 1):
        p_first = (1 - (j - 1) / (n_shards * n_slices)) ** k - (1 - j / (n_shards * n_slices)) ** k
        total += p_first * sum(sched[r - 1] * r * per_slice for r in range(j, n_slices + 1))
    return n_shards * total


def predicted_speedup(n_points: int, n_shards: int, n_slices: int, epochs: int, k: int = 1) -> float:
    """Full retraining (N e point-epochs) over the expected cost of K uniform requests in one batch."""
    return n_points * epochs / expected_cost(n_points, n_shards, n_slices, epochs, k)
