"""The LP pipeline on cases with known answers."""

import math

import numpy as np
import pandas as pd
import pytest

from privstudy.harness.config import ConfigError
from privstudy.linprog_runner import (
    LinprogConfig,
    confidences,
    ideal_labels,
    nearest_train_distances,
    run,
    sample_training_set,
)
from privstudy.similarity import grid
from privstudy.similarity import lp as classifier

# A hand-made separable set in 2-D, labelled by the ideal hyperplane x0 - x1 = 0.
X = np.array([[3.0, 1.0], [4.0, 0.0], [1.0, 3.0], [0.0, 4.0]])
Y = np.array([1.0, 1.0, -1.0, -1.0])
R2 = math.sqrt(2.0)


def test_max_margin_lp_finds_the_symmetric_hyperplane():
    # max t s.t. y_i (w.x_i + b) >= t, |w_j| <= 1. Adding the rows of (3,1) and (1,3) gives
    # t <= w0 - w1 <= 2, with equality only at w = (1, -1), b = 0: normalised w = (1, -1)/sqrt2.
    model = classifier.train_max_margin(X, Y)
    np.testing.assert_allclose(model.weights, [1 / R2, -1 / R2], atol=1e-9)
    assert model.bias == pytest.approx(0.0, abs=1e-9)
    assert model.objective_value == pytest.approx(-2.0)
    # Signed distances of the training points: (3-1)/sqrt2 = sqrt2, 4/sqrt2 = 2 sqrt2, ...
    np.testing.assert_allclose(model.decision(X), [R2, 2 * R2, -R2, -2 * R2], atol=1e-9)


def test_slack_lp_separates_with_zero_slack_and_unit_normal():
    model = classifier.train_slack(X, Y)
    assert model.objective_value == pytest.approx(0.0, abs=1e-9)
    assert np.linalg.norm(model.weights) == pytest.approx(1.0)
    assert (model.predict(X) == Y).all()
    # Zero slack means functional margin >= 1 before normalisation: every point strictly separated.
    assert (Y * model.decision(X) > 0).all()


def test_slack_lp_in_one_dimension_has_the_only_possible_direction():
    # In 1-D every separating direction is +1; the threshold -b/w must lie between the classes.
    model = classifier.train_slack(np.array([[0.0], [1.0], [5.0], [6.0]]), np.array([-1.0, -1.0, 1.0, 1.0]))
    assert model.weights[0] == pytest.approx(1.0)
    assert 1.0 < -model.bias < 5.0


def test_confidences_by_hand():
    model = classifier.LinearModel(np.array([1 / R2, -1 / R2]), 0.0, 0.0)
    pts = np.array([[3.0, 1.0], [2.0, 2.0], [4.0, 0.0]])
    margin, conf = confidences(model, pts, grid_size=4.0, n_dims=2)
    # Corners of [0,4]^2 reach at most |4 - 0|/sqrt2 = 2 sqrt2 from the boundary.
    np.testing.assert_allclose(margin, [R2, 0.0, 2 * R2])
    np.testing.assert_allclose(conf["boundary"], [0.5, 0.0, 1.0])
    np.testing.assert_allclose(
        conf["sigmoid"],
        [2 * abs(1 / (1 + math.exp(-R2)) - 0.5), 0.0, 2 * abs(1 / (1 + math.exp(-2 * R2)) - 0.5)],
    )


def test_train_distances_by_hand_all_and_same_class():
    query = np.array([[2.0, 2.0], [4.0, 4.0], [4.0, 1.0], [3.0, 1.0]])
    qcls = ideal_labels(query, (1.0, -1.0), 0.0)  # (2,2) and (4,4) lie on the boundary: class -1
    np.testing.assert_array_equal(qcls, [-1, -1, 1, 1])
    d_all, other_all = nearest_train_distances(query, X, None, None)
    np.testing.assert_allclose(d_all, [R2, math.sqrt(10), 1.0, 0.0])
    np.testing.assert_allclose(other_all, [R2, R2, R2, R2])
    d_same, other_same = nearest_train_distances(query, X, qcls, Y.astype(np.int8))
    np.testing.assert_allclose(d_same, [R2, math.sqrt(10), 1.0, 0.0])
    np.testing.assert_allclose(other_same, [R2, R2, R2, R2])
    # A query of class -1 next to a +1 training point: same-class distance skips it.
    d, _ = nearest_train_distances(np.array([[4.0, 3.5]]), X, np.array([-1], np.int8), Y.astype(np.int8))
    assert d[0] == pytest.approx(math.sqrt(9 + 0.25))  # to (1, 3), not to (3, 1)


