"""What every target of a setting shares: the shadows' per-example statistics, computed once per setting.

``privstudy.mia.attacks`` computes, for each target model, the median, spread and mean of each example's
IN and OUT shadow scores from scratch: O(M N log M) work per target, O(M^2 N log M) per setting. Yet
an example's shadow set changes little from one target to the next. For one side (IN or OUT) of
example i, ``attacks.balanced`` uses the first k_t side-models other than the target t, in model order,
where k_t = min_i (c_i - [t on that side of i]) and c_i is the side's model count. With c = min_i c_i,
k_t is c - 1 or c, so the models used are always among the first c + 1 side-models of the example (its
*candidates*), less at most two of them: the target itself where it is a candidate, and the last
candidates in model order beyond k_t. Here the candidates' values are sorted once per setting; a
target's median is then an index into the sorted values with at most two positions skipped, and its
mean and spread are the sorted candidates' sums with the removed ones zeroed: the same additions in
the same order as ``attacks``' (which sums sorted values too), so the scores are equal bit for bit
(tests/test_attack_stage.py compares them on random keep matrices, complete, partial and tied). The
per-target work is O(M N) array arithmetic instead of O(M N log M) with Python-level masking and nan
handling.

Pure numpy: no TensorFlow, no files.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from privstudy.mia import attacks
from privstudy.mia.attacks import ScoreSet

FAST = {"lira_online", "lira_online_fixed", "lira_offline", "lira_offline_fixed", "reference", "lira_offset"}
FAST |= {"rmia"}
_FAR = 1 << 30  # a sorted position beyond any slot: "nothing removed here"


@dataclasses.dataclass
class Side:
    """One side (IN or OUT) of every example: its candidate models and their sorted values.

    Shapes: N examples, K = c + 1 candidate slots, V views.
    """

    models: np.ndarray  # (N, K) int32: candidate model indices in model order, -1 where fewer exist
    valid: np.ndarray  # (N,) int64: number of candidates of each example (c or c + 1)
    sorted_views: Optional[np.ndarray] = None  # (K, N, V): candidate views sorted per view, +inf padded
    rank: Optional[np.ndarray] = None  # (N, K, V) int32: the sorted position of each slot's value


def _side(mask: np.ndarray) -> Side:
    """The candidates of each example for one side's membership ``mask`` (M, N) bool."""
    counts = mask.sum(axis=0)
    k = int(counts.min()) + 1
    n = mask.shape[1]
    position = np.cumsum(mask, axis=0)  # (M, N): 1-based position among the example's side-models
    models = np.full((n, k), -1, np.int32)
    m_idx, i_idx = np.nonzero(mask & (position <= k))
    models[i_idx, position[m_idx, i_idx] - 1] = m_idx
    return Side(models=models, valid=np.minimum(counts, k).astype(np.int64))


def _gather(values: np.ndarray, side: Side) -> np.ndarray:
    """values (M, N, ...) at each example's candidate slots: (N, K, ...) float64, NaN at empty slots."""
    safe = np.where(side.models >= 0, side.models, 0)
    out = values[safe, np.arange(values.shape[1])[:, None]].astype(np.float64)
    out[side.models < 0] = np.nan
    return out


def removed_slots(side: Side, target: int) -> tuple[np.ndarray, int]:
    """The candidate slots each example drops for ``target``: (N, 2) ascending, -1 where none; and k_t."""
    models, valid = side.models, side.valid
    n, k = models.shape
    slots = np.arange(k)
    is_t = models == target  # (N, K): at most one True per row
    has_t = is_t.any(axis=1)
    eligible = (slots[None, :] < valid[:, None]) & ~is_t
    k_t = int((valid - has_t).min())
    removed = is_t | (eligible & (np.cumsum(eligible, axis=1) > k_t))
    count = removed.sum(axis=1)
    if count.max(initial=0) > 2:  # cannot happen (see the module doc); guards the index arithmetic
        raise AssertionError("more than two shadow slots removed for one example")
    first = np.where(count > 0, removed.argmax(axis=1), -1)
    last = np.where(count > 1, k - 1 - removed[:, ::-1].argmax(axis=1), -1)
    return np.stack([first, last], axis=1), k_t


