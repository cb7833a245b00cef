"""Membership-inference model trials on built-in digits, end to end: sweep, shards, attacks, tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, run_cli
from privstudy.analysis import common
from privstudy.analysis import mia_train as mia
from privstudy.harness import results
from privstudy.harness.config import from_mapping
from privstudy.mia.keep import keep_matrix
from privstudy.mia_runner import MiaTrainConfig, training_mask

BASE = {"dataset": "digits", "pool_size": 1000, "n_models": 4, "arch": "mlp", "epochs": 25, "batch_size": 32}


def _study(tmp_path, name: str, **fixed) -> tuple[int, object]:
    spec = {"name": name, "kind": "mia_train", "fixed": {**BASE, **fixed}, "seeds": fixed.get("n_models", 4)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    code = run_cli("sweep", str(path), "--results", str(tmp_path), "--no-progress", "--executor", "inline")
    return code, tmp_path / name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real study (4 MLPs on digits) and one whose models never saw their recorded members."""
    tmp = tmp_path_factory.mktemp("mia")
    code, real = _study(tmp, "real")
    assert code == 0
    code, null = _study(tmp, "null", null_membership=True, n_models=6)
    assert code == 0
    return real, null


def _risk(study_dir):
    mia.build(common.load_study(study_dir), study_dir)
    return pd.read_csv(study_dir / "tables" / "mia_risk.csv").set_index("attack")


def test_scores_follow_the_keep_matrix(trained):
    real, _ = trained
    scores = results.read_table(real, "mia_scores")
    keep = keep_matrix(4, 1000, 0)
    for m in range(4):
        rows = scores[scores["model_index"] == m].sort_values("example_id")
        assert len(rows) == 1000 and rows["example_id"].tolist() == list(range(1000))
        assert np.array_equal(rows["is_member"].to_numpy(), keep[m])
        assert rows["probs"].map(len).eq(10).all()
        assert np.allclose(rows["p_true"], [p[y] for p, y in zip(rows["probs"], rows["label"])], atol=1e-6)
    models = results.read_table(real, "mia_model")
    assert (models["train_accuracy"] > 0.95).all() and (models["test_accuracy"] > 0.85).all()


def test_attacks_see_membership_in_trained_models(trained):
    real, _ = trained
    risk = _risk(real)
    assert set(risk.index) >= {"loss", "shadow", "lira_online", "lira_offline", "reference", "rmia"}
    # Measured at this size: reference ~0.65, rmia ~0.67, loss ~0.56 (4 models, 500 members each).
    assert risk.loc["reference", "auc_mean"] > 0.58
    assert risk.loc["rmia", "auc_mean"] > 0.58
    assert risk.loc["loss", "auc_mean"] > 0.52


def test_null_study_gives_every_attack_auc_near_one_half(trained):
    """6 models that never trained on their "members": AUC sd per target ~0.018 (500 vs 500); allow 0.07."""
    _, null = trained
    cfg = from_mapping(MiaTrainConfig, {**BASE, "null_membership": True, "seed": 1})
    recorded, used = training_mask(cfg)
    assert abs((recorded == used).mean() - 0.5) < 0.1, "the null model's training set is unrelated"
    risk = _risk(null)
    for attack, row in risk.iterrows():
        assert abs(row["auc_mean"] - 0.5) < 0.07, (attack, row["auc_mean"])


def test_aggregate_writes_the_mia_report(trained):
    real, _ = trained
    assert run_cli("aggregate", str(real)) == 0
    report = (real / "report.md").read_text()
    assert "Membership inference (4 model trials" in report and "lira_online" in report
    for name in ("mia_risk.md", "mia_models.md", "mia_attack_per_target.csv"):
        assert (real / "tables" / name).is_file()
    assert (real / "figures" / "mia_roc_setting0.png").stat().st_size > 10000


def test_attack_command_rejects_unknown_attacks(trained, capsys):
    real, _ = trained
    assert run_cli("attack", str(real), "--attacks", "loss,lira") == 2
    assert "unknown attack(s) lira" in capsys.readouterr().err
    assert run_cli("attack", str(real), "--attacks", "loss", "--max-targets", "2") == 0
    per_target = pd.read_csv(real / "tables" / "mia_attack_per_target.csv")
    assert per_target["attack"].unique().tolist() == ["loss"] and per_target["target"].tolist() == [0, 1]


