"""Attacks, metrics, scores and the keep matrix on cases whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from privstudy.mia.attacks import ATTACKS, ScoreSet, available_attacks, run_attack
from privstudy.mia.keep import keep_matrix, pool_indices
from privstudy.mia.metrics import attack_metrics, roc_curve
from privstudy.mia.scores import example_scores
from privstudy.stats.ranks import spearman


def test_six_point_threshold_attack_auc():
    """TensorFlow Privacy's published case: a loss-threshold AUC of 0.83 (30 of 36 pairs)."""
    members = np.array([0.1, 0.2, 1.3, 0.4, 0.5, 0.6])
    nonmembers = np.array([1.1, 1.2, 1.3, 0.4, 1.5, 1.6])
    loss = np.r_[members, nonmembers]
    is_member = np.r_[np.ones(6, bool), np.zeros(6, bool)]
    m = attack_metrics(-loss, is_member)
    assert m["auc"] == pytest.approx(30 / 36)
    assert round(m["auc"], 2) == 0.83


def test_roc_by_hand_with_ties():
    fpr, tpr, thr = roc_curve(np.array([3.0, 2.0, 2.0, 1.0]), np.array([1, 0, 1, 0], bool))
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert thr.tolist() == [np.inf, 3.0, 2.0, 1.0]


def test_perfect_separation():
    rng = np.random.default_rng(0)
    s = np.r_[rng.uniform(2, 3, 500), rng.uniform(0, 1, 500)]
    m = attack_metrics(s, np.r_[np.ones(500, bool), np.zeros(500, bool)])
    assert m["auc"] == 1.0 and m["advantage"] == 1.0 and m["balanced_accuracy"] == 1.0
    for tag in ("0.1pct", "1pct", "10pct"):
        assert m[f"tpr_at_fpr_{tag}"] == 1.0 and m[f"ppv_at_fpr_{tag}"] == 1.0
    assert "eps_lb" not in m, "a per-model epsilon bound over its examples claims a confidence it lacks"


def test_identical_distributions_give_auc_one_half():
    """AUC of two samples of 20,000 from one distribution: sd ~ 0.0029; tolerance 0.015 (5 sd)."""
    rng = np.random.default_rng(1)
    s = rng.normal(size=40000)
    m = attack_metrics(s, np.r_[np.ones(20000, bool), np.zeros(20000, bool)])
    assert abs(m["auc"] - 0.5) < 0.015
    assert m["advantage"] < 0.03


def test_advantage_is_max_tpr_minus_fpr_not_its_absolute_value():
    # An attack that is reliably wrong: TensorFlow Privacy's max |TPR - FPR| would give 1, ours gives 0.
    m = attack_metrics(np.r_[np.zeros(10), np.ones(10)], np.r_[np.ones(10, bool), np.zeros(10, bool)])
    assert m["advantage"] == 0.0 and m["auc"] == 0.0


def test_low_fpr_needs_enough_nonmembers_to_resolve():
    from privstudy.mia.metrics import resolves

    assert not resolves(900, 0.001) and resolves(10000, 0.001) and resolves(1000, 0.01)


def test_example_scores_match_the_definitions_and_stay_finite():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [100.0, 0.0, 0.0]])
    y = np.array([0, 2, 0])
    s = example_scores(logits, y)
    p = np.exp(logits[:2]) / np.exp(logits[:2]).sum(1, keepdims=True)
    py = p[[0, 1], y[:2]]
    assert s["p_true"][:2] == pytest.approx(py)
    assert s["loss"][:2] == pytest.approx(-np.log(py))
    assert s["lira"][:2] == pytest.approx(np.log(py) - np.log(1 - py))
    assert s["entropy"][:2] == pytest.approx(-(p * np.log(p)).sum(1))
    mentr = [
        -(1 - py[i]) * np.log(py[i]) - sum(p[i, j] * np.log(1 - p[i, j]) for j in range(3) if j != y[i])
        for i in range(2)
    ]
    assert s["mentr"][:2] == pytest.approx(mentr)
    # p_y rounds to 1: the statistic is still exact in logit space, 100 - log 2.
    assert s["lira"][2] == pytest.approx(100 - np.log(2))
    assert s["correct"].tolist() == [True, False, True]


def test_keep_matrix_halves_and_is_reproducible():
    k = keep_matrix(16, 1000, seed=7)
    assert k.shape == (16, 1000) and (k.sum(axis=0) == 8).all()
    assert np.array_equal(k, keep_matrix(16, 1000, seed=7))
    assert not np.array_equal(k, keep_matrix(16, 1000, seed=8))
    assert abs(k.sum(axis=1).mean() - 500) < 1e-9 and k.sum(axis=1).min() > 400
    with pytest.raises(ValueError, match="even"):
        keep_matrix(3, 10, 0)
    idx = pool_indices(100, 10, 0)
    assert len(set(idx)) == 10 and np.array_equal(idx, pool_indices(100, 10, 0))


