"""The attack stage: shared per-setting statistics equal the per-target computation; units are stored,
resumed and extended without recomputation; results equal a direct computation on a seeded study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from conftest import ROOT, run_cli
from privstudy.harness import attack_stage as stage
from privstudy.mia.attacks import ATTACKS, ScoreSet, run_attack
from privstudy.mia.keep import keep_matrix
from privstudy.mia.metrics import attack_metrics
from privstudy.mia.scores import example_scores
from privstudy.mia.shared import FAST, SharedStats, removed_slots
from privstudy.mia.synthetic import example_logits, write_study


def _random_set(rng, keep, ties=False) -> ScoreSet:
    m, n = keep.shape
    views = rng.normal(size=(m, n, 2)) * rng.uniform(0.2, 3, size=(1, n, 1)) + keep[..., None]
    if ties:  # rounded released scores: many shadows share a value, some examples have no spread
        views = np.round(views)
        views[:, : n // 10] = 1.0
    loss = rng.exponential(size=(m, n))
    return ScoreSet(
        keep=keep,
        labels=rng.integers(0, 3, n),
        loss=loss,
        p_true=rng.random((m, n)),
        entropy=loss,
        mentr=loss,
        views=views,
    )


def _keeps():
    rng = np.random.default_rng(1)
    full16 = keep_matrix(16, 700, 3)
    yield "complete M=8", keep_matrix(8, 500, 1)
    yield "complete M=16", full16
    yield "11 of 16 models done", full16[[0, 1, 2, 3, 5, 7, 8, 9, 12, 13, 15]]
    yield "M=6", keep_matrix(6, 400, 2)
    yield "independent coins, M=12", rng.random((12, 400)) < 0.5


@pytest.mark.parametrize("ties", [False, True])
# Keep matrices with no spread to estimate (M = 6, independent coins) send the per-target code down its
# all-NaN branch, which numpy reports; those cases are compared like the others.
@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_shared_statistics_give_the_per_target_attacks_scores_and_metrics(ties):
    """Every fast attack, every target: the same scores, bit for bit (the same additions in the same
    order), so the metrics agree exactly, ties included (rounded scores tie often)."""
    rng = np.random.default_rng(7)
    for label, keep in _keeps():
        data = _random_set(rng, keep, ties)
        shared = SharedStats(data)
        for t in range(keep.shape[0]):
            for name in sorted(FAST):
                fast, slow = shared.run(name, t), run_attack(name, data, t)
                np.testing.assert_array_equal(fast, slow, err_msg=f"{label} {name} {t}")
                a, b = attack_metrics(fast, keep[t]), attack_metrics(slow, keep[t])
                for k in ("auc", "tpr_at_fpr_1pct", "advantage"):
                    assert a[k] == b[k], (label, name, t, k, a[k], b[k])


def test_removed_slots_by_hand():
    """Keep matrix (models x examples) of 4 models, 2 examples; OUT side of example 0 is models
    {1, 2, 3}, of example 1 models {0, 2}. c = 2, candidates: (1, 2, 3) and (0, 2).
    Target 2: k = min(3 - 1, 2 - 1) = 1: example 0 drops model 2 and the last remaining (3), keeping 1;
    example 1 drops model 2, keeping 0. Target 1: k = min(3 - 1, 2) = 2: example 0 drops model 1,
    keeps (2, 3); example 1 drops nothing."""
    keep = np.array([[True, False], [False, True], [False, False], [False, True]])
    side = SharedStats(
        ScoreSet(
            keep=keep,
            labels=np.zeros(2),
            loss=np.zeros((4, 2)),
            p_true=np.zeros((4, 2)),
            entropy=np.zeros((4, 2)),
            mentr=np.zeros((4, 2)),
            views=np.zeros((4, 2, 1)),
        ),
        (),
    ).sides["out"]
    assert side.models.tolist() == [[1, 2, 3], [0, 2, -1]]
    removed, k = removed_slots(side, 2)
    assert k == 1 and removed.tolist() == [[1, 2], [1, -1]]
    removed, k = removed_slots(side, 1)
    assert k == 2 and removed.tolist() == [[0, -1], [-1, -1]]


def test_shadow_attack_is_unchanged_by_building_features_for_sampled_rows_only():
    """The shadow attack's classifier inputs, built the old way (log of every probability, then the
    sampled rows), give the same scores as the new one (the sampled rows only)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from privstudy.mia.attacks import shadow, shadow_folds

    m, n = 8, 600
    keep = keep_matrix(m, n, 0)
    labels, logits = example_logits(m, n, keep, 4, 1, 0.8, seed=3)
    sets = [example_scores(logits[j, 0], labels) for j in range(m)]
    data = ScoreSet.from_logits(keep, logits[:, 0], labels)
    data = ScoreSet(**{**data.__dict__, "probs": np.stack([s["probs"] for s in sets]).astype(np.float32)})
    target, seed, cap = 3, 0, 500
    # The computation as it was written before (every row's features, then the sample):
    rng = np.random.default_rng(seed)
    feats = np.log(np.clip(data.probs.astype(np.float64), 1e-30, 1.0))
    shadows = np.flatnonzero(np.arange(m) != target)
    kp = keep[shadows]
    k = int(min(kp.sum(axis=0).min(), (~kp).sum(axis=0).min()))
    use = (kp & (np.cumsum(kp, axis=0) <= k)) | (~kp & (np.cumsum(~kp, axis=0) <= k))
    fold = shadow_folds(n, seed)
    expected = np.zeros(n)
    for c in np.unique(labels):
        for f in (0, 1):
            tr = np.flatnonzero((labels == c) & (fold != f))
            te = np.flatnonzero((labels == c) & (fold == f))
            rows = use[:, tr].reshape(-1)
            x = feats[shadows][:, tr].reshape(-1, feats.shape[-1])[rows]
            y = kp[:, tr].reshape(-1)[rows]
            if len(x) > cap:
                pick = rng.choice(len(x), cap, replace=False)
                x, y = x[pick], y[pick]
            clf = HistGradientBoostingClassifier(max_iter=50, random_state=seed).fit(x, y)
            expected[te] = clf.predict_proba(feats[target, te])[:, 1]
    np.testing.assert_array_equal(shadow(data, target, seed, max_rows_per_class=cap), expected)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return write_study(tmp_path_factory.mktemp("syn"), "syn", n_models=8, pool_size=900, shift=0.6, seed=5)