def test_seed_must_be_a_model_index(write_spec, capsys, tmp_path):
    spec = {"name": "x", "kind": "mia_train", "fixed": {**BASE}, "seeds": 5}
    assert run_cli("sweep", str(write_spec(spec)), "--results", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err
    assert "seed: is the model index and must be below n_models=4, got 4; use `seeds: 4`" in err


def test_the_shipped_mia_specs_validate(capsys, tmp_path):
    for spec in ("mia_digits.yaml", "mia_cifar10.yaml"):
        for smoke in ([], ["--smoke"]):
            assert (
                run_cli("sweep", str(ROOT / "jobs" / spec), "--dry-run", "--results", str(tmp_path), *smoke)
                == 0
            )


def test_external_examples_are_scored_and_compared(tmp_path):
    """External examples (never trained on) get rows of their own and a members-vs-externals table."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(300, 8, 8, 1), dtype=np.uint8)  # same shape as digits, another source
    np.savez(
        tmp_path / "cifar100.npz",
        x_train=noise[:200],
        y_train=np.zeros(200),
        x_test=noise[200:],
        y_test=np.zeros(100),
    )
    code, study = _study(
        tmp_path,
        "ext",
        pool_size=400,
        epochs=10,
        external_dataset="cifar100",
        external_size=150,
        data_dir=str(tmp_path),
    )
    assert code == 0
    scores = results.read_table(study, "mia_scores")
    ext = scores[scores["source"] == "external"]
    assert len(ext) == 4 * 150 and not ext["is_member"].any()
    mia.build(common.load_study(study), study)
    table = pd.read_csv(study / "tables" / "mia_external.csv").set_index("attack")
    # Noise images are far from digits: the models are far less confident on them than on members.
    assert table.loc["confidence", "auc_members_vs_external"] > 0.9


def test_stored_attack_units_equal_the_attacks_on_the_whole_score_table(trained):
    """The attack stage's per-target metrics (read model by model, shared statistics, stored units) equal
    every attack run the direct way: the whole mia_scores table read at once, attacks.run_attack per
    target, the metrics computed here."""
    from threadpoolctl import threadpool_limits

    from privstudy.mia.attacks import ScoreSet, available_attacks, run_attack
    from privstudy.mia.metrics import attack_metrics

    for study_dir, m in zip(trained, (4, 6)):
        mia.build(common.load_study(study_dir), study_dir)
        got = pd.read_csv(study_dir / "tables" / "mia_attack_per_target.csv").set_index(["attack", "target"])
        rows = results.read_table(study_dir, "mia_scores")
        pool = rows[rows["source"] == "pool"].sort_values(["model_index", "example_id"])

        def mat(col, pool=pool, m=m):
            return pool[col].to_numpy(float).reshape(m, -1)

        data = ScoreSet(
            keep=pool["is_member"].to_numpy(bool).reshape(m, -1),
            labels=pool["label"].to_numpy()[:1000],
            loss=mat("loss"),
            p_true=mat("p_true"),
            entropy=mat("entropy"),
            mentr=mat("mentr"),
            views=np.stack(pool["lira_views"].to_numpy()).reshape(m, 1000, -1),
            probs=np.stack(pool["probs"].to_numpy()).reshape(m, 1000, -1).astype(np.float64),
        )
        names = available_attacks(data)
        assert sorted(set(got.index.get_level_values("attack"))) == sorted(names)
        for name in names:
            for t in range(min(m, 8)):
                with threadpool_limits(limits=1):  # gradient boosting's OpenMP threads spin on busy cores
                    want = attack_metrics(run_attack(name, data, t), data.keep[t])
                for col in ("auc", "tpr_at_fpr_1pct", "advantage"):  # the CSV holds 10 significant digits
                    assert got.loc[(name, t), col] == pytest.approx(want[col], abs=1e-9), (
                        study_dir,
                        name,
                        t,
                    )
