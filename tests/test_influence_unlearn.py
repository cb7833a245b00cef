"""Kind `influence_unlearn`: the changes, the measures, the neural updates and the convex trial, each
against an answer known independently (by hand, by dense linear algebra, or by retraining)."""

from __future__ import annotations

import json

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
    from privstudy.influence_runner import InfluenceConfig

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
    from privstudy.influence_runner import run

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
    from privstudy.influence_runner import run

    out = run(_convex_cfg(flip_budget=0, sisa_shards=3))
    rows = _rows(out)
    assert out["unlearn_trial"]["n_changed"].iloc[0] == 0
    for m in ("none", "first_order", "second_order", "finetune"):
        assert rows.loc[m, "param_dist"] < 1e-9, m  # theta* is the retrained model already
        assert rows.loc[m, "agreement"] == 1.0
    assert rows.loc["second_order", "hvps"] == 0


def test_certification_flag_means_the_noise_covers_the_residual():
    from privstudy.influence_runner import run

    rows = _rows(
        run(_convex_cfg(flip_budget=10, perturbation_sigma=5.0, certify_epsilon=1.0, certify_delta=1e-4))
    )
    c = np.sqrt(2 * np.log(1.5 / 1e-4))
    for _, r in rows.iterrows():
        assert r["sigma_needed"] == pytest.approx(r["grad_residual"] * c, rel=1e-12)
        assert r["certified"] == (5.0 >= r["sigma_needed"])
    assert rows.loc["retrain", "certified"] and not rows.loc["none", "certified"]


# ---- neural updates (TensorFlow) ----


@pytest.fixture(scope="module")
def tiny():
    """A tanh MLP with 3 classes, trained briefly on 120 points, and a label change of 12 points."""
    import tensorflow as tf

    from privstudy.models.tabular import build_tabular_model

    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    model = build_tabular_model(5, 3, (8,))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    ch = co.label_change(x, y, 3, budget=12, seed=0)
    model.fit(x, ch.y_old, epochs=30, batch_size=32, verbose=0)
    return model, x, ch


def _dense_operator(op, dim):
    return np.stack([op(e) for e in np.eye(dim)], axis=1)


def test_head_gradient_and_curvature_against_the_whole_model_and_brute_force(tiny):
    import tensorflow as tf

    from privstudy.unlearning import influence
    from privstudy.unlearning.neural import Counts, Head

    model, x, ch = tiny
    logits_model = tf.keras.Model(model.input, model.get_layer("logits").output)
    for last in (1, 2):
        head = Head(model, last)
        g = head.gradient(head.inputs(x), ch.y_new, Counts())
        ref = influence.loss_gradient(logits_model, head.variables, x, ch.y_new, from_logits=True)
        assert np.allclose(g, ref, rtol=1e-5, atol=1e-6)
    assert Head(model, None).n_params == model.count_params()
    # last layer: the logits are linear in its weights, so Gauss-Newton equals the Hessian
    head = Head(model, 1)
    h = head.inputs(x)
    hess = _dense_operator(head.hvp(h, ch.y_new, Counts()), head.n_params)
    ggn = _dense_operator(head.hvp(h, ch.y_new, Counts(), curvature="gauss_newton"), head.n_params)
    assert np.allclose(hess, ggn, rtol=1e-4, atol=1e-5)
    # two layers: Gauss-Newton is J^T (diag p - p p^T) J, built here from the explicit Jacobian
    head2 = Head(model, 2)
    variables = head2.variables
    with tf.GradientTape(persistent=True) as tape:
        z = logits_model(x[:20], training=False)
    jac = [tape.jacobian(z, v) for v in variables]  # each (20, 3, *v.shape)
    j = np.concatenate([t.numpy().reshape(20, 3, -1) for t in jac], axis=2)  # (20, 3, d)
    p = tf.nn.softmax(z).numpy()
    brute = sum(j[i].T @ (np.diag(p[i]) - np.outer(p[i], p[i])) @ j[i] for i in range(20))
    ggn2 = _dense_operator(
        head2.hvp(x[:20], ch.y_new[:20], Counts(), curvature="gauss_newton"), head2.n_params
    )
    assert np.allclose(ggn2, brute, rtol=1e-4, atol=1e-5)
    assert np.linalg.eigvalsh((ggn2 + ggn2.T) / 2)[0] > -1e-5  # positive semi-definite


