"""The linear-programming confidence-similarity trial (kind `linprog`) and the published command line.

One trial: sample a training set from the query points of an integer grid, label it with an ideal
hyperplane, fit a linear classifier by linear programming, then relate every query point's
confidence to its distance from the nearest training point.

Run the published study's command line (all flags as published, plus --results)::

    python -m privstudy.linprog_runner --exp_name lp2d --num_trials 100 --results results
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.spatial import cKDTree

from privstudy.harness.config import TrialConfig, check, param
from privstudy.harness.registry import TrialKind
from privstudy.similarity import confidence as similarity
from privstudy.similarity import grid, lp
from privstudy.stats import ranks as stats

CONFIDENCES = ("boundary", "sigmoid")
MAX_TRAIN_DRAWS = 1000
MAX_DIMENSIONS = 20  # the boundary confidence visits all 2^d corners of the grid


@dataclasses.dataclass(frozen=True)
class LinprogConfig(TrialConfig):
    """One LP trial. Defaults are the published study's."""

    train_size: int = param(10, "Training points (members) per trial, drawn from the query points.")
    test_size: int = param(1_000_000, "Query points sampled from the grid; the whole grid when larger.")
    grid_size: float = param(1000.0, "Grid extent: every coordinate runs from 0 to grid_size.")
    granularity: float = param(1.0, "Grid step: coordinates are multiples of it.")
    num_dimensions: int = param(2, "Dimensions of the grid.")
    ideal_weights: tuple[float, ...] = param(
        (1.0, -1.0), "Normal vector of the ideal hyperplane (one entry per dimension) that labels points."
    )
    ideal_bias: float = param(0.0, "Offset of the ideal hyperplane: label +1 iff w.x + b > 0.")
    percent: float = param(5.0, "Size of the top and bottom confidence sets, in percent of query points.")
    same_class: bool = param(False, "Measure distance only to training points of the query's ideal class.")
    objective: Literal[lp.OBJECTIVES] = param(
        "slack", "LP objective: `slack` (published: minimise total slack) or `max_margin`."
    )
    query_seed: int = param(0, "Seed of the query-point sample; trials of one setting share the points.")
    n_bins: int = param(10, "Equal-count confidence bins of the binned curve (10 = deciles).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            1 <= self.num_dimensions <= MAX_DIMENSIONS,
            "num_dimensions",
            f"must be 1..{MAX_DIMENSIONS}, got {self.num_dimensions}",
        )
        check(self.grid_size > 0, "grid_size", f"must be > 0, got {self.grid_size}")
        check(
            0 < self.granularity <= self.grid_size,
            "granularity",
            f"must be in (0, grid_size={self.grid_size}], got {self.granularity}",
        )
        total = grid.total_points(self.grid_size, self.granularity, self.num_dimensions)
        check(
            total <= grid.MAX_GRID_POINTS,
            "granularity",
            f"the grid has {total:.3g} points, more than 2^62; use a coarser granularity",
        )
        check(
            len(self.ideal_weights) == self.num_dimensions,
            "ideal_weights",
            f"needs {self.num_dimensions} entries (num_dimensions), got {len(self.ideal_weights)}",
        )
        check(any(w != 0 for w in self.ideal_weights), "ideal_weights", "must not be all zero")
        check(self.test_size >= 2, "test_size", f"must be >= 2, got {self.test_size}")
        n_query = min(self.test_size, total)
        check(
            2 <= self.train_size < n_query,
            "train_size",
            f"must be at least 2 and below the {n_query} query points, got {self.train_size}",
        )
        check(0 < self.percent <= 50, "percent", f"must be in (0, 50], got {self.percent}")
        check(
            similarity.set_size(n_query, self.percent) >= 1,
            "percent",
            f"{self.percent}% of {n_query} query points rounds to an empty set; raise percent or test_size",
        )
        check(self.query_seed >= 0, "query_seed", f"must be >= 0, got {self.query_seed}")
        check(2 <= self.n_bins <= n_query, "n_bins", f"must be in 2..{n_query}, got {self.n_bins}")
        signs = (
            grid.corners(self.grid_size, self.num_dimensions) @ np.asarray(self.ideal_weights)
            + self.ideal_bias
        )
        check(
            bool((signs > 0).any() and (signs <= 0).any()),
            "ideal_bias",
            "the ideal hyperplane does not cut the grid, so every point has one label; change "
            "ideal_weights or ideal_bias",
        )