def test_stage_tables_equal_a_direct_computation_from_the_generator(synthetic, tmp_path):
    """Per-target metrics and pooled AUCs from the stored units equal attacks.run_attack on scores built
    straight from the generator's logits (not read back from the shards)."""
    study = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(synthetic), str(study)], check=True)
    assert run_cli("attack", str(study), "--executor", "inline") == 0
    got = pd.read_csv(study / "tables" / "mia_attack_per_target.csv").set_index(["attack", "target"])
    m, n = 8, 900
    keep = keep_matrix(m, n, 0)
    labels, logits = example_logits(m, n, keep, 10, 2, 0.6, seed=5)
    base = ScoreSet.from_logits(keep, logits[:, 0], labels)
    views = np.stack([[example_scores(logits[j, v], labels)["lira"] for v in range(2)] for j in range(m)])
    data = ScoreSet(
        **{**base.__dict__, "views": views.transpose(0, 2, 1), "probs": base.probs.astype(np.float32)}
    )
    assert set(got.index.get_level_values("attack")) == set(ATTACKS)
    pooled = pd.read_csv(study / "tables" / "mia_risk.csv").set_index("attack")
    for name in ATTACKS:
        targets = range(8 if name != "shadow" else stage.SHADOW_TARGETS)
        with threadpool_limits(limits=1):  # gradient boosting's OpenMP threads spin on busy cores
            scores = [run_attack(name, data, t) for t in targets]
        for t in targets:
            want = attack_metrics(scores[t], keep[t])
            for col in ("auc", "tpr_at_fpr_1pct", "balanced_accuracy"):
                assert abs(got.loc[(name, t), col] - want[col]) < 1e-9, (name, t, col)
        want_pooled = attack_metrics(np.concatenate(scores), np.concatenate([keep[t] for t in targets]))[
            "auc"
        ]
        assert abs(pooled.loc[name, "pooled_auc"] - want_pooled) < 1e-9, name


def _units(study: Path) -> dict[str, float]:
    folder = study / stage.UNITS_DIR
    return {p.stem: p.stat().st_mtime_ns for p in folder.glob("*.parquet")} if folder.is_dir() else {}