def _synthetic(m=16, n=2000, seed=0, signal=True):
    """Per-example Gaussian statistics: IN ~ N(mu_in_i, sd), OUT ~ N(mu_out_i, sd)."""
    rng = np.random.default_rng(seed)
    keep = keep_matrix(m, n, seed)
    mu_out = rng.normal(1.5, 1.5, n)
    mu_in = mu_out + (rng.uniform(0.5, 2.5, n) if signal else 0)
    sd = 0.7
    stat = np.where(keep, mu_in, mu_out) + rng.normal(0, sd, (m, n))
    # A binary task whose logits (0, stat) make the LiRA statistic exactly `stat`.
    data = ScoreSet.from_logits(keep, np.stack([np.zeros((m, n)), stat], axis=2), np.ones(n, int))
    np.testing.assert_allclose(data.views[..., 0], stat, rtol=1e-9, atol=1e-9)
    return data, mu_in, mu_out, sd


def test_lira_recovers_the_likelihood_ratio_of_synthetic_gaussians():
    data, mu_in, mu_out, sd = _synthetic(m=32)
    target = 0
    x = data.views[target, :, 0]
    oracle = norm.logpdf(x, mu_in, sd) - norm.logpdf(x, mu_out, sd)
    truth = data.keep[target]
    lira = run_attack("lira_online", data, target)
    assert spearman(lira, oracle) > 0.85
    a_oracle = attack_metrics(oracle, truth)["auc"]
    a_lira = attack_metrics(lira, truth)["auc"]
    a_fixed = attack_metrics(run_attack("lira_online_fixed", data, target), truth)["auc"]
    a_loss = attack_metrics(run_attack("loss", data, target), truth)["auc"]
    assert a_lira > a_oracle - 0.03 and a_fixed > a_oracle - 0.03
    assert a_lira > a_loss + 0.1, "per-example calibration beats the global threshold"
    assert attack_metrics(run_attack("lira_offline", data, target), truth)["auc"] > a_loss + 0.05


def _null_scores(m: int, n: int, seed: int) -> ScoreSet:
    """M models' scores of N examples with no membership signal, skewed and heteroscedastic per example.

    The binary logit of model j on example i is mu_i - s_i * L, L ~ LogNormal(0, 1): heavy-tailed noise
    (the loss is right-skewed, as real losses are), independent of the keep matrix, so every attack's
    true AUC is exactly 0.5.
    """
    rng = np.random.default_rng(seed)
    keep = keep_matrix(m, n, seed)
    mu, s = rng.normal(2.0, 2.0, n), rng.lognormal(-0.5, 0.7, n)
    z = mu - s * rng.lognormal(0.0, 1.0, (m, n))
    return ScoreSet.from_logits(keep, np.stack([np.zeros((m, n)), z], axis=2), np.ones(n, int))


def _null_se(n_pos: int, n_neg: int) -> float:
    """Standard error of the AUC of two identical continuous distributions (Mann-Whitney U)."""
    return float(np.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg)))


@pytest.mark.parametrize("m", [4, 8])
def test_every_attack_scores_one_half_on_a_null_study(m):
    """Pooled over every target (M x 20,000 scores), each attack's AUC is within 3 standard errors of 0.5:
    3 SE = 0.0043 at M = 8, 0.0061 at M = 4. Before the shadow counts were balanced these scores gave
    reference 0.5135 and lira_offset 0.5074 at M = 8, and this test failed."""
    n = 20000
    data = _null_scores(m, n, seed=10 + m)
    for name in available_attacks(data):
        targets = range(2 if name == "shadow" else m)  # the shadow attack trains a classifier per target
        scores = np.concatenate([run_attack(name, data, t) for t in targets])
        truth = np.concatenate([data.keep[t] for t in targets])
        auc = attack_metrics(scores, truth)["auc"]
        se = _null_se(int(truth.sum()), int((~truth).sum()))
        assert abs(auc - 0.5) < 3 * se, (name, auc, se)


def test_every_attack_detects_strong_membership_signal():
    data, *_ = _synthetic(m=8, n=1500, seed=4)
    for name in ATTACKS:
        auc = attack_metrics(run_attack(name, data, 1), data.keep[1])["auc"]
        assert auc > 0.6, (name, auc)


def test_online_lira_needs_four_models():
    data, *_ = _synthetic(m=2, n=50)
    assert "lira_online" not in available_attacks(data)
    with pytest.raises(ValueError, match="n_models >= 4"):
        run_attack("lira_online", data, 0)


def test_shadow_attack_never_scores_an_example_with_a_classifier_trained_on_it():
    """Changing the shadows' outputs on the examples of one fold leaves those examples' scores unchanged
    (their classifiers learnt from the other fold only), and changes the other fold's."""
    from privstudy.mia.attacks import shadow, shadow_folds

    data, *_ = _synthetic(m=8, n=600, seed=5)
    fold = shadow_folds(600)
    assert abs(fold.mean() - 0.5) < 0.01
    before = shadow(data, 0)
    probs = data.probs.copy()
    rng = np.random.default_rng(1)
    probs[1:, fold == 0] = rng.dirichlet(np.ones(probs.shape[-1]), (7, int((fold == 0).sum())))
    after = shadow(ScoreSet(**{**data.__dict__, "probs": probs}), 0)
    np.testing.assert_array_equal(after[fold == 0], before[fold == 0])
    assert not np.allclose(after[fold == 1], before[fold == 1])