TABLES = {
    "linprog_model": pa.schema(
        [
            ("objective", pa.string()),
            ("weights", pa.list_(pa.float64())),  # unit-norm normal of the trained hyperplane
            ("bias", pa.float64()),
            ("lp_objective_value", pa.float64()),
            ("train_accuracy", pa.float64()),
            ("accuracy", pa.float64()),  # over all query points, against the ideal labels
            ("n_query", pa.int64()),
            ("n_members", pa.int64()),
            ("n_train_pos", pa.int64()),
            ("n_train_neg", pa.int64()),
            ("train_draws", pa.int64()),  # samples drawn until both classes were present
            ("distance_scale", pa.float64()),  # the largest raw train distance (the normaliser)
        ]
    ),
    "linprog_metrics": pa.schema(
        [
            ("confidence_type", pa.string()),
            ("metric", pa.string()),
            ("value", pa.float64()),
        ]
    ),
    "linprog_extremes": pa.schema(
        [
            ("confidence_type", pa.string()),
            ("subset", pa.string()),  # "top" or "bottom"
            ("rank", pa.int64()),  # 0 = most extreme
            ("point_id", pa.int64()),  # flat grid index (last axis fastest)
            ("confidence", pa.float64()),
            ("margin", pa.float64()),  # signed distance to the trained hyperplane
            ("train_distance", pa.float64()),  # normalised distance to the nearest training point
            ("is_member", pa.bool_()),
            ("member_other_distance", pa.float64()),  # members: to the nearest *other* training point
        ]
    ),
    "linprog_bins": pa.schema(
        [
            ("confidence_type", pa.string()),
            ("bin", pa.int64()),  # 1 = least confident
            ("n_points", pa.int64()),
            ("confidence_mean", pa.float64()),
            ("train_distance_mean", pa.float64()),
            ("nonmember_train_distance_mean", pa.float64()),
            ("member_share", pa.float64()),
        ]
    ),
}


def ideal_labels(points: np.ndarray, weights: tuple[float, ...], bias: float) -> np.ndarray:
    """Labels of the ideal hyperplane: +1 where w.x + b > 0, else -1. (n, d) -> (n,) int8."""
    return np.where(points @ np.asarray(weights, dtype=np.float64) + bias > 0, 1, -1).astype(np.int8)


