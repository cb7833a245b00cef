"""The `sisa` trial kind and its analysis: aggregation by hand, the membership check by known answers,
and the check itself on real training: forgotten points must look never-seen after SISA's unlearning
and must still be found when the requested points are left in the model (the negative control)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from privstudy.analysis import sisa as analysis
from privstudy.sisa_runner import SisaConfig, accuracies, ensemble_logits
from privstudy.unlearning.sisa import SisaPlan


def test_stacked_meta_learner_learns_which_shard_to_trust():
    """Shard 0 is always right; shards 1 and 2 always answer (y + 1) mod C. Vote and average follow the
    wrong majority; a meta-learner fitted on a held-out split learns to follow shard 0."""
    rng = np.random.default_rng(0)
    c = 4

    def outputs(y):
        z = np.full((3, len(y), c), -3.0)
        z[0, np.arange(len(y)), y] = 3.0
        for s in (1, 2):
            z[s, np.arange(len(y)), (y + 1) % c] = 3.0
        return z + rng.normal(0, 0.1, z.shape)

    y_meta, y_test = rng.integers(0, c, 200), rng.integers(0, c, 300)
    acc = accuracies(outputs(y_test), y_test, outputs(y_meta), y_meta, np.array([10, 10, 10]), seed=0)
    assert acc["vote"] == 0 and acc["average"] == 0
    assert acc["stacked"] == 1
    # proportional weights: shard 0 three times the size of the others together decides
    acc = accuracies(outputs(y_test), y_test, outputs(y_meta), y_meta, np.array([90, 15, 15]), seed=0)
    assert acc["vote_proportional"] == 1 and acc["average_proportional"] == 1 and acc["vote"] == 0


def test_ensemble_logits_are_the_log_of_the_averaged_probabilities():
    z = np.array([[[0.0, np.log(3.0)]], [[np.log(3.0), 0.0]]])  # probabilities (1/4, 3/4) and (3/4, 1/4)
    out = ensemble_logits(z)
    np.testing.assert_allclose(np.exp(out), [[0.5, 0.5]])


def test_forgetting_aucs_known_answers_and_null():
    """A shift d between Gaussians gives AUC Phi(d / sqrt 2); identical distributions give 0.5 within
    the standard error (n large enough to see a bias of 0.005)."""
    rng = np.random.default_rng(1)
    n = 200_000
    member = np.r_[np.ones(2 * n, bool), np.zeros(n, bool)]
    forgotten = np.r_[np.ones(n, bool), np.zeros(2 * n, bool)]
    scores = np.r_[rng.normal(0, 1, n), rng.normal(1, 1, n), rng.normal(0, 1, n)]
    aucs = analysis.forgetting_aucs(scores, member, forgotten)
    se = np.sqrt((1 / n + 1 / n) / 12)  # AUC standard error under the null, equal sizes
    assert abs(aucs["forgotten"] - 0.5) < 4 * se  # 4 se = 0.0036 < 0.005
    assert aucs["retained"] == pytest.approx(norm.cdf(1 / np.sqrt(2)), abs=0.005)
    none = analysis.forgetting_aucs(scores, member, np.zeros_like(forgotten))
    assert np.isnan(none["forgotten"])


def _study_rows(configs):
    from privstudy.sisa_runner import run

    frames = []
    for cfg in configs:
        rows = run(cfg)["sisa_scores"]
        d = dataclasses.asdict(cfg)
        rows["_model"] = cfg.seed
        rows["_setting"] = json.dumps(
            {k: v for k, v in d.items() if k != "seed"}, sort_keys=True, default=list
        )
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def test_unlearnt_points_look_never_seen_and_the_negative_control_is_caught():
    """8 ensembles (S = 5) over a pool of 1,200 digits, 150 requests each. After SISA's unlearning the
    offline-LiRA AUC of forgotten vs never-seen points is 0.5 within twice its 95% half-width (about 4
    standard errors); leaving the requested points in the model (unlearning none) gives an AUC above 0.5
    with its whole interval, as do the retained points and the forgotten points before unlearning."""
    import tensorflow as tf

    base = dict(
        dataset="digits", pool_size=1200, n_models=8, test_size=297, meta_size=300, shards=5, slices=1,
        epochs=20, requests=150, request_batch=0,
    )  # fmt: skip
    configs = [SisaConfig(seed=m, unlearning=u, **base) for u in ("sisa", "none") for m in range(8)]
    per_target = analysis.membership_rows(_study_rows(configs))
    tf.keras.backend.clear_session()
    per_target["unlearning"] = per_target["_setting"].map(lambda s: json.loads(s)["unlearning"])

    def interval(unlearning, phase, group, attack="lira_offline"):
        g = per_target[
            (per_target.unlearning == unlearning)
            & (per_target.phase == phase)
            & (per_target.attack == attack)
        ]
        from privstudy.stats.intervals import mean_interval

        m, lo, hi, n = mean_interval(g[group].to_numpy(float))
        assert n == 8
        return m, lo, hi

    m, lo, hi = interval("sisa", "after", "forgotten")
    assert abs(m - 0.5) < (hi - lo), (m, lo, hi)
    for args in (
        ("none", "after", "forgotten"),
        ("sisa", "before", "forgotten"),
        ("sisa", "after", "retained"),
    ):
        m, lo, hi = interval(*args)
        assert lo > 0.5, (args, m, lo, hi)
    # the retrained baseline never saw the forgotten points either
    m, lo, hi = interval("sisa", "retrain", "forgotten")
    assert abs(m - 0.5) < (hi - lo), (m, lo, hi)


def test_requests_change_only_their_shards_and_the_cost_matches_the_plan():
    """One trial, requests one by one: every request retrains exactly one shard, its point-epochs are
    the plan's, the monolithic baseline trains on N - K points for e epochs, and storage is S x R
    checkpoints of one model's size."""
    import tensorflow as tf

    from privstudy.sisa_runner import run

    cfg = SisaConfig(
        seed=1,
        pool_size=600,
        n_models=2,
        test_size=200,
        meta_size=100,
        shards=3,
        slices=2,
        epochs=4,
        requests=5,
    )
    out = run(cfg)
    tf.keras.backend.clear_session()
    trial, req = out["sisa_trial"].iloc[0], out["sisa_request"]
    assert len(req) == 5 and (req["n_points"] == 1).all() and (req["shards_retrained"] == 1).all()
    assert set(req["from_stages"]) <= {"0", "1"}
    n = trial["n_train"]  # the keep row: about half of the pool
    assert trial["n_forgotten"] == 5 and abs(n - 300) < 4 * np.sqrt(600 / 4)
    assert trial["retrain_point_epochs"] == (n - 5) * 4
    # e' = 8/3: stages of int(8/3) = 2 and int(16/3) - 2 = 3 epochs; (2 * 1 + 3 * 2) / 2 = e per point
    assert trial["stage_epochs"] == "2,3"
    plan = SisaPlan.build(int(n), 3, 2, 4, seed=cfg.seed)
    assert trial["train_point_epochs"] == sum(2 * len(sh.seen(1)) + 3 * len(sh.seen(2)) for sh in plan.shards)
    assert abs(trial["train_point_epochs"] - 4 * n) <= 3  # within the slices' rounding of e per point
    assert trial["checkpoint_bytes"] == 3 * 2 * trial["model_bytes"]
    scores = out["sisa_scores"]
    assert sorted(scores["phase"].unique()) == ["after", "before", "retrain"]
    assert scores.groupby("phase")["forgotten"].sum().tolist() == [5, 5, 5]
    assert not (scores["forgotten"] & ~scores["member"]).any()