def test_brute_force_and_kd_tree_paths_agree():
    rng = np.random.default_rng(0)
    q, t = rng.normal(size=(3000, 3)), rng.normal(size=(200, 3))
    from privstudy.linprog_runner import _nearest

    brute = np.sqrt(((q[:, None, :] - t[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(_nearest(q, t), brute)  # KD-tree path (200 > 64)
    np.testing.assert_allclose(
        _nearest(q, t[:20]), np.sqrt(((q[:, None] - t[None, :20]) ** 2).sum(-1)).min(1)
    )


def test_grid_points_ids_and_sampling():
    assert grid.points_per_dim(0.3, 0.1) == 4  # 0, 0.1, 0.2, 0.3 despite float division
    pts, ids = grid.query_points(100, 4.0, 1.0, 2, 0)  # 25 points < 100: the whole grid
    assert len(ids) == 25 and ids.tolist() == list(range(25))
    np.testing.assert_array_equal(pts[7], [1.0, 2.0])  # id 7 = 1 * 5 + 2, last axis fastest
    p1, i1 = grid.query_points(50, 100.0, 1.0, 2, 3)
    p2, i2 = grid.query_points.__wrapped__(50, 100.0, 1.0, 2, 3)
    np.testing.assert_array_equal(i1, i2)
    assert len(np.unique(i1)) == 50 and (np.diff(i1) > 0).all()
    assert not np.array_equal(i1, grid.query_points(50, 100.0, 1.0, 2, 4)[1])


def test_training_sample_is_conditioned_on_both_classes():
    labels = np.r_[np.full(99, 1, np.int8), [-1]]
    idx, draws = sample_training_set(100, labels, 20, np.random.default_rng(0))
    assert set(labels[idx]) == {1, -1} and draws >= 1 and len(set(idx)) == 20
    with pytest.raises(RuntimeError, match="single class"):
        sample_training_set(10, np.ones(10, np.int8), 3, np.random.default_rng(0))


TINY = dict(train_size=4, test_size=1000, grid_size=4.0, percent=20.0, n_bins=5)


@pytest.mark.parametrize("objective", ["slack", "max_margin"])
@pytest.mark.parametrize("same_class", [False, True])
def test_full_trial_agrees_with_an_independent_recomputation(objective, same_class):
    cfg = LinprogConfig(seed=5, objective=objective, same_class=same_class, **TINY)
    out = run(cfg)
    model = out["linprog_model"].iloc[0]
    w, b = np.array(model["weights"]), model["bias"]
    pts, ids = grid.query_points(1000, 4.0, 1.0, 2, 0)  # the whole 5 x 5 grid
    ext = out["linprog_extremes"]
    assert model["n_members"] == 4 and model["n_query"] == 25
    # The training sample, drawn as the trial draws it (seeded by the trial's seed); the extremes agree.
    lab = ideal_labels(pts, (1.0, -1.0), 0.0)
    train_idx, _ = sample_training_set(25, lab, 4, np.random.default_rng(5))
    assert (ext["is_member"] == ext["point_id"].isin(ids[train_idx])).all()
    train_pts = pts[train_idx]
    # Independent recomputation with plain loops.
    for row in ext.itertuples():
        p = pts[row.point_id]
        assert row.margin == pytest.approx(float(p @ w + b))
        reach = max(abs(c @ w + b) for c in grid.corners(4.0, 2))
        expect = (
            abs(p @ w + b) / reach if row.confidence_type == "boundary" else math.tanh(abs(p @ w + b) / 2)
        )
        assert row.confidence == pytest.approx(expect)
    # Set sizes: round(25 * 20%) = 5 per set, 2 sets, 2 confidence types.
    assert len(ext) == 2 * 2 * 5
    for (_ctype, subset), g in ext.groupby(["confidence_type", "subset"]):
        conf = g.sort_values("rank")["confidence"].to_numpy()
        assert (np.diff(conf) <= 0).all() if subset == "top" else (np.diff(conf) >= 0).all()
    tl = lab[train_idx]
    raw = []
    for p, c in zip(pts, lab):
        cands = [t for t, tc in zip(train_pts, tl) if (tc == c or not same_class)]
        raw.append(min(np.linalg.norm(p - t) for t in cands) if cands else np.inf)
    raw = np.array(raw)
    scale = raw[np.isfinite(raw)].max()
    assert model["distance_scale"] == pytest.approx(scale)
    for row in ext.itertuples():
        assert row.train_distance == pytest.approx(raw[row.point_id] / scale)


def test_trial_metrics_match_their_definitions():
    cfg = LinprogConfig(seed=2, train_size=30, test_size=2000, grid_size=60.0, percent=10.0)
    out = run(cfg)
    m = out["linprog_metrics"].set_index(["confidence_type", "metric"])["value"]
    ext = out["linprog_extremes"]
    for ctype in ("boundary", "sigmoid"):
        top = ext[(ext.confidence_type == ctype) & (ext.subset == "top")]
        assert m[(ctype, "top_member_share")] == pytest.approx(top["is_member"].mean())
        assert m[(ctype, "top_members_recall")] == pytest.approx(top["is_member"].sum() / 30)
        assert m[(ctype, "set_size")] == 200
    bins = out["linprog_bins"]
    assert bins.groupby("confidence_type")["n_points"].sum().tolist() == [2000, 2000]


def test_same_seed_gives_identical_rows_and_another_seed_does_not():
    cfg = LinprogConfig(seed=7, train_size=10, test_size=5000, grid_size=100.0)
    a, b = run(cfg), run(LinprogConfig(**{**cfg.to_dict(), "ideal_weights": tuple(cfg.ideal_weights)}))
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    c = run(LinprogConfig(seed=8, train_size=10, test_size=5000, grid_size=100.0))
    assert not c["linprog_model"]["weights"].iloc[0] == a["linprog_model"]["weights"].iloc[0]


@pytest.mark.parametrize(
    "kwargs, key, fragment",
    [
        (dict(ideal_weights=(1.0, -1.0, 2.0)), "ideal_weights", "needs 2 entries"),
        (dict(train_size=1), "train_size", "at least 2"),
        (dict(train_size=30, test_size=25, grid_size=4.0), "train_size", "below the 25 query points"),
        (dict(percent=0.0), "percent", "(0, 50]"),
        (dict(test_size=10, train_size=2, percent=1.0), "percent", "empty set"),
        (dict(ideal_bias=-5000.0), "ideal_bias", "does not cut the grid"),
        (dict(granularity=0.0), "granularity", "(0, grid_size"),
        (dict(num_dimensions=25, ideal_weights=(1.0,) * 25), "num_dimensions", "1..20"),
        (dict(granularity=1e-6, num_dimensions=8, ideal_weights=(1.0, -1.0) * 4), "granularity", "2^62"),
    ],
)
def test_impossible_configs_are_rejected_naming_the_field(kwargs, key, fragment):
    with pytest.raises(ConfigError) as err:
        LinprogConfig(**kwargs)
    assert err.value.key == key and fragment in err.value.message


def test_auc_and_spearman_metrics_match_an_independent_computation():
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    cfg = LinprogConfig(seed=1, train_size=40, test_size=3000, grid_size=60.0)
    out = run(cfg)
    pts, ids = grid.query_points(3000, 60.0, 1.0, 2, 0)
    labels = ideal_labels(pts, cfg.ideal_weights, cfg.ideal_bias)
    idx, _ = sample_training_set(len(ids), labels, 40, np.random.default_rng(1))
    is_member = np.isin(np.arange(len(ids)), idx)
    model = out["linprog_model"].iloc[0]
    margin = pts @ np.array(model["weights"]) + model["bias"]
    dist = np.sqrt(((pts[:, None] - pts[idx][None]) ** 2).sum(-1)).min(1)
    m = out["linprog_metrics"].set_index(["confidence_type", "metric"])["value"]
    reach = np.abs(grid.corners(60.0, 2) @ np.array(model["weights"]) + model["bias"]).max()
    for ctype, conf in (("boundary", np.abs(margin) / reach), ("sigmoid", np.tanh(np.abs(margin) / 2))):
        assert m[(ctype, "auc_confidence_membership")] == pytest.approx(roc_auc_score(is_member, conf))
        assert m[(ctype, "spearman_confidence_train_distance")] == pytest.approx(
            spearmanr(conf, dist).statistic
        )


def test_integer_path_gives_bit_identical_distances_to_the_float_path():
    from privstudy.linprog_runner import _nearest, int_columns

    rng = np.random.default_rng(3)
    for d, hi in ((1, 5000), (2, 1000), (3, 300)):
        q = rng.integers(0, hi + 1, size=(5000, d)).astype(float)
        t = q[rng.choice(5000, 7, replace=False)]
        cols = int_columns(q)
        assert cols is not None and cols.shape == (d, 5000)
        np.testing.assert_array_equal(_nearest(q, t, cols), _nearest(q, t))
    assert int_columns(np.array([[0.5, 1.0]])) is None  # not an integer
    assert int_columns(np.array([[40000.0, 0.0]])) is None  # 2 * 80000^2 overflows int32
    # Non-integer training points fall back to the float path.
    q = np.array([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_array_equal(
        _nearest(q, np.array([[0.5, 0.0]]), int_columns(q)), [0.5, math.sqrt(22.25)]
    )


def reference_tables(cfg: LinprogConfig, sigmoid=lambda m: np.tanh(np.abs(m) / 2)) -> dict[str, pd.DataFrame]:
    """One trial computed the plain way: a Python sort per confidence, scipy ranks, loops over bins."""
    from scipy.stats import rankdata, spearmanr

    pts, ids = grid.query_points(
        cfg.test_size, cfg.grid_size, cfg.granularity, cfg.num_dimensions, cfg.query_seed
    )
    lab = ideal_labels(pts, cfg.ideal_weights, cfg.ideal_bias)
    train_idx, _ = sample_training_set(len(ids), lab, cfg.train_size, np.random.default_rng(cfg.seed))
    model = classifier.train(pts[train_idx], lab[train_idx].astype(float), cfg.objective)
    n, members = len(ids), set(train_idx.tolist())
    is_member = np.array([i in members for i in range(n)])
    margin = pts @ model.weights + model.bias
    reach = max(abs(c @ model.weights + model.bias) for c in grid.corners(cfg.grid_size, cfg.num_dimensions))
    confs = {"boundary": np.abs(margin) / reach, "sigmoid": sigmoid(margin)}
    raw = np.array(
        [
            min(
                (np.linalg.norm(p - pts[j]) for j in train_idx if not cfg.same_class or lab[j] == lab[i]),
                default=np.inf,
            )
            for i, p in enumerate(pts)
        ]
    )
    dist = raw / raw[np.isfinite(raw)].max()
    k = round(n * cfg.percent / 100)
    ext, met, bins = [], [], []
    for ctype in ("boundary", "sigmoid"):
        conf = confs[ctype]
        order = sorted(range(n), key=lambda i: (conf[i], abs(margin[i]), ids[i]))
        for subset, idx in (("bottom", order[:k]), ("top", order[::-1][:k])):
            ext += [
                (ctype, subset, r, ids[i], conf[i], margin[i], dist[i], is_member[i])
                for r, i in enumerate(idx)
            ]
        ranks = rankdata(conf)
        m = len(members)
        top, bottom = order[::-1][:k], order[:k]
        met += [
            (ctype, "spearman_confidence_train_distance", spearmanr(conf, dist).statistic),
            (ctype, "auc_confidence_membership", (ranks[is_member].sum() - m * (m + 1) / 2) / (m * (n - m))),
            (ctype, "top_member_share", is_member[top].mean()),
            (ctype, "bottom_members_recall", is_member[bottom].sum() / m),
            (ctype, "top_train_distance_mean", dist[top].mean()),
        ]
        for b in range(cfg.n_bins):
            idx = [i for pos, i in enumerate(order) if pos * cfg.n_bins // n == b]
            non = [dist[i] for i in idx if not is_member[i]]
            bins.append(
                (
                    ctype,
                    b + 1,
                    len(idx),
                    conf[idx].mean(),
                    dist[idx].mean(),
                    np.mean(non),
                    is_member[idx].mean(),
                )
            )
    return {
        "linprog_extremes": pd.DataFrame(
            ext,
            columns=[
                "confidence_type",
                "subset",
                "rank",
                "point_id",
                "confidence",
                "margin",
                "train_distance",
                "is_member",
            ],
        ),
        "linprog_metrics": pd.DataFrame(met, columns=["confidence_type", "metric", "value"]),
        "linprog_bins": pd.DataFrame(
            bins,
            columns=[
                "confidence_type",
                "bin",
                "n_points",
                "confidence_mean",
                "train_distance_mean",
                "nonmember_train_distance_mean",
                "member_share",
            ],
        ),
    }


def assert_matches_reference(out: dict[str, pd.DataFrame], ref: dict[str, pd.DataFrame]) -> None:
    ext = out["linprog_extremes"]
    for col in ref["linprog_extremes"].columns:
        got, want = ext[col].to_numpy(), ref["linprog_extremes"][col].to_numpy()
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=col)
        else:
            np.testing.assert_array_equal(got, want, err_msg=col)
    m = out["linprog_metrics"].set_index(["confidence_type", "metric"])["value"]
    for ctype, metric, value in ref["linprog_metrics"].itertuples(index=False):
        assert m[(ctype, metric)] == pytest.approx(value, rel=1e-12, abs=1e-15), (ctype, metric)
    bins = out["linprog_bins"][ref["linprog_bins"].columns]
    pd.testing.assert_frame_equal(bins, ref["linprog_bins"], check_exact=False, rtol=1e-12, check_dtype=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        # The whole 31 x 31 grid; the max-margin LP on it gives w = (1, -1)/sqrt 2 and many exact ties.
        dict(test_size=2000, grid_size=30.0, objective="max_margin"),
        dict(test_size=2000, grid_size=30.0),
        dict(test_size=1500, grid_size=60.0, same_class=True),  # a sample of the grid
        dict(test_size=1500, grid_size=12.0, granularity=0.3),  # not integers: the float path
        dict(test_size=800, grid_size=8.0, num_dimensions=3, ideal_weights=(1.0, -1.0, 0.5)),
    ],
)
def test_trial_tables_equal_a_plain_reference_computation(kwargs):
    cfg = LinprogConfig(seed=3, train_size=8, percent=10.0, n_bins=7, **kwargs)
    assert_matches_reference(run(cfg), reference_tables(cfg))


def test_trial_tables_equal_the_reference_when_a_confidence_does_not_follow_the_margin(monkeypatch):
    # A confidence that is not a non-decreasing function of |margin| must get its own order.
    import privstudy.linprog_runner as runner

    plain = runner.confidences

    def bumpy(model, points, grid_size, n_dims):
        margin, confs = plain(model, points, grid_size, n_dims)
        return margin, {**confs, "sigmoid": np.abs(np.sin(margin))}

    monkeypatch.setattr(runner, "confidences", bumpy)
    cfg = LinprogConfig(seed=4, train_size=8, test_size=2000, grid_size=30.0, percent=10.0, n_bins=7)
    assert_matches_reference(run(cfg), reference_tables(cfg, lambda m: np.abs(np.sin(m))))


def test_binned_means_skip_nans():
    from privstudy.similarity.confidence import binned_means

    bins = np.array([0, 0, 1, 1, 2, 2])
    v = np.array([1.0, np.nan, -0.0, -0.0, np.nan, np.nan])
    out = binned_means(bins, 3, v=v)
    np.testing.assert_array_equal(out["n_points"], [2, 2, 2])
    np.testing.assert_array_equal(out["v"][:2], [1.0, 0.0])
    assert np.isnan(out["v"][2])


@pytest.mark.parametrize(
    "raw",
    [
        np.sqrt(np.array([0, 5, 5, 2, 9, 1, 2, 0], dtype=float)),  # roots of integers: counted
        np.array([0.5, 1.5, 1.5, 0.25, 2.0]),  # not roots of integers: sorted
    ],
)
def test_distance_ranks_equal_scipy_ranks_by_either_path(raw):
    from scipy.stats import rankdata

    from privstudy.linprog_runner import _distance_ranks

    scale = raw.max()
    np.testing.assert_array_equal(_distance_ranks(raw / scale, raw, scale, True), rankdata(raw / scale))