def sample_training_set(
    n_points: int, labels: np.ndarray, train_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Draw ``train_size`` distinct query indices, redrawing until both labels are present.

    The published code kept single-class samples and fitted an arbitrary hyperplane to them
    (about 0.2% of trials at its defaults); here the sample is conditioned on both classes.

    Returns:
        (indices (train_size,) int64 sorted, number of draws).
    """
    for draw in range(1, MAX_TRAIN_DRAWS + 1):
        idx = np.sort(rng.choice(n_points, size=train_size, replace=False))
        y = labels[idx]
        if (y > 0).any() and (y < 0).any():
            return idx, draw
    raise RuntimeError(
        f"{MAX_TRAIN_DRAWS} training samples all had a single class; "
        f"raise train_size or move the ideal hyperplane towards the grid's middle"
    )


def int_columns(points: np.ndarray) -> np.ndarray | None:
    """The coordinates as int32 columns when squared distances between such points are exact in int32.

    On an integer grid every difference, square and sum of squares is an integer; when they stay
    below 2^31 the int32 arithmetic gives exactly the float64 result (which is exact there too), at
    half the memory traffic.

    Args:
        points: (n, d) coordinates.

    Returns:
        (d, n) int32 C-contiguous columns, or None when a coordinate is not an integer or so large
        that a squared distance could overflow.
    """
    n, d = points.shape
    if n == 0 or not np.isfinite(points).all():
        return None
    # |difference| <= 2 * limit, so d * (2 * limit)^2 < 2^31.
    limit = int(np.sqrt((2**31 - 1) / d) / 2)
    if np.abs(points).max() > limit or not (points == np.round(points)).all():
        return None
    return np.ascontiguousarray(points.T, dtype=np.int32)


def nearest_train_distances(
    query: np.ndarray,
    train: np.ndarray,
    query_class: np.ndarray | None,
    train_class: np.ndarray | None,
    query_int: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query point to its nearest training point, optionally per class.

    Args:
        query: (n, d) points.
        train: (m, d) training points (a subset of the query points).
        query_class, train_class: (n,), (m,) class labels; None means ignore classes.
        query_int: (d, n) ``int_columns(query)`` when at hand and not None: the exact integer path.

    Returns:
        (to_train (n,), train_to_other (m,)): the second is each training point's distance to the
        nearest *other* training point (of its class), inf where it has none.
    """
    to_other = np.full(len(train), np.inf)
    if query_class is None:
        to_train = _nearest(query, train, query_int)
        if len(train) > 1:
            to_other[:] = cKDTree(train).query(train, k=2)[0][:, 1]
        return to_train, to_other
    to_train = np.empty(len(query), dtype=np.float64)
    for c in np.unique(train_class):
        q_idx = np.flatnonzero(query_class == c)
        t_idx = np.flatnonzero(train_class == c)
        to_train[q_idx] = _nearest(
            query[q_idx], train[t_idx], None if query_int is None else query_int[:, q_idx]
        )
        if len(t_idx) > 1:
            to_other[t_idx] = cKDTree(train[t_idx]).query(train[t_idx], k=2)[0][:, 1]
    if query_class is not None:
        # A query class with no training point of its own class: no same-class neighbour.
        missing = ~np.isin(query_class, train_class)
        to_train[missing] = np.inf
    return to_train, to_other


BRUTE_FORCE_MAX_TRAIN = 64  # below this many training points a blocked scan beats a KD-tree
_BLOCK = 65536


def _nearest(query: np.ndarray, train: np.ndarray, query_int: np.ndarray | None = None) -> np.ndarray:
    """Distance from each of (n, d) query points to the nearest of (m, d) training points: (n,).

    ``query_int`` is the query's (d, n) ``int_columns``, when at hand: with integer training points
    the squared distances are then computed exactly in int32.
    """
    if len(train) > BRUTE_FORCE_MAX_TRAIN:
        return cKDTree(train).query(query, k=1)[0]
    train_int = None if query_int is None else int_columns(train)
    if train_int is not None:
        return _nearest_int(query_int, train_int.T)
    out = np.empty(len(query), dtype=np.float64)
    for start in range(0, len(query), _BLOCK):
        q = query[start : start + _BLOCK]
        best = np.full(len(q), np.inf)
        for t in train:  # m is small: one vectorised pass per training point
            diff = q - t
            np.minimum(best, np.einsum("ij,ij->i", diff, diff), out=best)
        out[start : start + _BLOCK] = np.sqrt(best)
    return out


def _nearest_int(query: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``_nearest`` on exact integers: (d, n) int32 query columns, (m, d) int32 training points -> (n,).

    Blocks of queries keep the working arrays in cache; the buffers are reused, so the loop
    allocates nothing. The squared distances are the same integers as in float64, so the square
    roots are bit-identical.
    """
    d, n = query.shape
    out = np.empty(n, dtype=np.float64)
    acc, term, best = (np.empty(min(n, _BLOCK), dtype=np.int32) for _ in range(3))
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        a, s, b = acc[: stop - start], term[: stop - start], best[: stop - start]
        for j, t in enumerate(train):
            np.subtract(query[0, start:stop], t[0], out=a)
            np.multiply(a, a, out=a)
            for axis in range(1, d):
                np.subtract(query[axis, start:stop], t[axis], out=s)
                np.multiply(s, s, out=s)
                np.add(a, s, out=a)
            if j == 0:
                b[:] = a
            else:
                np.minimum(b, a, out=b)
        np.sqrt(b, out=out[start:stop])
    return out


def confidences(
    model: lp.LinearModel, points: np.ndarray, grid_size: float, n_dims: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The margin and both confidences of every point.

    Returns:
        (margin (n,), {"boundary": (n,), "sigmoid": (n,)}): boundary = |margin| over the largest
        |w.c + b| of the grid's corners c; sigmoid = 2 |sigmoid(margin) - 1/2| = tanh(|margin| / 2).
    """
    margin = model.decision(points)
    abs_margin = np.abs(margin)
    return margin, {
        "boundary": boundary_confidence(abs_margin, corner_reach(model, grid_size, n_dims)),
        "sigmoid": np.tanh(abs_margin / 2.0),
    }


def corner_reach(model: lp.LinearModel, grid_size: float, n_dims: int) -> float:
    """The largest |w.c + b| over the grid's 2^d corners c: the boundary confidence's normaliser."""
    return float(np.max(np.abs(model.decision(grid.corners(grid_size, n_dims)))))


def boundary_confidence(abs_margin: np.ndarray, reach: float) -> np.ndarray:
    """|margin| over the corner reach, elementwise: (n,) -> (n,)."""
    return abs_margin / reach


@dataclasses.dataclass(frozen=True)
class _Setting:
    """What every trial of a setting shares (read-only arrays)."""

    points: np.ndarray  # (n, d) float64 query points
    ids: np.ndarray  # (n,) int64 point ids
    labels: np.ndarray  # (n,) int8 ideal labels
    int_coords: np.ndarray | None  # (d, n) int32 exact copy of the points, or None (see int_columns)
    ids_ascending: bool  # then ordering by index is ordering by id


@lru_cache(maxsize=4)
def _setting(
    test_size: int,
    grid_size: float,
    granularity: float,
    n_dims: int,
    query_seed: int,
    weights: tuple[float, ...],
    bias: float,
) -> _Setting:
    """The query points of a setting and what derives from them alone, computed once per process."""
    points, ids = grid.query_points(test_size, grid_size, granularity, n_dims, query_seed)
    labels = ideal_labels(points, weights, bias)
    int_coords = int_columns(points)
    for a in (labels, int_coords):
        if a is not None:
            a.flags.writeable = False
    return _Setting(points, ids, labels, int_coords, bool((ids[1:] > ids[:-1]).all()))


def run(cfg: LinprogConfig) -> dict[str, pd.DataFrame]:
    """Run one LP trial. Pure: config in, rows out."""
    setting = _setting(
        cfg.test_size,
        cfg.grid_size,
        cfg.granularity,
        cfg.num_dimensions,
        cfg.query_seed,
        tuple(cfg.ideal_weights),
        cfg.ideal_bias,
    )
    points, ids, labels = setting.points, setting.ids, setting.labels
    if not ((labels > 0).any() and (labels < 0).any()):
        raise ValueError("every query point has the same ideal label; move the ideal hyperplane")
    rng = np.random.default_rng(cfg.seed)
    train_idx, draws = sample_training_set(len(ids), labels, cfg.train_size, rng)
    x_train, y_train = points[train_idx], labels[train_idx].astype(np.float64)
    model = lp.train(x_train, y_train, cfg.objective)

    is_member = np.zeros(len(ids), dtype=bool)
    is_member[train_idx] = True
    raw_to_train, raw_to_other = nearest_train_distances(
        points,
        x_train,
        labels if cfg.same_class else None,
        labels[train_idx] if cfg.same_class else None,
        setting.int_coords,
    )
    raw_finite = np.isfinite(raw_to_train)
    finite = raw_to_train if raw_finite.all() else raw_to_train[raw_finite]
    scale = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    train_distance = raw_to_train / scale
    other_distance = np.full(len(ids), np.nan)
    other_distance[train_idx] = np.where(np.isfinite(raw_to_other), raw_to_other / scale, np.nan)

    margin, confs = confidences(model, points, cfg.grid_size, cfg.num_dimensions)
    abs_margin = np.abs(margin)
    k = similarity.set_size(len(ids), cfg.percent)
    metrics, extremes, bins = [], [], []
    has_dist = np.isfinite(train_distance)
    all_dist = bool(has_dist.all())
    finite_dist = train_distance if all_dist else np.where(has_dist, train_distance, np.nan)
    dist_ranks = None
    if all_dist:
        dist_ranks = _distance_ranks(train_distance, raw_to_train, scale, setting.int_coords is not None)
    # Both confidences are non-decreasing functions of |margin|, so the order by (|margin|, id) is
    # normally also the order by (confidence, |margin|, id): one sort serves both. Ids ascend with
    # the index, so a stable sort by |margin| is that order. It is checked per confidence below.
    margin_order, sorted_abs = stats.stable_order(abs_margin, True) if setting.ids_ascending else (None, None)
    shared_bins = None  # bins and confidence-free bin means of margin_order, once computed
    for ctype in CONFIDENCES:
        conf = confs[ctype]
        order = margin_order
        if order is None:
            sorted_conf = None
        elif ctype == "boundary":
            # A division rounds each element on its own, so this equals conf[order] bit for bit
            # without the random-access gather.
            sorted_conf = boundary_confidence(
                sorted_abs, corner_reach(model, cfg.grid_size, cfg.num_dimensions)
            )
        else:
            sorted_conf = conf[order]
        if sorted_conf is None or (sorted_conf[1:] < sorted_conf[:-1]).any():
            order = similarity.confidence_order(conf, abs_margin, ids)
            sorted_conf = conf[order]
        conf_ranks = stats.average_ranks(conf, order, sorted_conf)
        bottom, top = similarity.extreme_sets(order, k)
        extremes += [(ctype, "bottom", conf, bottom), (ctype, "top", conf, top)]
        values = {
            "spearman_confidence_train_distance": (
                stats.spearman_from_ranks(conf_ranks, dist_ranks)
                if all_dist
                else stats.spearman(conf[has_dist], train_distance[has_dist])
            ),
            "auc_confidence_membership": stats.auc_from_ranks(conf_ranks, is_member),
            "top_member_share": float(is_member[top].mean()),
            "bottom_member_share": float(is_member[bottom].mean()),
            # Of all members, the share that lands in each set: percent/100 if confidence ignores membership.
            "top_members_recall": float(is_member[top].sum() / is_member.sum()),
            "bottom_members_recall": float(is_member[bottom].sum() / is_member.sum()),
            "top_train_distance_mean": float(np.nanmean(finite_dist[top])),
            "bottom_train_distance_mean": float(np.nanmean(finite_dist[bottom])),
            "top_confidence_mean": float(conf[top].mean()),
            "bottom_confidence_mean": float(conf[bottom].mean()),
            "saturated_share": float((conf >= 1.0).mean()),
            "set_size": float(k),
        }
        metrics += [(ctype, name, value) for name, value in values.items()]
        if order is margin_order and shared_bins is not None:
            bin_of, other_means = shared_bins
        else:
            bin_of = similarity.bins_by_rank(order, cfg.n_bins)
            other_means = similarity.binned_means(
                bin_of,
                cfg.n_bins,
                train_distance_mean=finite_dist,
                nonmember_train_distance_mean=np.where(is_member, np.nan, finite_dist),
                member_share=is_member.astype(np.float64),
            )
            if order is margin_order:
                shared_bins = bin_of, other_means
        conf_means = similarity.binned_means(bin_of, cfg.n_bins, confidence_mean=conf)
        bins.append(
            {
                "confidence_type": np.full(cfg.n_bins, ctype, dtype=object),
                "bin": np.arange(1, cfg.n_bins + 1),
                "n_points": other_means["n_points"],
                "confidence_mean": conf_means["confidence_mean"],
                **{name: v for name, v in other_means.items() if name != "n_points"},
            }
        )

    model_row = pd.DataFrame(
        {
            "objective": [cfg.objective],
            "weights": [model.weights.tolist()],
            "bias": [model.bias],
            "lp_objective_value": [model.objective_value],
            "train_accuracy": [float((model.predict(x_train) == y_train).mean())],
            # model.predict(points), from the margin at hand
            "accuracy": [float((np.where(margin >= 0, 1, -1) == labels).mean())],
            "n_query": [len(ids)],
            "n_members": [int(is_member.sum())],
            "n_train_pos": [int((y_train > 0).sum())],
            "n_train_neg": [int((y_train < 0).sum())],
            "train_draws": [draws],
            "distance_scale": [scale],
        }
    )
    # Each table is built as one frame from whole columns: frames per part and a concat cost more
    # than the rest of the table work.
    idx = np.concatenate([i for *_, i in extremes])
    extremes_frame = pd.DataFrame(
        {
            "confidence_type": np.repeat(np.array([c for c, *_ in extremes], dtype=object), k),
            "subset": np.repeat(np.array([sub for _, sub, *_ in extremes], dtype=object), k),
            "rank": np.tile(np.arange(k), len(extremes)),
            "point_id": ids[idx],
            "confidence": np.concatenate([conf[i] for _, _, conf, i in extremes]),
            "margin": margin[idx],
            "train_distance": train_distance[idx],
            "is_member": is_member[idx],
            "member_other_distance": other_distance[idx],
        }
    )
    return {
        "linprog_model": model_row,
        "linprog_metrics": pd.DataFrame(metrics, columns=["confidence_type", "metric", "value"]),
        "linprog_extremes": extremes_frame,
        "linprog_bins": pd.DataFrame({name: np.concatenate([b[name] for b in bins]) for name in bins[0]}),
    }


def _distance_ranks(
    train_distance: np.ndarray, raw: np.ndarray, scale: float, integer_grid: bool
) -> np.ndarray:
    """Average ranks of the (n,) finite train distances ``raw / scale``.

    On an integer grid every raw distance is the square root of an integer, and those integers are
    few (at most the grid's largest squared distance), so they are ranked by counting instead of
    sorting. This is used only when each raw distance is exactly the square root of its integer and
    distinct integers give distinct train distances: then both rankings are the same.
    """
    if integer_grid:
        squares = np.rint(raw * raw)
        if squares.max() <= 4 * raw.size and (np.sqrt(squares) == raw).all():
            keys = squares.astype(np.int64)
            present = np.flatnonzero(np.bincount(keys)).astype(np.float64)
            by_key = np.sqrt(present) / scale
            if (by_key[1:] > by_key[:-1]).all():
                return stats.average_ranks_of_ints(keys)
    # Average ranks do not depend on the order among ties, so any sort will do.
    return stats.average_ranks(train_distance, stats.stable_order(train_distance))


KIND = TrialKind(
    name="linprog",
    description="LP-trained linear classifier on a synthetic grid: confidence vs nearest training point.",
    config_cls=LinprogConfig,
    run=run,
    tables=TABLES,
    smoke={"train_size": 6, "test_size": 2000, "grid_size": 50.0},
)


def str_to_bool(text: str) -> bool:
    """Parse the published boolean flags (true/false, yes/no, 1/0)."""
    lowered = text.strip().lower()
    if lowered in ("true", "t", "yes", "y", "1"):
        return True
    if lowered in ("false", "f", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The published flags, plus --results, --objective, --workers and --query_seed."""
    d = LinprogConfig()
    p = argparse.ArgumentParser(
        prog="python -m privstudy.linprog_runner",
        description="Run the linear-programming confidence-similarity study (published flags). "
        "Results go to RESULTS/EXP_NAME as Parquet shards; finished trials are skipped "
        "on rerun. Aggregate with: python analysis/aggregate.py RESULTS/EXP_NAME",
    )
    p.add_argument("--train_size", type=int, default=d.train_size, help="training points per trial")
    p.add_argument("--test_size", type=int, default=d.test_size, help="query points sampled from the grid")
    p.add_argument("--grid_size", type=float, default=d.grid_size, help="grid extent per dimension")
    p.add_argument("--granularity", type=float, default=d.granularity, help="grid step")
    p.add_argument("--percent", type=float, default=d.percent, help="top/bottom set size, in percent")
    p.add_argument("--num_trials", type=int, default=100, help="trials (seeds 0..N-1)")
    p.add_argument(
        "--same_class",
        type=str_to_bool,
        default=d.same_class,
        help="nearest training point of the query's ideal class only (true/false)",
    )
    p.add_argument("--exp_name", required=True, help="study name: the folder under --results")
    p.add_argument("--num_dimensions", type=int, default=d.num_dimensions, help="grid dimensions")
    p.add_argument(
        "--ideal_weights",
        nargs="+",
        type=float,
        default=list(d.ideal_weights),
        help="normal vector of the ideal hyperplane",
    )
    p.add_argument("--ideal_bias", type=float, default=d.ideal_bias, help="offset of the ideal hyperplane")
    p.add_argument(
        "--use_multiprocessing",
        type=str_to_bool,
        default=True,
        help="run trials in a local process pool (true) or one after another (false)",
    )
    p.add_argument("--results", default=None, help="results root (default: results)")
    p.add_argument("--base_folder", default=None, help="published alias of --results")
    p.add_argument(
        "--objective",
        choices=["slack", "max_margin", "both"],
        default="slack",
        help="LP objective (published: slack)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="pool size (default: SLURM_CPUS_PER_TASK, else the core count)",
    )
    p.add_argument("--query_seed", type=int, default=d.query_seed, help="seed of the query-point sample")
    return p


def spec_from_args(args: argparse.Namespace) -> dict:
    """The study spec equivalent to a published command line."""
    fixed = {
        "train_size": args.train_size,
        "test_size": args.test_size,
        "grid_size": args.grid_size,
        "granularity": args.granularity,
        "percent": args.percent,
        "same_class": args.same_class,
        "num_dimensions": args.num_dimensions,
        "ideal_weights": list(args.ideal_weights),
        "ideal_bias": args.ideal_bias,
        "query_seed": args.query_seed,
    }
    objectives = ["slack", "max_margin"] if args.objective == "both" else [args.objective]
    return {
        "name": args.exp_name,
        "description": "from: python -m privstudy.linprog_runner " + " ".join(sys.argv[1:]),
        "kind": "linprog",
        "fixed": fixed,
        "grid": {"objective": objectives},
        "seeds": args.num_trials,
        "resources": {"cpus": 1, "mem_gb": 2, "timeout_min": 30},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the published LP command line through the study harness."""
    from privstudy.harness.flags import sweep_from_flags
    from privstudy.harness.sweep import EXIT_USAGE

    args = build_parser().parse_args(argv)
    if args.num_trials < 1:
        print("error: --num_trials must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    root = Path(args.results or args.base_folder or "results")
    executor = "local" if args.use_multiprocessing else "inline"
    return sweep_from_flags(spec_from_args(args), "linprog_runner", root, executor, args.workers)


if __name__ == "__main__":
    raise SystemExit(main())