def test_one_more_attack_computes_only_that_attack(synthetic, tmp_path, capsys):
    study = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(synthetic), str(study)], check=True)
    assert run_cli("attack", str(study), "--attacks", "loss,lira_online", "--executor", "inline") == 0
    assert "attack units: 16; computed now: 16" in capsys.readouterr().out
    before = _units(study)
    assert run_cli("attack", str(study), "--attacks", "loss,lira_online,rmia", "--executor", "inline") == 0
    assert "attack units: 24; computed now: 8; stored before: 16" in capsys.readouterr().out
    after = _units(study)
    assert len(after) == 24 and all(after[u] == t for u, t in before.items())  # none rewritten
    per_target = pd.read_csv(study / "tables" / "mia_attack_per_target.csv")
    assert sorted(per_target["attack"].unique()) == ["lira_online", "loss", "rmia"]
    # Nothing left to do: a rerun computes nothing and the tables are the same.
    assert run_cli("attack", str(study), "--attacks", "loss,lira_online,rmia") == 0
    assert "computed now: 0" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(study / "tables" / "mia_attack_per_target.csv"), per_target)


def test_a_killed_attack_stage_resumes_without_recomputing_finished_units(tmp_path):
    study = write_study(tmp_path, "big", n_models=16, pool_size=4000, seed=1)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, "-m", "privstudy", "attack", str(study), "--executor", "inline"]
    cmd += ["--attacks", "loss,lira_online,lira_offline,reference,rmia"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(_units(study)) < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _units(study)
    assert 10 <= len(done_before) < 80, len(done_before)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"attack units: 80; computed now: {80 - len(done_before)};" in out.stdout
    after = _units(study)
    assert len(after) == 80 and all(after[u] == t for u, t in done_before.items())


def test_unit_ids_follow_their_inputs():
    base = stage.unit_id(["a", "b"], "rmia", 0, 0.3, 0)
    assert base == stage.unit_id(["a", "b"], "rmia", 0, 0.3, 7)  # the seed is the shadow attack's only
    assert base != stage.unit_id(["a", "b", "c"], "rmia", 0, 0.3, 0)  # one more model: new shadows
    assert base != stage.unit_id(["a", "b"], "rmia", 1, 0.3, 0)
    assert base != stage.unit_id(["a", "b"], "rmia", 0, 0.5, 0)
    assert stage.unit_id(["a"], "shadow", 0, 0.3, 0) != stage.unit_id(["a"], "shadow", 0, 0.3, 1)


def test_local_workers_give_the_same_tables_as_inline(synthetic, tmp_path):
    tables = []
    for executor in ("inline", "local"):
        study = tmp_path / executor
        subprocess.run(["cp", "-r", str(synthetic), str(study)], check=True)
        args = ["attack", str(study), "--executor", executor, "--attacks", "loss,lira_offline,shadow"]
        assert run_cli(*args, *(["--workers", "2"] if executor == "local" else [])) == 0
        tables.append(pd.read_csv(study / "tables" / "mia_attack_per_target.csv"))
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_a_shard_missing_pool_rows_fails_in_one_line_and_stores_nothing(tmp_path, capsys):
    """A score shard whose pool rows are not all there (here 100 of them relabelled as another source, so
    the record's row count still holds): one line naming the shard and the fix, exit 2, no unit stored."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from privstudy.harness import results

    study = write_study(tmp_path, "cut", n_models=4, pool_size=300, seed=3)
    shard = sorted((study / results.SHARDS_DIR / "mia_scores").glob("*.parquet"))[1]
    table = pq.read_table(shard)
    source = pa.array(["pool"] * 200 + ["external"] * 100)
    pq.write_table(table.set_column(table.schema.get_field_index("source"), "source", source), shard)
    assert run_cli("attack", str(study), "--executor", "inline", "--attacks", "loss", "--no-progress") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "incomplete" in err and shard.name in err, err
    assert not _units(study)


def test_the_shadow_attack_runs_on_its_capped_targets_only(tmp_path, capsys):
    """12 models: the loss attack has 12 target units, the shadow attack SHADOW_TARGETS (8); nothing
    else is computed or stored."""
    study = write_study(tmp_path, "cap", n_models=12, pool_size=300, seed=4)
    args = ["attack", str(study), "--attacks", "loss,shadow", "--workers", "2", "--no-progress"]
    assert run_cli(*args) == 0
    assert "attack units: 20; computed now: 20" in capsys.readouterr().out
    units = pd.concat([pd.read_parquet(p) for p in (study / stage.UNITS_DIR).glob("*.parquet")])
    assert units.groupby("attack")["target"].apply(sorted).to_dict() == {
        "loss": list(range(12)),
        "shadow": list(range(stage.SHADOW_TARGETS)),
    }
