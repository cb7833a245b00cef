"""Kind `influence_unlearn`: the changes, the measures, the neural updates and the convex trial, each
against an answer known independently (by hand, by dense linear algebra, or by retraining)."""

from __future__ import annotations

import numpy as np
import pytest

from privstudy.unlearning import closed_form as cf
from privstudy.unlearning import corrections as co


def test_label_flips_follow_the_reference_pairs_and_budget():
    y = np.repeat(np.arange(10), 50)
    poisoned, idx = co.flip_labels(y, 10, budget=100, seed=42)
    assert len(idx) == 100 and len(np.unique(idx)) == 100
    for s in range(10):  # 10 of each class, each to its partner 9 - s
        mine = idx[y[idx] == s]
        assert len(mine) == 10 and (poisoned[mine] == 9 - s).all()
    untouched = np.setdiff1d(np.arange(len(y)), idx)
    assert (poisoned[untouched] == y[untouched]).all()
    again, idx2 = co.flip_labels(y, 10, budget=100, seed=42)
    assert (idx2 == idx).all() and not (co.flip_labels(y, 10, 100, seed=43)[1] == idx).all()
    # odd number of classes: the middle class is its own partner and keeps its labels
    y5 = np.repeat(np.arange(5), 40)
    p5, i5 = co.flip_labels(y5, 5, budget=40, seed=0)
    assert (y5[i5] != 2).all() and len(i5) == 40
    assert co.flip_labels(y, 10, 0, 0)[1].size == 0


def test_feature_changes_touch_exactly_the_chosen_columns_and_points():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(200, 6, 6, 3)).astype(np.uint8)
    x[:, 0, 0, :] = 7  # a constant pixel is never chosen
    y = rng.integers(0, 3, 200)
    ch = co.change_features(x, y, n_columns=5, fraction=0.25, value="zero", seed=1)
    assert len(ch.idx) == 50 and 0 not in ch.columns and len(ch.columns) == 5
    flat_new = ch.x_new.reshape(200, 36, 3)
    flat_old = x.reshape(200, 36, 3).astype(np.float32)
    assert (flat_new[ch.idx][:, ch.columns, :] == 0).all()  # every channel of the chosen pixels
    other = np.setdiff1d(np.arange(200), ch.idx)
    assert (flat_new[other] == flat_old[other]).all()
    keep_cols = np.setdiff1d(np.arange(36), ch.columns)
    assert (flat_new[:, keep_cols] == flat_old[:, keep_cols]).all()
    assert (ch.y_new == y).all() and (ch.y_old == y).all()
    tab = rng.integers(0, 2, size=(100, 20)).astype(np.uint8)
    m = co.change_features(tab, y[:100], 3, 1.0, "mean", seed=2)
    assert len(m.idx) == 100
    assert np.allclose(m.x_new[:, m.columns], tab[:, m.columns].mean(axis=0))
    with pytest.raises(ValueError, match="feature_columns"):
        co.change_features(tab, y[:100], 21, 1.0, "zero", seed=2)


def test_restored_fraction_macro_f1_and_label_statistic_by_hand():
    assert co.restored_fraction(0.8, 0.7, 0.9) == pytest.approx(0.5)
    assert np.isnan(co.restored_fraction(0.8, 0.9, 0.9))
    # classes 0,1,2: F1 = 2/3 (class 0: tp 1 fp 0 fn 1), 2/3 (class 1: tp 1 fp 1 fn 0), 1 (class 2)
    assert co.macro_f1(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3) == pytest.approx(
        (2 / 3 + 2 / 3 + 1) / 3
    )
    s = np.array([-2.0, 0.5, 3.0])
    logits = np.c_[np.zeros(3), s]  # a sigmoid unit: p(1) = sigmoid(s), so log p/(1-p) = s
    assert np.allclose(co.label_statistic(logits, np.array([1, 1, 1])), s)
    assert np.allclose(co.label_statistic(logits, np.array([0, 0, 0])), -s)
    z = np.log(np.array([[0.2, 0.3, 0.5]]))
    assert co.label_statistic(z, np.array([2]))[0] == pytest.approx(0.0)  # p = 0.5


def _gaussian_task(n: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, d)) + np.outer(2 * y - 1, np.full(d, 0.6 / np.sqrt(d) * 3))
    return np.c_[x, np.ones(n)], y