def test_second_order_update_equals_the_dense_damped_newton_step(tiny):
    from privstudy.unlearning.neural import Counts, Head, unlearn

    model, x, ch = tiny
    head = Head(model, 1)
    theta = head.get()
    h = head.inputs(x)
    n, damping = len(x), 1e-3
    hess = _dense_operator(head.hvp(h, ch.y_new, Counts()), head.n_params)
    delta = head.gradient(h[ch.idx], ch.y_new[ch.idx], Counts()) - head.gradient(
        h[ch.idx], ch.y_old[ch.idx], Counts()
    )
    expected = theta - np.linalg.solve(hess + damping * n * np.eye(len(theta)), delta)
    for solver in ("cg", "lissa"):
        up = unlearn(
            head,
            2,
            ch.idx,
            x,
            ch.y_old,
            x,
            ch.y_new,
            solver=solver,
            damping=damping,
            max_iter=20000,
            tol=1e-9,
        )
        assert not up.diverged and up.counts.grad_examples == 2 * len(ch.idx)
        assert np.allclose(up.theta, expected, rtol=1e-4, atol=1e-5), solver
        assert np.array_equal(head.get(), theta)  # the model is left as it was
    first = unlearn(head, 1, ch.idx, x, ch.y_old, x, ch.y_new, tau=0.01)
    assert np.allclose(first.theta, theta - 0.01 * delta, rtol=1e-5, atol=1e-7)
    none = unlearn(head, 2, np.zeros(0, np.int64), x, ch.y_old, x, ch.y_new)
    assert np.array_equal(none.theta, theta) and none.counts.hvps == 0


def test_newton_steps_drive_the_tilted_gradient_to_zero():
    """Steps > 1 target J(theta; D~) - g0^T theta, g0 = grad J(theta*; D): its gradient at the result
    must vanish (the fixed point of the iteration), which a single step does not achieve. Labels with
    30% noise keep the corrected objective bounded below (no separating direction)."""
    import tensorflow as tf

    from privstudy.models.tabular import build_tabular_model
    from privstudy.unlearning.neural import Counts, Head, unlearn

    tf.keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    noisy = rng.random(600) < 0.3
    y[noisy] = rng.integers(0, 3, noisy.sum())
    model = build_tabular_model(5, 3, (8,))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    ch = co.label_change(x, y, 3, budget=60, seed=0)
    model.fit(x, ch.y_old, epochs=20, batch_size=64, verbose=0)
    head = Head(model, 1)
    theta = head.get()
    h = head.inputs(x)
    g0 = head.gradient(h, ch.y_old, Counts())

    def tilted(t):
        head.set(t)
        out = head.gradient(h, ch.y_new, Counts()) - g0
        head.set(theta)
        return np.linalg.norm(out)

    start = tilted(theta)
    kw = dict(damping=1e-4, tol=1e-10, max_iter=500)
    one = unlearn(head, 2, ch.idx, x, ch.y_old, x, ch.y_new, **kw)
    many = unlearn(head, 2, ch.idx, x, ch.y_old, x, ch.y_new, steps=10, **kw)
    assert tilted(many.theta) < 1e-4 * start < tilted(one.theta)


