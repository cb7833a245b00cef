"""The DP audit with canaries: the canaries' construction, the many-run audit's confidence measured on a
mechanism with a known epsilon, the violation check, and real trainings (DP-SGD with huge noise, an
overfitted undefended model) end to end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import run_cli
from privstudy.analysis import common
from privstudy.analysis import mia_train as mia
from privstudy.analysis.dp_audit import violations, write_audit
from privstudy.harness import results
from privstudy.mia.audit import many_run_canary_audit, one_run_audit
from privstudy.mia.canaries import canary_inclusion, canary_labels, canary_scores, default_guesses
from privstudy.mia.keep import keep_matrix
from privstudy.stats.ranks import auc


def test_canary_labels_move_every_canary_to_another_class_uniformly():
    labels = np.repeat(np.arange(10), 2000)
    moved = canary_labels(labels, 10, "mislabelled", seed=3)
    assert (moved != labels).all() and moved.min() >= 0 and moved.max() <= 9
    # The new class is uniform over the 9 others: each (old, new) pair ~ 2000 / 9 = 222 (SE ~ 14).
    counts = pd.crosstab(labels, moved).to_numpy()
    off = counts[~np.eye(10, dtype=bool)]
    assert np.abs(off - 2000 / 9).max() < 5 * math.sqrt(2000 / 9)
    assert np.array_equal(canary_labels(labels, 10, "natural", 3), labels)
    two = np.array([0, 1, 1, 0])
    assert np.array_equal(canary_labels(two, 2, "mislabelled", 0), 1 - two)  # two classes: a flip
    with pytest.raises(ValueError, match="canary type"):
        canary_labels(labels, 10, "noisy", 0)


def test_canary_coins_are_fair_and_independent_across_models():
    n = 40000
    coins = np.stack([canary_inclusion(n, 7, m) for m in range(8)])
    se = math.sqrt(0.25 / n)
    assert np.abs(coins.mean(axis=1) - 0.5).max() < 4 * se
    corr = np.corrcoef(coins.astype(float))[~np.eye(8, dtype=bool)]
    assert np.abs(corr).max() < 4 / math.sqrt(n)
    assert np.array_equal(canary_inclusion(n, 7, 3), coins[3])  # a pure function of (seed, model)


def test_canary_lira_score_has_no_signal_on_scores_without_any():
    """Null: statistics independent of the coins, heavy-tailed; the other models' IN / OUT counts vary
    per canary but say nothing about the target's coin, so the score's AUC is 0.5 within 3 SE."""
    rng = np.random.default_rng(0)
    n, m_models = 20000, 8
    inc = np.stack([canary_inclusion(n, 1, j) for j in range(m_models)])
    stat = rng.standard_t(3, size=(m_models, n)) + rng.exponential(2.0, size=n)  # per-canary offset
    loss = rng.exponential(size=(m_models, n))
    aucs = [auc(canary_scores(stat, loss, inc, t)["lira"], inc[t]) for t in range(m_models)]
    se = math.sqrt((1 / 12) * (1 / (n / 2) + 1 / (n / 2)) / m_models)  # Hanley-McNeil at AUC 0.5, pooled
    assert abs(np.mean(aucs) - 0.5) < 3 * se  # se ~ 0.0014: a bias of 0.005 is visible
    # With a signal (members' statistic shifted by one spread) the score sees it.
    shifted = stat + inc
    assert np.mean([auc(canary_scores(shifted, loss, inc, t)["lira"], inc[t]) for t in range(4)]) > 0.6


def _rr_stats(rng, n_models: int, n_canaries: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Each model's statistic of each canary: its coin, reported truthfully with probability
    e^eps / (1 + e^eps) (randomized response, exactly eps-DP in the coin)."""
    inc = rng.random((n_models, n_canaries)) < 0.5
    truthful = rng.random((n_models, n_canaries)) < 1 / (1 + math.exp(-eps))
    return np.where(truthful, inc, ~inc).astype(float), inc


def test_many_run_canary_audit_holds_its_confidence_on_randomized_response():
    """eps = 2 randomized response, 200 models, 20 canaries: the bound exceeds the true epsilon in at most
    5% of draws (measured over 400 draws; the binomial SE of 5% at 400 is 1.1%)."""
    rng = np.random.default_rng(1)
    draws = [
        many_run_canary_audit(*_rr_stats(rng, 200, 20, 2.0), seed=int(rng.integers(1 << 30)))["eps_lb"]
        for _ in range(400)
    ]
    exceed = np.mean(np.array(draws) > 2.0)
    assert exceed <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 400)
    assert np.median(draws) > 1.0  # and it finds most of the leak


def test_many_run_canary_audit_finds_no_leak_where_there_is_none():
    rng = np.random.default_rng(2)
    stat, inc = rng.normal(size=(200, 50)), rng.random((200, 50)) < 0.5
    out = many_run_canary_audit(stat, inc, delta=1e-5, seed=0)
    assert out["eps_lb"] < 0.3 and out["n_pos"] + out["n_neg"] == 100 and out["n_search"] == 100


def test_one_run_audit_of_canary_scores_holds_on_randomized_response():
    """The one-run audit on eps = 1 randomized-response canaries, scored by the canary LiRA against 7
    other runs: the bound exceeds 1 in at most 5% of 200 draws (SE 1.5%)."""
    rng = np.random.default_rng(3)
    exceed = 0
    for _ in range(200):
        stat, inc = _rr_stats(rng, 8, 1000, 1.0)
        stat = stat + 0.01 * rng.normal(size=stat.shape)  # break ties at random
        scores = canary_scores(stat, np.zeros_like(stat), inc, 0)["lira"]
        exceed += one_run_audit(scores, inc[0], default_guesses(1000), delta=1e-5)["eps_lb"] > 1.0
    assert exceed / 200 <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 200)