def test_old_label_auc_is_half_for_a_model_that_never_saw_the_flips_and_high_for_one_that_did():
    """Null: logistic regression fitted on the true labels (the retrained model) scores changed and
    control points alike; over 400 replicates the mean AUC is 0.5 within 4 standard errors (SE about
    0.001, small enough to see a bias of 0.005). Power: a model fitted on the flipped labels, with the
    capacity to memorise them."""
    null, poisoned = [], []
    for rep in range(400):
        x, y = _gaussian_task(1500, 5, rep)
        ch = co.label_change(x, y, 2, budget=300, seed=rep)
        clean, _ = cf.fit(cf.Objective(x, y, 1.0))
        null.append(co.old_label_auc(np.c_[np.zeros(len(x)), x @ clean], ch, 2))
        if rep < 20:  # a model with the capacity to memorise: 150 features for 300 points
            xs, ys = _gaussian_task(300, 150, rep)
            chs = co.label_change(xs, ys, 2, budget=60, seed=rep)
            bad, _ = cf.fit(cf.Objective(xs, chs.y_old, 0.1))
            poisoned.append(co.old_label_auc(np.c_[np.zeros(len(xs)), xs @ bad], chs, 2))
    null = np.array(null)
    se = null.std(ddof=1) / np.sqrt(len(null))
    assert se < 0.00125
    assert abs(null.mean() - 0.5) < 4 * se
    assert np.mean(poisoned) > 0.6


def test_stratified_auc_removes_the_class_mix_of_the_controls():
    """Changed points split evenly over an imbalanced pair of classes; a statistic that depends only on
    the class (no memorisation at all) must give AUC 0.5, which an unstratified AUC would not."""
    y = np.r_[np.zeros(900, int), np.ones(100, int)]
    ch = co.label_change(np.zeros((1000, 1)), y, 2, budget=100, seed=0)
    # logits that make the partner label likelier for class 1 than for class 0, the same for all members
    logits = np.where(y[:, None] == 1, np.array([[0.0, 0.5]]), np.array([[0.0, -3.0]]))
    assert co.old_label_auc(logits, ch, 2) == pytest.approx(0.5)


def test_top_eigenvalue_by_power_iteration():
    from privstudy.unlearning.neural import top_eigenvalue

    rng = np.random.default_rng(3)
    a = rng.standard_normal((30, 30))
    h = a @ a.T
    assert top_eigenvalue(lambda v: h @ v, 30, iters=300) == pytest.approx(
        np.linalg.eigvalsh(h)[-1], rel=1e-6
    )


def _convex_cfg(**kw):
    from privstudy.influence_unlearn_runner import InfluenceConfig

    base = dict(
        model="logreg",
        dataset="digits",
        one_vs_rest=3,
        train_size=1000,
        test_size=500,
        lam=1.0,
        sisa_shards=0,
    )
    base.update(kw)
    return InfluenceConfig(**base)


def _rows(out):
    return out["unlearn_method"].set_index("method")


def test_convex_trial_second_order_matches_retraining_and_newton_steps_reach_it():
    from privstudy.influence_unlearn_runner import run

    # One flip per class of a nearly separable task moves theta by 7%: the single second-order step
    # (exact to second order in the change) removes more than 90% of that; a second Newton step on the
    # corrected objective lands within 1e-3; eight reach retraining on a 10% poisoning (quadratically).
    one = _rows(run(_convex_cfg(flip_budget=2, lam=10.0)))
    assert one.loc["retrain", "param_dist"] == 0 and one.loc["retrain", "grad_residual"] < 1e-8
    assert one.loc["second_order", "param_dist"] < 0.1 * one.loc["none", "param_dist"]
    assert one.loc["first_order", "param_dist"] < one.loc["none", "param_dist"]
    two = _rows(run(_convex_cfg(flip_budget=2, lam=10.0, steps=2)))
    assert two.loc["second_order", "param_dist"] < 1e-3
    big = _rows(run(_convex_cfg(flip_budget=100, steps=8)))
    assert big.loc["second_order", "param_dist"] < 1e-8
    assert big.loc["second_order", "agreement"] == 1.0 and big.loc["second_order", "restored"] == 1.0
    for solver in ("lissa", "exact"):
        other = _rows(run(_convex_cfg(flip_budget=2, lam=10.0, solver=solver, solver_iters=50000)))
        assert other.loc["second_order", "param_dist"] == pytest.approx(
            one.loc["second_order", "param_dist"], rel=1e-3, abs=1e-9
        )


def test_convex_trial_with_an_empty_change_leaves_every_method_at_retraining():
    from privstudy.influence_unlearn_runner import run

    out = run(_convex_cfg(flip_budget=0, sisa_shards=3))
    rows = _rows(out)
    assert out["unlearn_trial"]["n_changed"].iloc[0] == 0
    for m in ("none", "first_order", "second_order", "finetune"):
        assert rows.loc[m, "param_dist"] < 1e-9, m  # theta* is the retrained model already
        assert rows.loc[m, "agreement"] == 1.0
    assert rows.loc["second_order", "hvps"] == 0


def test_certification_flag_means_the_noise_covers_the_residual():
    from privstudy.influence_unlearn_runner import run

    rows = _rows(
        run(_convex_cfg(flip_budget=10, perturbation_sigma=5.0, certify_epsilon=1.0, certify_delta=1e-4))
    )
    c = np.sqrt(2 * np.log(1.5 / 1e-4))
    for _, r in rows.iterrows():
        assert r["sigma_needed"] == pytest.approx(r["grad_residual"] * c, rel=1e-12)
        assert r["certified"] == (5.0 >= r["sigma_needed"])
    assert rows.loc["retrain", "certified"] and not rows.loc["none", "certified"]