def test_study_runs_and_aggregates_every_method(tmp_path, write_spec):
    """A neural label-poisoning setting and a convex feature setting through `sweep` and `aggregate`:
    every method appears; the retrained row is the reference (agreement 1, restored 1, time ratio 1);
    the table's means are those of the shards."""
    import pandas as pd

    from conftest import run_cli

    spec = {
        "name": "iu",
        "experiments": [
            {
                "kind": "influence_unlearn",
                "fixed": {
                    "train_size": 400,
                    "test_size": 300,
                    "epochs": 8,
                    "flip_budget": 80,
                    "damping": 0.01,
                    "sisa_shards": 2,
                    "refit_l2": [0.001, 0.01],
                    "val_size": 200,
                },
                "seeds": 2,
            },  # fmt: skip
            {
                "kind": "influence_unlearn",
                "fixed": {
                    "model": "logreg",
                    "one_vs_rest": 3,
                    "setting": "features",
                    "feature_columns": 4,
                    "train_size": 400,
                    "test_size": 300,
                    "sisa_shards": 2,
                    "val_size": 200,
                },
                "seeds": 2,
            },  # fmt: skip
        ],
    }
    assert run_cli("sweep", str(write_spec(spec)), "--results", str(tmp_path), "--executor", "inline") == 0
    study = tmp_path / "iu"
    assert run_cli("aggregate", str(study)) == 0
    table = pd.read_csv(study / "tables" / "unlearn_methods.csv")
    for model, g in table.groupby("model"):
        refit = ["refit"] if model == "mlp" else []  # logreg: retrain is the exact refit
        expected = ["none", "first_order", "second_order", *refit, "finetune", "retrain", "sisa"]
        assert list(g["method"]) == expected, model
        assert g["acc_val_mean"].notna().all()
        ref = g.set_index("method").loc["retrain"]
        assert ref["agreement_mean"] == 1 and ref["time_ratio_mean"] == 1 and ref["param_dist_mean"] == 0
    neural = table[table["model"] == "mlp"].set_index("method")
    assert neural.loc["retrain", "restored_mean"] == 1 and neural.loc["none", "restored_mean"] == 0
    assert 0.001 <= neural.loc["refit", "l2_mean"] <= 0.01
    shards = pd.concat(pd.read_parquet(p) for p in (study / "shards" / "unlearn_method").glob("*.parquet"))
    shards["model"] = shards["config_json"].map(lambda c: json.loads(c)["model"])
    acc = shards[(shards.model == "mlp") & (shards.method == "second_order")]["acc"].mean()
    assert neural.loc["second_order", "acc_mean"] == pytest.approx(acc)
    assert (study / "figures" / "unlearn_tradeoff.png").stat().st_size > 0
    assert "Closed-form unlearning" in (study / "report.md").read_text()


def _neural_cfg(**kw):
    from privstudy.influence_runner import InfluenceConfig

    base = dict(train_size=300, test_size=200, epochs=5, flip_budget=60, finetune_epochs=0, sisa_shards=0)
    base.update(kw)
    return InfluenceConfig(**base)


def test_validation_split_is_disjoint_and_leaves_the_other_splits_as_they_were():
    from collections import Counter

    from privstudy.data.examples import load_examples
    from privstudy.influence_runner import load_split

    plain = load_split(_neural_cfg())
    data = load_split(_neural_cfg(val_size=150))
    assert len(plain.y_val) == 0 and len(data.y_val) == 150
    assert np.array_equal(plain.x, data.x) and np.array_equal(plain.x_test, data.x_test)
    # disjoint draws: no image is used more often across the three splits than the pool holds it
    # (digits repeats some images, so a plain intersection would not do)
    key = lambda a: Counter(r.tobytes() for r in np.asarray(a).reshape(len(a), -1))  # noqa: E731
    pool = key(load_examples("digits", None, None, 0)[0])
    used = key(data.x) + key(data.x_test) + key(data.x_val)
    assert all(used[k] <= pool[k] for k in used)
    overlap = key(np.r_[data.x_test, data.x_test[:1]])  # the check itself: a shared image breaks it
    assert any(overlap[k] + key(data.x)[k] + key(data.x_val)[k] > pool[k] for k in overlap)


def test_refit_keeps_the_strength_of_best_validation_accuracy():
    """With two strengths the refit must equal the single-strength trial of higher validation accuracy
    (same theta*, same start): its L2, validation and evaluation accuracy, and its work is the sum."""
    from privstudy.influence_runner import run

    single = {}
    for l2 in (0.0003, 3.0):
        r = _rows(run(_neural_cfg(refit_l2=(l2,), val_size=300))).loc["refit"]
        assert r["l2"] == l2
        single[l2] = r
    assert single[0.0003]["acc_val"] != single[3.0]["acc_val"]  # the choice is not a tie
    best = max(single, key=lambda k: single[k]["acc_val"])
    both = _rows(run(_neural_cfg(refit_l2=(0.0003, 3.0), val_size=300))).loc["refit"]
    assert both["l2"] == best
    assert both["acc_val"] == single[best]["acc_val"] and both["acc"] == single[best]["acc"]
    assert both["hvps"] == single[0.0003]["hvps"] + single[3.0]["hvps"]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(refit_l2=(0.01, 0.1)), "need a validation split"),
        (dict(refit_l2=(-1.0,)), "strengths must be >= 0"),
        (dict(val_size=5), "val_size"),
        (dict(refit_layers=0), "refit_layers"),
        (dict(val_size=1500), "val_size=1500 exceed"),
    ],
)
def test_refit_and_validation_settings_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        _neural_cfg(**kw)
    with pytest.raises(ValueError, match="logreg's retrain is already the exact refit"):
        _convex_cfg(refit_l2=(0.1,))