def test_violation_check_names_a_bound_above_the_claimed_epsilon():
    row = {"one_run_eps_lb": 2.5, "many_run_eps_lb": 0.1, "eps_rdp_epoch": 3.0, "eps_pld_epoch": 2.0}
    assert violations(row) == "one-run 2.500 > eps_pld_epoch 2.000"
    # A bound above only the Poisson figure is not a violation: training does not sample by Poisson.
    assert violations({"one_run_eps_lb": 2.5, "eps_pld_epoch": 3.0, "eps_pld_poisson": 1.0}) == ""
    # No claim (no DP-SGD): nothing to violate.
    assert violations({"one_run_eps_lb": 2.5, "eps_pld_epoch": float("nan")}) == ""


def test_a_violation_is_reported_loudly(tmp_path):
    setting = {
        "setting": 0,
        "n_models": 4,
        "n_canaries": 10,
        "canary_type": "natural",
        "delta": 1e-5,
        "eps_rdp_epoch": 1.0,
        "eps_pld_epoch": 0.9,
        "eps_rdp_poisson": 0.5,
        "eps_pld_poisson": 0.4,
        "one_run_eps_lb": 1.2,
        "one_run_model": 0,
        "one_run_eps_lb_median_model": 0.5,
        "many_run_eps_lb": 0.0,
        "many_run_counts": "TP 1/1, FP 0/1",
    }
    setting["violation"] = violations(setting)
    files, lines = write_audit(tmp_path, [pd.DataFrame([{"setting": 0, "one_run_eps_lb": 1.2}])], [setting])
    assert any(line.startswith("**DP VIOLATION** in setting 0") for line in lines)
    table = (tmp_path / "tables" / "dp_audit.md").read_text()
    assert "**VIOLATION: one-run 1.200 > eps_rdp_epoch 1.000" in table


BASE = {
    "dataset": "digits",
    "pool_size": 600,
    "arch": "mlp",
    "batch_size": 32,
    "canaries": 600,
    "dp_delta": 1e-5,
    "deterministic": True,
}


def _audit(tmp_path, name: str, n_models: int, **fixed) -> pd.DataFrame:
    fixed = {**BASE, "n_models": n_models, **fixed}
    spec = {"name": name, "kind": "mia_train", "fixed": fixed, "seeds": n_models}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    args = ("--results", str(tmp_path), "--no-progress", "--executor", "inline")
    assert run_cli("sweep", str(path), *args) == 0
    mia.build(common.load_study(tmp_path / name), tmp_path / name, attacks=["loss"])
    return pd.read_csv(tmp_path / name / "tables" / "dp_audit.csv")


def test_audit_of_an_overfitted_undefended_model_is_clearly_above_zero(tmp_path):
    """Mislabelled canaries are learnt only by memorising them: an undefended MLP trained to fit them
    gives a one-run bound well above 0 (at most ~3 is reachable with 600 canaries at delta 1e-5)."""
    audit = _audit(tmp_path, "plain", 2, epochs=40)
    assert audit["one_run_eps_lb"].iloc[0] > 1.0
    scores = results.read_table(tmp_path / "plain", "mia_scores")
    can = scores[scores["source"] == "canary"]
    assert len(can) == 2 * 600 and set(can["is_member"]) == {True, False}
    models = results.read_table(tmp_path / "plain", "mia_model")
    pool_in = keep_matrix(2, 600, 0).sum(axis=1)[models["model_index"]]
    assert (models["n_train"] == models["n_canaries_in"] + pool_in).all()  # pool half + its canaries


def test_audit_of_dp_sgd_with_huge_noise_is_near_zero(tmp_path):
    audit = _audit(tmp_path, "noisy", 2, epochs=3, dp_noise_multiplier=50.0)
    row = audit.iloc[0]
    assert row["one_run_eps_lb"] <= row["eps_pld_epoch"] < 0.5
    assert not isinstance(row["violation"], str) or row["violation"] == ""


def test_settings_that_differ_in_n_models_are_tabled(tmp_path):
    """Settings with 2 and 4 models: the model count is a setting coordinate and a count at once, and
    online LiRA runs on only one of them (it needs 4); every table is still written."""
    fixed = {**BASE, "pool_size": 200, "canaries": 60, "epochs": 2}
    spec = {
        "name": "mixed",
        "experiments": [
            {"kind": "mia_train", "fixed": {**fixed, "n_models": 2}, "seeds": 2},
            {"kind": "mia_train", "fixed": {**fixed, "n_models": 4}, "seeds": 4},
        ],
    }
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(spec))
    args = ("--results", str(tmp_path), "--no-progress", "--executor", "inline")
    assert run_cli("sweep", str(path), *args) == 0
    assert run_cli("attack", str(tmp_path / "mixed"), "--attacks", "loss,lira_online") == 0
    utility = pd.read_csv(tmp_path / "mixed" / "tables" / "privacy_utility.csv")
    assert sorted(zip(utility["n_models"], utility["models_done"])) == [(2, 2), (4, 4)]
    audit = pd.read_csv(tmp_path / "mixed" / "tables" / "dp_audit.csv")
    assert sorted(audit["n_models"]) == [2, 4] and audit["many_run_eps_lb"].isna().sum() == 1