class SharedStats:
    """A setting's per-example shadow statistics, from which each target's are an update.

    Args:
        data: the setting's scores: ``keep`` (M, N), ``views`` (M, N, V), ``loss`` and ``p_true`` (M, N).
        attacks_wanted: the attacks to prepare for (only what they need is computed).
    """

    def __init__(self, data: ScoreSet, attacks_wanted: tuple[str, ...] = tuple(FAST)):
        self.data = data
        self.sides = {"in": _side(data.keep), "out": _side(~data.keep)}
        if any(a.startswith("lira_o") and a != "lira_offset" for a in attacks_wanted):
            for name in (
                ("in", "out") if any(a.startswith("lira_online") for a in attacks_wanted) else ("out",)
            ):
                self._sort_views(self.sides[name])
        self._out_values: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._removed: dict[tuple[str, int], tuple[np.ndarray, int]] = {}
        self._gauss: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def _sort_views(self, side: Side) -> None:
        vals = _gather(self.data.views, side)  # (N, K, V)
        filled = np.where(np.isnan(vals), np.inf, vals)
        order = np.argsort(filled, axis=1, kind="stable")
        # (K, N, V), the layout of attacks' (shadows, N, V): sums over axis 0 add in the same order
        side.sorted_views = np.ascontiguousarray(np.take_along_axis(filled, order, axis=1).transpose(1, 0, 2))
        rank = np.empty(order.shape, np.int32)
        np.put_along_axis(rank, order, np.arange(order.shape[1], dtype=np.int32)[None, :, None], axis=1)
        side.rank = rank  # (N, K, V)

    def _removed_for(self, name: str, target: int) -> tuple[np.ndarray, int]:
        key = (name, target)
        if key not in self._removed:
            self._removed = {k: v for k, v in self._removed.items() if k[1] == target}  # one target at a time
            self._removed[key] = removed_slots(self.sides[name], target)
        return self._removed[key]

    def usable(self, target: int) -> bool:
        """Whether every example has at least two shadows on each side for this target (else: the
        reference code path, whose degenerate-case conventions are kept there)."""
        return all(self._removed_for(s, target)[1] >= 2 for s in ("in", "out"))

    def gauss(self, name: str, target: int, fixed: bool) -> tuple[np.ndarray, np.ndarray]:
        """Median and standard deviation (N, V) of the target's shadows on one side, as
        ``attacks._gauss_stats``."""
        key = ("gauss", name, target)
        if key not in self._gauss:
            # kept for the other variants of this target (online uses both sides, then its fixed variant)
            self._gauss = {k: v for k, v in self._gauss.items() if k[2] == target}
            self._gauss[key] = self._median_sd(name, target)
        mu, sd = self._gauss[key]
        if fixed:
            sd = np.full_like(sd, np.sqrt(np.mean(sd**2)))
        return mu, sd

    def _median_sd(self, name: str, target: int) -> tuple[np.ndarray, np.ndarray]:
        """The median and the two-pass standard deviation of the selected values, computed as
        ``attacks._masked_median`` / ``_masked_std`` do on their sorted values: the same additions in the
        same order (removed and padding slots add exact zeros), so equal inputs give equal bits."""
        side = self.sides[name]
        if side.sorted_views is None:
            raise ValueError(f"side {name} was not prepared for LiRA")
        removed, k = self._removed_for(name, target)
        kk, n, v = side.sorted_views.shape
        rows = np.arange(n)[:, None]
        safe = np.where(removed >= 0, removed, 0)
        pos = np.where(removed[:, :, None] >= 0, side.rank[rows, safe], _FAR)  # (N, 2, V)
        p1, p2 = np.minimum(pos[:, 0], pos[:, 1]), np.maximum(pos[:, 0], pos[:, 1])

        def at(j: int) -> np.ndarray:
            idx = np.full((n, v), j)
            idx = idx + (p1 <= idx)
            idx = idx + (p2 <= idx)
            return np.take_along_axis(side.sorted_views, idx[None], axis=0)[0]

        lo, hi = (k - 1) // 2, k // 2
        mu = at(lo) if lo == hi else (at(lo) + at(hi)) / 2
        slots = np.arange(kk)[:, None, None]
        selected = (slots < side.valid[None, :, None]) & (slots != p1[None]) & (slots != p2[None])
        x = np.where(selected, side.sorted_views, 0.0)
        avg = x.sum(axis=0) / k
        dev = np.where(selected, x - avg[None], 0.0)
        var = (dev * dev).sum(axis=0) / (k - 1)
        return mu, np.sqrt(var)

    def out_mean(self, column: str, target: int) -> np.ndarray:
        """Mean (N,) of ``column`` (loss, p_true or view0) over the target's OUT shadows, as
        ``attacks._out_mean``: the same values added in the same (model) order."""
        side = self.sides["out"]
        if column not in self._out_values:
            values = self.data.views[..., 0] if column == "view0" else getattr(self.data, column)
            self._out_values[column] = np.ascontiguousarray(_gather(values, side).T)  # (K, N), model order
        gathered = self._out_values[column]
        removed, k = self._removed_for("out", target)
        slots = np.arange(gathered.shape[0])[:, None]
        use = (slots < side.valid[None]) & (slots != removed[:, 0][None]) & (slots != removed[:, 1][None])
        return np.where(use, gathered, 0.0).sum(axis=0) / k

    def run(self, name: str, target: int, rmia_a: float = attacks.RMIA_A, seed: int = 0) -> np.ndarray:
        """Membership scores (N,) of one attack on one target: ``attacks.run_attack``'s, bit for bit."""
        if name not in FAST or not self.usable(target):
            return attacks.run_attack(name, self.data, target, rmia_a=rmia_a, seed=seed)
        d = self.data
        if name.startswith("lira_o") and name != "lira_offset":
            fixed = name.endswith("_fixed")

            def stats(side: str) -> tuple[np.ndarray, np.ndarray]:
                return self.gauss(side, target, fixed)

            return attacks.lira_scores(d.views[target], stats, name.startswith("lira_online"), fixed)
        if name == "reference":
            return np.nan_to_num(self.out_mean("loss", target) - d.loss[target])
        if name == "lira_offset":
            return np.nan_to_num(d.views[target, :, 0] - self.out_mean("view0", target))
        return attacks.rmia_scores(d.p_true[target], self.out_mean("p_true", target), rmia_a)