def _softmax_regression(h, y, classes, lam):
    """The minimiser of sum cross-entropy(h W + b, y) + lam / 2 ||W||^2 in float64 by L-BFGS, written
    here from the formulas (the independent answer for the head refit on one layer)."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    h = h.astype(np.float64)
    rows = np.arange(len(y))
    d = h.shape[1]

    def fg(t):
        w, b = t[: d * classes].reshape(d, classes), t[d * classes :]
        logp = log_softmax(h @ w + b, axis=1)
        p = np.exp(logp)
        p[rows, y] -= 1.0
        f = -logp[rows, y].sum() + lam / 2 * (w**2).sum()
        return f, np.r_[(h.T @ p + lam * w).ravel(), p.sum(0)]

    fit = minimize(fg, np.zeros(d * classes + classes), jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "gtol": 1e-11, "ftol": 1e-15})  # fmt: skip
    return fit.x


def test_head_refit_is_the_regularised_minimiser_on_one_layer(tiny):
    """On the last layer the refit is softmax regression on the frozen features with the kernel
    penalised: it must land on that problem's minimiser found independently, for two strengths, and
    leave the model's parameters as they were. The unpenalised bias is determined up to a constant
    added to every class (softmax is invariant to it): biases are compared centred."""
    from privstudy.unlearning.neural import Head, penalty_mask, refit

    model, x, ch = tiny
    head = Head(model, 1)
    theta = head.get()
    h = head.inputs(x)
    assert penalty_mask(head).sum() == h.shape[1] * 3  # the kernel, not the bias
    for l2 in (0.01, 0.1):
        out = refit(head, h, ch.y_new, l2, tol=1e-7)
        expected = _softmax_regression(h, ch.y_new, 3, l2 * len(x))
        assert out.counts.hvps > 0 and out.grad_ratio < 1e-3
        centre = lambda t: np.r_[t[:-3], t[-3:] - t[-3:].mean()]  # noqa: E731
        got, expected = centre(out.theta), centre(expected)
        assert np.linalg.norm(got - expected) <= 1e-4 * np.linalg.norm(expected), l2
        assert np.array_equal(head.get(), theta)


def test_head_refit_line_search_never_raises_the_objective():
    """From a start far from the minimiser a full Newton step overshoots, so the line search must halve
    steps; the objective trace never rises, and it ends stationary. Two layers (a non-convex head):
    the gradient of F taken through the whole model vanishes at the result."""
    import tensorflow as tf

    from privstudy.models.tabular import build_tabular_model
    from privstudy.unlearning import influence
    from privstudy.unlearning.neural import Head, penalty_mask, refit

    tf.keras.utils.set_random_seed(2)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    model = build_tabular_model(5, 3, (8,))
    for last in (1, 2):
        head = Head(model, last)
        theta = head.get()
        far = 40.0 * rng.standard_normal(len(theta))
        head.set(far)
        out = refit(head, head.inputs(x), y, 1e-3, tol=1e-4, max_steps=200)
        trace = np.array(out.objective)
        assert out.backtracks > 0 and out.newton_steps > 1
        assert np.all(np.diff(trace) <= 1e-6 * np.abs(trace[:-1])), trace
        assert trace[-1] < 1e-2 * trace[0]
        assert out.converged, out.grad_ratio
        head.set(out.theta)
        logits = tf.keras.Model(model.input, model.get_layer("logits").output)
        g = influence.loss_gradient(logits, head.variables, x, y, from_logits=True)
        g += 1e-3 * len(x) * penalty_mask(head) * out.theta
        head.set(far)
        g_start = influence.loss_gradient(logits, head.variables, x, y, from_logits=True)
        g_start += 1e-3 * len(x) * penalty_mask(head) * far
        assert np.linalg.norm(g) <= 3e-4 * np.linalg.norm(g_start), last
        head.set(theta)
