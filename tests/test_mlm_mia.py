"""Kind `mlm_mia`: the clinical corpus, windows, pseudo-log-likelihood, the attacks and the trial, each
against an answer known independently (by hand, by the definition, or by a planted effect)."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from conftest import run_cli
from privstudy.data import subword
from privstudy.data.clinical import distinct_notes, load_mtsamples, synthetic_notes
from privstudy.data.locate import DataMissing
from privstudy.mia import mlm as mm
from privstudy.stats.ranks import auc


def test_kaggle_layout_is_read_stripped_and_grouped_by_distinct_text(tmp_path, capsys, monkeypatch):
    # Kaggle's mtsamples.csv: an unnamed index, fields padded with spaces, one note under two specialties
    rows = [
        ",description,medical_specialty,sample_name,transcription,keywords",
        '0, A, Surgery , s1 ," Procedure:  knee   arthroscopy. ",k',
        '1, B, Orthopedic , s2 ,"Procedure: knee arthroscopy.",',
        "2, C, Neurology , s3 , Headache for two days. ,",
        "3, D, Neurology , s4 ,   ,",  # an all-space transcription is missing
    ]
    folder = tmp_path / "mtsamples"
    folder.mkdir()
    with gzip.open(folder / "mtsamples.csv.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    corpus = load_mtsamples(str(tmp_path))
    assert list(corpus.texts) == ["Procedure: knee arthroscopy.", "Headache for two days."]
    assert list(corpus.specialties) == [("Orthopedic", "Surgery"), ("Neurology",)]
    assert list(corpus.copies) == [2, 1]
    assert run_cli("data", "check", "--data-dir", str(tmp_path)) == 0
    assert str(folder / "mtsamples.csv.gz") in capsys.readouterr().out
    monkeypatch.delenv("PRIVSTUDY_DATA", raising=False)
    with pytest.raises(DataMissing, match="tboyle10/medicaltranscriptions"):
        load_mtsamples(str(tmp_path / "elsewhere"))
    (folder / "mtsamples.csv").write_text("a,b\n1,2\n")  # the plain CSV is looked for first
    with pytest.raises(ValueError, match="missing columns"):
        load_mtsamples(str(tmp_path))


def test_synthetic_corpus_has_mtsamples_duplication_and_is_seeded():
    c = synthetic_notes(300, seed=0)
    assert len(c) == 300 and len(set(c.texts)) == 300
    assert set(np.unique(c.copies)) <= {1, 2, 3} and (c.copies >= 2).mean() > 0.8
    again = synthetic_notes(300, seed=0)
    assert list(again.texts) == list(c.texts)
    rows = pd.DataFrame({"medical_specialty": ["A", "B"], "transcription": ["x  y", "x y"]})
    assert list(distinct_notes(rows, "t").copies) == [2]


def test_splits_are_disjoint_by_text_and_externals_are_only_held_out_specialties():
    c = synthetic_notes(600, seed=0)
    held = ("Dermatology", "Psychiatry")
    s = mm.split_notes(c.specialties, held, 100, 100, 120, 50, seed=4)
    parts = [s.members, s.population, s.nonmembers, s.near]
    assert [len(p) for p in parts] == [100, 100, 120, 50]
    texts = [set(c.texts[p]) for p in parts]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not texts[i] & texts[j]
    assert all(set(c.specialties[i]) & set(held) for i in s.near)
    inside = np.r_[s.members, s.population, s.nonmembers]
    assert not any(set(c.specialties[i]) & set(held) for i in inside)
    other = mm.split_notes(c.specialties, held, 100, 100, 120, 50, seed=5)
    assert not np.array_equal(other.members, s.members)
    with pytest.raises(mm.SplitError, match="exceed"):
        mm.split_notes(c.specialties, held, 400, 100, 120, 50, seed=4)
    with pytest.raises(mm.SplitError, match="near_notes"):
        mm.split_notes(c.specialties, held, 10, 10, 10, 10_000, seed=4)


def test_windows_cut_pad_and_count_occurrences_by_hand():
    ids = [np.arange(1, 11, dtype=np.int32), np.array([5, 6, 7], np.int32)]
    w = subword.windows(ids, [7, 9], seq_len=4, min_tokens=2)
    # note 7: [1..4], [5..8], [9, 10, pad, pad]; note 9: [5, 6, 7, pad]
    assert w.tokens.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0], [5, 6, 7, 0]]
    assert w.lengths.tolist() == [4, 4, 2, 3] and w.note.tolist() == [7, 7, 7, 9]
    assert w.index.tolist() == [0, 1, 2, 0]
    assert len(subword.windows(ids, [7, 9], 4, min_tokens=3)) == 3  # the 2-token tail dropped
    assert subword.windows(ids, [7, 9], 4, 2, max_windows=1).note.tolist() == [7, 9]
    counts = subword.occurrences(w.tokens[[0, 3, 1]], w.tokens[[0, 0, 3]], np.array([2, 1, 3]))
    assert counts.tolist() == [3, 3, 0]


def test_tokenizer_is_deterministic_with_fixed_special_ids():
    texts = list(synthetic_notes(80, seed=1).texts)
    a, b = subword.train_tokenizer(texts, 400), subword.train_tokenizer(texts, 400)
    assert a.model == b.model and a.vocab_size <= 400
    assert [a.piece(i) for i in (subword.PAD, subword.UNK, subword.MASK)] == subword.SPECIALS
    ids = a.encode(texts[:5])
    assert all((x > subword.MASK).all() for x in ids)  # real text never encodes to a special id
    assert [list(x) for x in ids] == [list(x) for x in b.encode(texts[:5])]


def test_masking_follows_bert_proportions_and_never_touches_padding():
    from privstudy.models.mlm import mask_batch

    rng = np.random.default_rng(0)
    n, t, vocab = 4000, 32, 500
    tokens = rng.integers(3, vocab, (n, t)).astype(np.int32)
    lengths = rng.integers(1, t + 1, n)
    tokens[np.arange(t)[None, :] >= lengths[:, None]] = subword.PAD
    inputs, rows, cols = mask_batch(tokens, lengths, vocab, rng, rate=0.15)
    assert (cols < lengths[rows]).all() and len(np.unique(rows)) == n  # one per row at least, no pad
    k = len(rows)
    real = int(lengths.sum())
    # chosen share: 0.15 of real tokens, plus rows that drew none and got one; SE-based tolerances
    extra = np.sum(0.85**lengths)
    assert abs(k - (0.15 * real + extra)) < 4 * math.sqrt(real * 0.15 * 0.85 + extra)
    masked = inputs[rows, cols] == subword.MASK
    kept = inputs[rows, cols] == tokens[rows, cols]
    se = math.sqrt(0.2 * 0.8 / k)
    assert abs(masked.mean() - 0.8) < 4 * se
    # "kept" also catches random replacements that drew the same token (1 in vocab - 3)
    assert abs(kept.mean() - (0.1 + 0.1 / (vocab - 3))) < 4 * math.sqrt(0.1 * 0.9 / k)
    untouched = np.ones_like(tokens, bool)
    untouched[rows, cols] = False
    assert (inputs[untouched] == tokens[untouched]).all()


def test_masked_copies_are_one_masked_position_each():
    from privstudy.models.mlm import masked_copies

    tokens = np.array([[5, 6, 7, 0], [8, 9, 0, 0]], np.int32)
    copies, pos, true = masked_copies(tokens, np.array([3, 2]))
    m = subword.MASK
    assert copies.tolist() == [[m, 6, 7, 0], [5, m, 7, 0], [5, 6, m, 0], [m, 9, 0, 0], [8, m, 0, 0]]
    assert pos.tolist() == [0, 1, 2, 0, 1] and true.tolist() == [5, 6, 7, 8, 9]


def test_batched_pll_equals_one_position_at_a_time():
    from privstudy.models import mlm
    from privstudy.models.training import seed_everything

    seed_everything(0, True)
    enc, head = mlm.build_mlm(mlm.MlmShape(vocab_size=60, seq_len=8, dim=16, layers=2, heads=2, ff_dim=32))
    rng = np.random.default_rng(1)
    tokens = rng.integers(3, 60, (6, 8)).astype(np.int32)
    lengths = np.array([8, 3, 5, 8, 1, 6])
    tokens[np.arange(8)[None, :] >= lengths[:, None]] = subword.PAD
    tokens[3, 2:5] = tokens[3, 0]  # a repeated token
    slow = mlm.pll_one_position_at_a_time(enc, head, tokens, lengths)
    for batch in (8, 24, 4096):  # one sequence per pass, several, all at once
        np.testing.assert_allclose(mlm.pll(enc, head, tokens, lengths, batch), slow, rtol=1e-5, atol=1e-5)
    # padding does not leak into real positions: the same sequence with other pad content scores the same
    shorter = tokens[[1]].copy()
    np.testing.assert_allclose(mlm.pll(enc, head, shorter, lengths[[1]]), slow[[1]], rtol=1e-5)
    assert (slow < 0).all()


def test_attack_scores_and_note_aggregation_by_hand():
    t, r, n = np.array([-10.0, -4.0, -9.0]), np.array([-12.0, -3.0, -9.0]), np.array([5, 2, 3])
    assert mm.attack_scores("loss", t, r, n).tolist() == [-10, -4, -9]
    assert mm.attack_scores("loss_per_token", t, r, n).tolist() == [-2, -2, -3]
    assert mm.attack_scores("ratio", t, r, n).tolist() == [2, -1, 0]
    assert mm.attack_scores("ratio_per_token", t, r, n).tolist() == [0.4, -0.5, 0]
    ids, mean = mm.by_note(np.array([1.0, 3.0, 5.0]), np.array([4, 2, 4]), "mean")
    assert ids.tolist() == [2, 4] and mean.tolist() == [3.0, 3.0]
    assert mm.by_note(np.array([1.0, 3.0, 5.0]), np.array([4, 2, 4]), "max")[1].tolist() == [3.0, 5.0]
    assert mm.pseudo_perplexity(np.array([-2.0, -4.0]), np.array([1, 2])) == pytest.approx(math.exp(2))
    with pytest.raises(ValueError, match="valid"):
        mm.attack_scores("zlib", t, r, n)


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_ratio_attack_finds_a_planted_shift_that_the_loss_attack_barely_sees(shift):
    """Target PLL = difficulty + shift * member + noise, reference = difficulty + noise: the ratio removes
    the per-sequence difficulty (sd 10), so its AUC is Phi(shift / (2 sigma)); the loss attack's is
    Phi(shift / sqrt(2 (100 + sigma^2))). With 100,000 per side the AUC's SE is 0.0013: a bias of 0.005
    would be over 3 SE."""
    rng = np.random.default_rng(7)
    n, sigma = 100_000, 0.5
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    difficulty = rng.normal(-60, 10, 2 * n)
    target = difficulty + shift * member + rng.normal(0, sigma, 2 * n)
    reference = difficulty + rng.normal(0, sigma, 2 * n)
    tokens = np.full(2 * n, 30)
    se = math.sqrt((1 / n + 1 / n) / 12)
    ratio = auc(mm.attack_scores("ratio", target, reference, tokens), member)
    loss = auc(mm.attack_scores("loss", target, reference, tokens), member)
    assert abs(ratio - norm.cdf(shift / (2 * sigma))) < 3 * se
    assert abs(loss - norm.cdf(shift / math.sqrt(2 * (100 + sigma**2)))) < 3 * se


def _scores_frame(rows):
    cols = ["part", "note_id", "window", "n_tokens", "note_copies", "seen_target", "seen_reference"]
    cols += ["pll_target", "pll_reference"]
    return pd.DataFrame(rows, columns=cols)


def test_trial_metrics_by_hand_and_member_copies_left_out_of_negatives():
    from privstudy.analysis.mlm_mia import trial_metrics

    # ratio scores: members 3, 1, 2 (notes 0, 0, 1); non-members 0, 2.5, 9 -- the 9 is a window equal
    # to a member window (seen_target 1) and is left out: pairs (3>0, 3>2.5, 1>0, 2>0): AUC 4/6
    f = _scores_frame(
        [
            ("member", 0, 0, 10, 2, 2, 0, -10.0, -13.0),
            ("member", 0, 1, 10, 2, 2, 0, -10.0, -11.0),
            ("member", 1, 0, 10, 1, 1, 0, -10.0, -12.0),
            ("nonmember", 5, 0, 10, 0, 0, 0, -10.0, -10.0),
            ("nonmember", 6, 0, 10, 0, 0, 0, -10.0, -12.5),
            ("nonmember", 7, 0, 10, 0, 1, 0, -1.0, -10.0),
        ]
    )
    m = trial_metrics(f).set_index(["attack", "level", "contrast", "group"])
    assert m.loc[("ratio", "sequence", "nonmember", "all"), "auc"] == pytest.approx(4 / 6)
    assert m.loc[("ratio", "sequence", "nonmember", "all"), "n_nonmembers"] == 2
    # note level, mean: note 0 -> 2, note 1 -> 2; against 0 and 2.5: 2 of 4 pairs
    assert m.loc[("ratio", "note_mean", "nonmember", "all"), "auc"] == pytest.approx(2 / 4)
    assert m.loc[("ratio", "note_max", "nonmember", "all"), "auc"] == pytest.approx(3 / 4)
    # seen twice: members 3 and 1 -> 3 of 4 pairs; seen once: member 2 -> 1 of 2
    assert m.loc[("ratio", "sequence", "nonmember", "2"), "auc"] == pytest.approx(3 / 4)
    assert m.loc[("ratio", "sequence", "nonmember", "1"), "auc"] == pytest.approx(1 / 2)
    # two negatives cannot resolve a 1% FPR
    assert np.isnan(m.loc[("ratio", "sequence", "nonmember", "all"), "tpr_at_fpr_1pct"])


SMALL = {
    "synthetic_notes": 500,
    "member_notes": 60,
    "nonmember_notes": 120,
    "near_notes": 40,
    "far_notes": 40,
    "vocab_size": 400,
    "seq_len": 16,
    "dim": 64,
    "heads": 2,
    "ff_dim": 128,
    "layers": 2,
    "epochs": 25,
    "batch_size": 16,
    "learning_rate": 2e-3,
    "score_windows": 4,
    "population_score_notes": 20,
}


def test_trial_finds_members_and_the_null_reference_does_not():
    """Positive: a target trained 25 epochs on 60 notes is found by the ratio attack against a
    reference trained on the population. Null: a reference trained on the members themselves (another
    seed) cancels membership; over three trials the mean ratio AUC is 0.5 within 3 SE of the trials."""
    from privstudy.analysis.mlm_mia import trial_metrics
    from privstudy.mlm_runner import MlmConfig, run

    def ratio_auc(**kw):
        out = run(MlmConfig(**{**SMALL, **kw}))
        m = trial_metrics(out["mlm_scores"]).set_index(["attack", "level", "contrast", "group"])
        return m, out

    m, out = ratio_auc(seed=0)
    assert m.loc[("ratio", "sequence", "nonmember", "all"), "auc"] > 0.6
    assert m.loc[("loss", "sequence", "far", "all"), "auc"] > 0.95
    s = out["mlm_scores"]
    assert (s.loc[s["part"] == "member", "seen_target"] >= 1).all()
    assert (s.loc[s["part"] == "member", "note_copies"] >= 1).all()
    assert (s.loc[s["part"] == "population", "seen_reference"] >= 1).all()
    nulls = []
    for seed in range(3):
        m, out = ratio_auc(seed=seed, reference_data="members")
        s = out["mlm_scores"]
        assert (s["seen_target"] == s["seen_reference"]).all()  # the same training windows
        nulls.append(m.loc[("ratio", "sequence", "nonmember", "all"), "auc"])
    sd = np.std(nulls, ddof=1)
    n_pos, n_neg = 60 * 4, 120 * 4
    floor = math.sqrt((1 / n_pos + 1 / n_neg) / 12)  # the sampling SE of one AUC: sd can't be below it
    assert abs(np.mean(nulls) - 0.5) < 3 * max(sd, floor) / math.sqrt(3)


def test_study_runs_and_aggregates(tmp_path, write_spec):
    from privstudy.mlm_runner import KIND

    spec = {
        "name": "mlm",
        "kind": "mlm_mia",
        "fixed": dict(KIND.smoke),
        "grid": {"duplicates": ["keep", "dedup"]},
        "seeds": 2,
    }
    assert run_cli("sweep", str(write_spec(spec)), "--results", str(tmp_path), "--executor", "inline") == 0
    study = tmp_path / "mlm"
    assert run_cli("aggregate", str(study)) == 0
    attacks = pd.read_csv(study / "tables" / "mlm_attacks.csv")
    assert set(attacks["attack"]) == set(mm.ATTACKS) and set(attacks["duplicates"]) == {"keep", "dedup"}
    assert set(attacks["contrast"]) == {"nonmember", "near", "far"}
    assert (attacks["n_trials"] == 2).all()
    md = (study / "tables" / "mlm_attacks.md").read_text()
    assert "unresolved" in md  # 60 non-member windows cannot resolve 1% FPR
    dup = pd.read_csv(study / "tables" / "mlm_duplication.csv")
    assert {"1", "2"} <= set(dup.loc[dup["duplicates"] == "keep", "group"].astype(str))
    ppl = pd.read_csv(study / "tables" / "mlm_perplexity.csv")
    assert set(ppl["part"]) == {"member", "nonmember", "population", "near", "far"}
    assert (study / "figures" / "mlm_roc.png").exists()
    assert "Masked language models" in (study / "report.md").read_text()


def test_dedup_trains_every_distinct_note_once_and_keep_as_often_as_the_corpus_has_it():
    from privstudy.data.clinical import synthetic_notes
    from privstudy.mlm_runner import KIND, MlmConfig, run

    corpus = synthetic_notes(KIND.smoke["synthetic_notes"], seed=0)
    out = {d: run(MlmConfig(**{**KIND.smoke, "duplicates": d, "epochs": 1})) for d in ("keep", "dedup")}
    for d, o in out.items():
        s = o["mlm_scores"]
        members = s[s["part"] == "member"]
        expected = corpus.copies[members["note_id"]] if d == "keep" else np.ones(len(members))
        assert (members["note_copies"].to_numpy() == expected).all()
        assert (s.loc[s["part"] != "member", "note_copies"] == 0).all()
    dedup, keep = out["dedup"]["mlm_trial"].iloc[0], out["keep"]["mlm_trial"].iloc[0]
    assert dedup["n_target_train_windows"] == dedup["n_member_windows"]
    assert keep["n_target_train_windows"] > 1.5 * keep["n_member_windows"]


def test_bad_configs_fail_with_the_fix():
    from privstudy.harness.config import ConfigError
    from privstudy.mlm_runner import MlmConfig

    with pytest.raises(ConfigError, match="heads"):
        MlmConfig(dim=30, heads=4)
    with pytest.raises(ConfigError, match="far_external"):
        MlmConfig(dataset="mtsamples", far_external="synthetic")
    with pytest.raises(ConfigError, match="min_tokens"):
        MlmConfig(min_tokens=64, seq_len=32)
