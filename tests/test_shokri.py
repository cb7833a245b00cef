"""Tabular benchmarks, attacker knowledge (shadow data) and the shadow-model attack of kind shokri."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from scipy.special import softmax

from conftest import SHARED_DATA
from privstudy.data import tabular
from privstudy.data.locate import DataMissing
from privstudy.defences.release import released_probs
from privstudy.harness.config import ConfigError, from_mapping
from privstudy.mia import shokri
from privstudy.stats.ranks import auc


def _csv_rows(y, x, quote=False):
    lab = [f'"{v}"' if quote else str(v) for v in y]
    return "".join(f"{a}," + ",".join(map(str, r)) + "\n" for a, r in zip(lab, x))


def _tgz(path, files: dict[str, str]):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def records():
    rng = np.random.default_rng(0)
    return rng.integers(1, 31, 40), rng.integers(0, 2, (40, 446))


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    tabular._load_cached.cache_clear()
    monkeypatch.delenv("PRIVSTUDY_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", "/nonexistent-keras-home")
    yield
    tabular._load_cached.cache_clear()


@pytest.mark.parametrize("packed", [False, True])
def test_location_reads_the_quoted_label_csv_and_its_tgz(tmp_path, records, packed):
    y, x = records
    text = _csv_rows(y, x, quote=True)
    if packed:
        _tgz(tmp_path / "dataset_location.tgz", {"bangkok": text})
    else:
        (tmp_path / "bangkok").write_text(text)
    d = tabular.load_tabular("location30", str(tmp_path))
    assert d.x.shape == (40, 446) and d.x.dtype == np.uint8 and d.binary
    np.testing.assert_array_equal(d.x, x)
    np.testing.assert_array_equal(d.y, y - 1)  # 1-based labels in the file, 0-based in memory
    assert d.n_classes == 30


@pytest.mark.parametrize("packed", [False, True])
def test_purchase_reads_label_then_600_features(tmp_path, packed):
    rng = np.random.default_rng(1)
    y, x = rng.integers(1, 101, 25), rng.integers(0, 2, (25, 600))
    text = _csv_rows(y, x)
    if packed:
        _tgz(tmp_path / "dataset_purchase.tgz", {"dataset_purchase": text})
    else:
        (tmp_path / "dataset_purchase").write_text(text)
    d = tabular.load_tabular("purchase100", str(tmp_path))
    np.testing.assert_array_equal(d.x, x)
    np.testing.assert_array_equal(d.y, y - 1)
    assert d.n_classes == 100


@pytest.mark.parametrize("packed", [False, True])
def test_texas_reads_feats_and_labels(tmp_path, packed):
    rng = np.random.default_rng(2)
    y, x = rng.integers(1, 101, 12), rng.integers(0, 2, (12, 30))
    feats = "".join(",".join(map(str, r)) + "\n" for r in x)
    labels = "".join(f"{v}\n" for v in y)
    if packed:
        _tgz(tmp_path / "dataset_texas.tgz", {"texas/100/feats": feats, "texas/100/labels": labels})
    else:
        (tmp_path / "texas" / "100").mkdir(parents=True)
        (tmp_path / "texas" / "100" / "feats").write_text(feats)
        (tmp_path / "texas" / "100" / "labels").write_text(labels)
    d = tabular.load_tabular("texas100", str(tmp_path))
    np.testing.assert_array_equal(d.x, x)
    np.testing.assert_array_equal(d.y, y - 1)


def test_bad_files_give_one_line_errors(tmp_path):
    (tmp_path / "bangkok").write_text('"31",0,1\n"2",1,0\n')
    with pytest.raises(ValueError, match=r"labels run 2\.\.31, expected 1\.\.30"):
        tabular.load_tabular("location30", str(tmp_path))
    (tmp_path / "texas" / "100").mkdir(parents=True)
    (tmp_path / "texas" / "100" / "feats").write_text("0,1\n1,0\n")
    (tmp_path / "texas" / "100" / "labels").write_text("1\n")
    with pytest.raises(ValueError, match="2 feature lines but 1 labels"):
        tabular.load_tabular("texas100", str(tmp_path))
    with pytest.raises(DataMissing, match="dataset_purchase.tgz"):
        tabular.load_tabular("purchase100", str(tmp_path / "empty"))


def test_non_binary_features_are_kept_as_float(tmp_path):
    (tmp_path / "bangkok").write_text('"1",0,0.5\n"2",1,3\n')
    d = tabular.load_tabular("location30", str(tmp_path))
    assert d.x.dtype == np.float32 and not d.binary
    with pytest.raises(ValueError, match="binary"):
        shokri.flip_features(d.x, 0.1, np.random.default_rng(0))


@pytest.mark.skipif(not (SHARED_DATA / "location30").is_dir(), reason="../shared/data/location30 is absent")
def test_location30_as_distributed():
    d = tabular.load_tabular("location30", str(SHARED_DATA / "location30"))
    counts = np.bincount(d.y)
    # the published description: 5,010 records, 446 binary features (12.0% ones), 30 classes of 97..308
    assert d.x.shape == (5010, 446) and d.binary
    assert round(float(d.x.mean()), 3) == 0.120
    assert len(counts) == 30 and counts.min() == 97 and counts.max() == 308


def test_kmeans_relabelling_recovers_separated_clusters_numbered_by_size():
    rng = np.random.default_rng(3)
    sizes = [50, 120, 80]
    protos = rng.integers(0, 2, (3, 60))
    truth = np.repeat(np.arange(3), sizes)
    x = protos[truth].copy()
    x ^= (rng.random(x.shape) < 0.02).astype(x.dtype)  # 2% noise: clusters stay far apart
    data = tabular.TabularData(x.astype(np.uint8), np.zeros(len(x), np.int64), 1, "test")
    labels = tabular.relabelled(data, 3).y
    # the largest cluster (120, truth 1) is class 0, then 80 (truth 2), then 50 (truth 0)
    np.testing.assert_array_equal(labels, np.array([2, 0, 1])[truth])
    with pytest.raises(ValueError, match="between 2 and"):
        tabular.cluster_labels(data, 1)


def test_flipping_changes_exactly_the_fraction_uniformly():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 2, (20000, 50)).astype(np.uint8)
    noisy = shokri.flip_features(x, 0.2, rng)
    changed = noisy != x
    assert (changed.sum(axis=1) == 10).all()  # round(0.2 * 50) in every record
    # every feature flipped with probability 10/50; 4 standard errors
    rate = changed.mean(axis=0)
    se = np.sqrt(0.2 * 0.8 / len(x))
    assert np.abs(rate - 0.2).max() < 4 * se


def test_marginals_by_hand_and_sampled_within_sampling_error():
    x = np.array([[1, 0], [1, 1], [0, 0], [0, 0]])
    prior, freq = shokri.class_marginals(x, np.array([0, 0, 1, 1]), 3)
    np.testing.assert_allclose(prior, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(freq[:2], [[1.0, 0.5], [0.0, 0.0]])
    rng = np.random.default_rng(5)
    prior = np.array([0.2, 0.5, 0.3])
    freq = rng.random((3, 40))
    n = 60000
    xs, ys = shokri.sample_marginals(prior, freq, n, rng)
    counts = np.bincount(ys, minlength=3)
    assert np.abs(counts / n - prior).max() < 4 * np.sqrt(0.25 / n)
    for c in range(3):
        got = xs[ys == c].mean(axis=0)
        se = np.sqrt(freq[c] * (1 - freq[c]) / counts[c])
        assert (np.abs(got - freq[c]) < 4.5 * se + 1e-9).all()
        # independent features: the correlation of two features within a class is ~0
        r = np.corrcoef(xs[ys == c][:, 0], xs[ys == c][:, 1])[0, 1]
        assert abs(r) < 4 / np.sqrt(counts[c])


def test_top_k_release_by_hand():
    z = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    np.testing.assert_allclose(released_probs(z, top_k=2), [[0.625, 0.375, 0, 0]], atol=1e-10)
    np.testing.assert_allclose(released_probs(z, top_k=1), [[1, 0, 0, 0]], atol=1e-10)
    np.testing.assert_allclose(released_probs(z, top_k=4), [[0.5, 0.3, 0.15, 0.05]])
    np.testing.assert_allclose(released_probs(z, top_k=2, round_decimals=1), [[0.6, 0.4, 0, 0]], atol=1e-10)


def _linear_target(d=64, c=5, seed=0):
    w = np.random.default_rng(seed).normal(size=(d, c)) * 0.3
    return lambda x: softmax((np.asarray(x, float) - 0.5) @ w, axis=1)


def test_hill_climbing_raises_the_confidence_and_keeps_its_budget():
    query, d = _linear_target(), 64
    calls = []

    def counted(x):
        calls.append(len(x))
        return query(x)

    params = shokri.SynthesisParams(k_max=16, k_min=2, conf_min=0.5, rej_max=5, iter_max=60)
    classes = np.arange(500) % 5
    syn = shokri.synthesize(counted, classes, d, params, np.random.default_rng(6))
    assert syn.queries.max() <= 60 and sum(calls) == syn.queries.sum()  # every query counted
    assert (syn.best_conf >= syn.start_conf).all()
    assert syn.best_conf.mean() > syn.start_conf.mean() + 0.3
    assert 0.5 < syn.found.mean()  # most searches succeed on this easy target
    p = query(syn.x)
    assert (p[np.arange(len(syn.y)), syn.y] > 0.5).all() and (p.argmax(1) == syn.y).all()
    np.testing.assert_array_equal(syn.y, classes[syn.found])


def test_a_search_that_cannot_succeed_spends_exactly_its_budget():
    flat = lambda x: np.full((len(x), 4), 0.25)  # noqa: E731  never above conf_min 0.5
    params = shokri.SynthesisParams(k_max=8, k_min=1, conf_min=0.5, rej_max=3, iter_max=37)
    syn = shokri.synthesize(flat, np.zeros(50, np.int64), 20, params, np.random.default_rng(7))
    assert not syn.found.any() and (syn.queries == 37).all() and len(syn.x) == 0


def test_release_probability_is_the_confidence():
    # y_c = 0.3 for class 0, always the top class, never decreasing: every query is accepted and
    # released with probability 0.3, so the queries per search are geometric with mean 1 / 0.3.
    const = lambda x: np.tile([0.3, 0.25, 0.25, 0.2], (len(x), 1))  # noqa: E731
    params = shokri.SynthesisParams(k_max=4, k_min=1, conf_min=0.1, rej_max=3, iter_max=10000)
    syn = shokri.synthesize(const, np.zeros(20000, np.int64), 8, params, np.random.default_rng(8))
    assert syn.found.all()
    se = np.sqrt((1 - 0.3) / 0.3**2 / len(syn.queries))
    assert abs(syn.queries.mean() - 1 / 0.3) < 4 * se


def test_shadow_splits_are_disjoint_halves():
    splits = shokri.shadow_splits(100, 40, 3, seed=0)
    for inn, out in splits:
        assert len(inn) == len(out) == 40 and not set(inn) & set(out)
    assert not np.array_equal(splits[0][0], splits[1][0])
    with pytest.raises(ValueError, match="2 x 60"):
        shokri.shadow_splits(100, 60, 1, seed=0)


def _vectors(n, c, rng, peak=1.0):
    return softmax(rng.normal(size=(n, c)) * peak, axis=1)


def test_attack_models_without_information_score_auc_one_half():
    """Null: shadows' IN/OUT labels carry no signal and the target's members and non-members are drawn
    alike; 60,000 of each give an AUC standard error of 0.0017, so a bias of 0.005 would show."""
    rng = np.random.default_rng(9)
    c = 10
    probs, labels = _vectors(40000, c, rng), rng.integers(0, c, 40000)
    models = shokri.fit_attack_models(probs, labels, rng.random(40000) < 0.5, c, "gbdt", seed=0)
    n = 60000
    scores = models.score(_vectors(2 * n, c, rng), rng.integers(0, c, 2 * n))
    member = np.arange(2 * n) < n
    se = np.sqrt((2 * n + 1) / (12.0 * n * n))
    assert abs(auc(scores, member) - 0.5) < 3 * se


@pytest.mark.parametrize("kind", ["gbdt", "mlp", "logreg"])
def test_attack_models_learn_a_real_difference(kind):
    """IN vectors peaked on the label, OUT vectors flat: every classifier must separate them."""
    rng = np.random.default_rng(10)
    c, n = 4, 4000

    def rows(member, count):
        y = rng.integers(0, c, count)
        z = rng.normal(size=(count, c))
        z[np.arange(count), y] += 4.0 if member else 0.5
        return softmax(z, axis=1), y

    (pi, yi), (po, yo) = rows(True, n), rows(False, n)
    models = shokri.fit_attack_models(
        np.concatenate([pi, po]), np.concatenate([yi, yo]), np.arange(2 * n) < n, c, kind
    )
    (ti, tyi), (to, tyo) = rows(True, 1000), rows(False, 1000)
    s = models.score(np.concatenate([ti, to]), np.concatenate([tyi, tyo]))
    assert auc(s, np.arange(2000) < 1000) > 0.9


def test_config_errors_name_the_fix():
    from privstudy.mia_runner import MiaTrainConfig
    from privstudy.shokri_runner import ShokriConfig

    with pytest.raises(ConfigError, match="attacker_size"):
        from_mapping(ShokriConfig, {"target_size": 100, "attacker_size": 150})
    with pytest.raises(ConfigError, match="has 5010 records; this trial needs 6680 .*lower target_size"):
        from_mapping(ShokriConfig, {"target_size": 1670, "knowledge": "real"})
    ok = from_mapping(ShokriConfig, {"target_size": 1670, "knowledge": "model"})
    assert ok.records_needed == 3340
    with pytest.raises(ConfigError, match="arch tabular"):
        from_mapping(MiaTrainConfig, {"dataset": "location30", "arch": "mlp"})
    with pytest.raises(ConfigError, match="tabular_classes"):
        from_mapping(MiaTrainConfig, {"dataset": "digits", "arch": "mlp", "tabular_classes": 5})


def test_null_study_end_to_end_scores_auc_one_half():
    """The trial with random shadow data against a target that never saw the scored members."""
    from privstudy.shokri_runner import ShokriConfig, run

    aucs = []
    for seed in range(3):
        cfg = from_mapping(
            ShokriConfig,
            {
                "dataset": "digits_binary",
                "target_size": 590,
                "knowledge": "random",
                "null_membership": True,
                "n_shadows": 2,
                "epochs": 10,
                "hidden": [64],
                "seed": seed,
            },
        )
        row = run(cfg)["shokri_attack"].iloc[0]
        assert row["n_members"] == row["n_nonmembers"] == 590
        aucs.append(row["auc"])
    se = np.sqrt((2 * 590 + 1) / (12.0 * 590 * 590) / 3)
    assert abs(np.mean(aucs) - 0.5) < 3 * se


def test_mia_train_on_a_tabular_dataset_with_label_only_release(tmp_path):
    from privstudy.mia_runner import MiaTrainConfig, run

    cfg = from_mapping(
        MiaTrainConfig,
        {
            "dataset": "digits_binary",
            "arch": "tabular",
            "hidden": [32],
            "tabular_classes": 4,
            "pool_size": 200,
            "n_models": 2,
            "epochs": 3,
            "release_top_k": 1,
        },
    )
    out = run(cfg)
    probs = np.stack(out["mia_scores"]["probs"].to_numpy())
    assert probs.shape == (200, 4)
    np.testing.assert_allclose(np.sort(probs, axis=1)[:, -1], 1.0, atol=1e-6)  # the label only
    assert out["mia_model"]["n_params"].iloc[0] == 64 * 32 + 32 + 32 * 4 + 4


def test_the_shipped_shokri_specs_validate(tmp_path, monkeypatch):
    from conftest import ROOT, run_cli

    for spec in ("shokri_location.yaml", "shokri_purchase.yaml"):
        for smoke in ([], ["--smoke"]):
            args = ["sweep", str(ROOT / "jobs" / spec), "--dry-run", "--results", str(tmp_path), *smoke]
            assert run_cli(*args) == 0


def test_data_check_lists_the_tabular_datasets(tmp_path, capsys, records):
    from conftest import run_cli

    y, x = records
    (tmp_path / "bangkok").write_text(_csv_rows(y, x, quote=True))
    assert run_cli("data", "check", "--data-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert f"location30     {tmp_path / 'bangkok'}" in out and "digits_binary  built in" in out
    assert run_cli("data", "fetch", "texas100") == 2
    assert "dataset_texas.tgz" in capsys.readouterr().err


def test_aggregation_pairs_each_attacker_with_real_data_by_replicate(tmp_path, write_spec):
    import pandas as pd

    from conftest import run_cli

    spec = {
        "name": "sk",
        "kind": "shokri",
        "fixed": {
            "dataset": "digits_binary",
            "target_size": 150,
            "n_shadows": 1,
            "epochs": 3,
            "hidden": [16],
        },
        "grid": {"knowledge": ["random", "real"]},
        "seeds": 3,
    }
    assert run_cli("sweep", str(write_spec(spec)), "--results", str(tmp_path), "--executor", "inline") == 0
    study = tmp_path / "sk"
    assert run_cli("aggregate", str(study)) == 0
    shards = pd.concat(pd.read_parquet(p) for p in (study / "shards" / "shokri_attack").glob("*.parquet"))
    shards["knowledge"] = shards["config_json"].map(lambda c: json.loads(c)["knowledge"])
    wide = shards.pivot(index="seed", columns="knowledge", values="auc")
    vs = pd.read_csv(study / "tables" / "shokri_vs_real.csv")
    assert list(vs["knowledge"]) == ["random"] and vs["n_pairs"].iloc[0] == 3
    assert vs["auc_loss_mean"].iloc[0] == pytest.approx((wide["random"] - wide["real"]).mean())
    table = pd.read_csv(study / "tables" / "shokri_attack.csv")
    assert list(table["knowledge"]) == ["real", "random"]  # strongest attacker first
    assert (study / "figures" / "shokri_precision.png").stat().st_size > 0
    assert "Shadow-model attack by attacker knowledge" in (study / "report.md").read_text()
