"""Trial kind `mlm_mia`: how much a masked language model trained on clinical notes memorises them
(Mireshghallah et al., EMNLP 2022), by the loss attack and the likelihood-ratio attack.

One trial: the distinct notes are split (by the trial's seed) into members, the attacker's population,
held-out non-members and near externals (held-out specialties); far externals are another source
(IMDB reviews). A WordPiece tokenizer is trained on the training text; notes are cut into windows of
``seq_len`` tokens (a note's windows stay in its part). A small BERT-style target is trained from
scratch on the members' windows (duplicates kept as in the raw corpus, or removed), a reference of the
same architecture on the population's (or, as the null control, on the members'). Every scored window
gets its pseudo-log-likelihood under both models and the number of times it was seen in each model's
training. The attacks, their AUCs and TPRs, perplexities and ROC curves are computed by the analysis
(`analysis/mlm_mia.py`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from privstudy.harness.config import TrialConfig, check, param
from privstudy.harness.registry import TrialKind

DATASETS = ("synthetic", "mtsamples")
FAR_SOURCES = ("imdb", "synthetic", "none")
DEFAULT_EXTERNAL = {
    "mtsamples": (
        "Dentistry",
        "Dermatology",
        "Ophthalmology",
        "Pediatrics - Neonatal",
        "Psychiatry / Psychology",
    ),
    "synthetic": ("Dermatology", "Ophthalmology", "Psychiatry"),
}


@dataclasses.dataclass(frozen=True)
class MlmConfig(TrialConfig):
    """One target masked LM, its reference, and the pseudo-log-likelihoods of every scored window."""

    dataset: Literal[DATASETS] = param(
        "synthetic",
        "Notes: synthetic (built in: template notes with per-patient details) or mtsamples (MTSamples, "
        "the Kaggle mtsamples.csv layout, looked for in data_dir).",
    )
    data_dir: str = param(
        "", "Folder holding mtsamples.csv (and IMDB); empty: $PRIVSTUDY_DATA and Keras' cache."
    )
    synthetic_notes: int = param(1000, "dataset synthetic: distinct notes generated.")
    external_specialties: Optional[tuple[str, ...]] = param(
        None,
        "Specialties held out as near externals (a note filed under any of them is used nowhere else); "
        "null: the dataset's default (MTSamples: Dentistry, Dermatology, Ophthalmology, Pediatrics - "
        "Neonatal, Psychiatry / Psychology).",
    )
    far_external: Optional[Literal[FAR_SOURCES]] = param(
        None,
        "Far externals: imdb (reviews from data_dir), synthetic (built-in reviews) or none; null: "
        "synthetic for the synthetic notes, imdb for mtsamples.",
    )
    member_notes: int = param(200, "Distinct notes the target trains on.")
    reference_notes: Optional[int] = param(
        None, "Population notes the reference trains on; null: member_notes."
    )
    nonmember_notes: int = param(200, "Held-out notes (non-members).")
    near_notes: int = param(100, "Near-external notes scored.")
    far_notes: int = param(100, "Far-external texts scored.")
    score_notes: Optional[int] = param(
        None, "Notes scored per part (a seeded sample of members, non-members, externals); null: all of them."
    )
    population_score_notes: int = param(
        50, "Population notes scored (for the perplexity table: they are the reference's members)."
    )
    score_windows: Optional[int] = param(
        8, "Windows scored per note (its first ones); null: all. Training always uses every window."
    )
    duplicates: Literal["keep", "dedup"] = param(
        "keep",
        "keep: a note trains as many times as the corpus has rows of it (MTSamples files most notes under "
        "two or three specialties); dedup: every distinct note once.",
    )
    reference_data: Literal["population", "members"] = param(
        "population",
        "The reference model's training notes: the population part (the attack), or the members "
        "themselves (the null control: the ratio attack must then find nothing).",
    )
    tokenizer_text: Literal["training", "population"] = param(
        "training",
        "Text the WordPiece tokenizer is trained on: the training text of both models (members and "
        "population) or the population alone (then the vocabulary carries nothing of the members).",
    )
    vocab_size: int = param(5000, "Most WordPiece vocabulary entries (3 special tokens included).")
    seq_len: int = param(32, "Tokens per window.")
    min_tokens: int = param(8, "A note's last window is dropped when shorter than this.")
    dim: int = param(128, "Transformer width.")
    layers: int = param(2, "Transformer blocks.")
    heads: int = param(4, "Attention heads (dim must divide by it).")
    ff_dim: int = param(512, "Feed-forward width.")
    dropout: float = param(0.1, "Dropout rate (embeddings, attention, residual branches).")
    epochs: int = param(20, "Training epochs of each model.")
    batch_size: int = param(32, "Windows per batch.")
    learning_rate: float = param(5e-4, "Adam peak learning rate (6% linear warm-up, then linear decay).")
    mask_rate: float = param(
        0.15, "Share of tokens masked per training batch (80% [MASK], 10% random, 10% kept)."
    )
    batch_copies: int = param(
        512,
        "Masked copies per forward pass when scoring (512 was fastest on 2 cores: benchmarks/bench_mlm.py).",
    )
    deterministic: bool = param(True, "TensorFlow deterministic ops.")

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("member_notes", "nonmember_notes", "seq_len", "vocab_size", "dim", "layers", "heads"):
            check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("near_notes", "far_notes", "population_score_notes"):
            check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        check(self.reference_notes is None or self.reference_notes >= 1, "reference_notes", "must be >= 1")
        check(self.score_notes is None or self.score_notes >= 1, "score_notes", "must be >= 1 or null")
        check(self.score_windows is None or self.score_windows >= 1, "score_windows", "must be >= 1 or null")
        check(self.synthetic_notes >= 10, "synthetic_notes", f"must be >= 10, got {self.synthetic_notes}")
        check(self.vocab_size >= 100, "vocab_size", f"must be >= 100, got {self.vocab_size}")
        check(self.seq_len >= 4, "seq_len", f"must be >= 4, got {self.seq_len}")
        check(
            1 <= self.min_tokens <= self.seq_len,
            "min_tokens",
            f"must be in 1..seq_len={self.seq_len}, got {self.min_tokens}",
        )
        check(self.dim % self.heads == 0, "heads", f"dim={self.dim} must divide by heads={self.heads}")
        check(self.ff_dim >= 1, "ff_dim", f"must be >= 1, got {self.ff_dim}")
        check(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.epochs >= 1 and self.batch_size >= 1, "epochs", "epochs and batch_size must be >= 1")
        check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        check(0 < self.mask_rate < 1, "mask_rate", f"must be in (0, 1), got {self.mask_rate}")
        check(
            self.batch_copies >= self.seq_len,
            "batch_copies",
            f"must be >= seq_len={self.seq_len} (one sequence's copies), got {self.batch_copies}",
        )
        check(
            not (self.dataset == "mtsamples" and self.far_external == "synthetic"),
            "far_external",
            "synthetic reviews go with the synthetic notes; use imdb or none with mtsamples",
        )

    @property
    def n_reference(self) -> int:
        return self.reference_notes or self.member_notes

    @property
    def external(self) -> tuple[str, ...]:
        return (
            self.external_specialties
            if self.external_specialties is not None
            else DEFAULT_EXTERNAL[self.dataset]
        )

    @property
    def far(self) -> str:
        return self.far_external or ("synthetic" if self.dataset == "synthetic" else "imdb")


TRIAL = pa.schema(
    [
        ("n_member_notes", pa.int64()),
        ("n_reference_notes", pa.int64()),
        ("n_member_windows", pa.int64()),  # distinct windows of the members
        ("n_target_train_windows", pa.int64()),  # rows the target trains on per epoch (duplicates counted)
        ("n_reference_train_windows", pa.int64()),
        ("vocab_size", pa.int64()),  # the tokenizer's actual vocabulary
        ("n_params", pa.int64()),
        ("target_train_s", pa.float64()),
        ("reference_train_s", pa.float64()),
        ("target_epoch_s", pa.float64()),  # mean over epochs after the first (which traces)
        ("target_tokens_per_epoch", pa.int64()),
        ("target_final_loss", pa.float64()),  # mean masked-token cross-entropy, last epoch
        ("reference_final_loss", pa.float64()),
        ("n_scored", pa.int64()),
        ("score_s", pa.float64()),  # PLL of every scored window under both models
        ("member_windows_in_nonmembers", pa.int64()),  # non-member windows equal to a member window
    ]
)

SCORES = pa.schema(
    [
        ("part", pa.string()),  # member, nonmember, population, near, far
        ("note_id", pa.int64()),  # distinct-note index in the corpus (far: index in its source)
        ("window", pa.int64()),  # position of the window in its note
        ("n_tokens", pa.int64()),  # real tokens scored
        ("note_copies", pa.int64()),  # times the note's windows were in the target's training (0: never)
        ("seen_target", pa.int64()),  # times this exact window was in the target's training
        ("seen_reference", pa.int64()),  # ... in the reference's training
        ("pll_target", pa.float64()),  # pseudo-log-likelihood in nats
        ("pll_reference", pa.float64()),
    ]
)

TABLES = {"mlm_trial": TRIAL, "mlm_scores": SCORES}


def _far_texts(cfg: MlmConfig, rng: np.random.Generator) -> np.ndarray:
    if cfg.far == "none" or cfg.far_notes == 0:
        return np.array([], dtype=object)
    if cfg.far == "synthetic":
        from privstudy.data.clinical import synthetic_reviews

        return synthetic_reviews(cfg.far_notes, cfg.seed)
    from privstudy.data.text import load_imdb

    texts = load_imdb(cfg.data_dir or None).texts
    if cfg.far_notes > len(texts):
        raise ValueError(f"far_notes={cfg.far_notes} exceeds the {len(texts)} IMDB reviews; lower it")
    return texts[np.sort(rng.choice(len(texts), cfg.far_notes, replace=False))]


def run(cfg: MlmConfig) -> dict[str, pd.DataFrame]:
    """Train the target and reference masked LMs and score every sampled window under both."""
    from privstudy.data import subword
    from privstudy.data.clinical import load_mtsamples, synthetic_notes
    from privstudy.mia.mlm import split_notes
    from privstudy.models import mlm
    from privstudy.models.training import seed_everything

    corpus = (
        synthetic_notes(cfg.synthetic_notes, seed=0)  # one corpus for every trial; the split varies
        if cfg.dataset == "synthetic"
        else load_mtsamples(cfg.data_dir or None)
    )
    split = split_notes(
        corpus.specialties,
        cfg.external,
        cfg.member_notes,
        cfg.n_reference,
        cfg.nonmember_notes,
        cfg.near_notes,
        cfg.seed,
    )
    rng = np.random.default_rng([cfg.seed, 17])
    far_texts = _far_texts(cfg, rng)

    tok_notes = (
        split.population if cfg.tokenizer_text == "population" else np.r_[split.members, split.population]
    )
    tok = subword.train_tokenizer(corpus.texts[np.sort(tok_notes)], cfg.vocab_size)
    ids = tok.encode(corpus.texts)

    def times_trained(notes: np.ndarray) -> np.ndarray:
        """How many times each (training) note's windows are repeated in its model's training."""
        return corpus.copies[notes] if cfg.duplicates == "keep" else np.ones(len(notes), np.int64)

    def train_windows(notes: np.ndarray) -> tuple[subword.Windows, np.ndarray]:
        """The notes' windows and each window's repeat count in training."""
        w = subword.windows([ids[i] for i in notes], notes, cfg.seq_len, cfg.min_tokens)
        return w, times_trained(w.note)

    target_w, target_reps = train_windows(split.members)
    ref_notes = split.members if cfg.reference_data == "members" else split.population
    ref_w, ref_reps = train_windows(ref_notes)
    if not len(target_w) or not len(ref_w):
        raise ValueError(f"no training windows of >= min_tokens={cfg.min_tokens} tokens; lower min_tokens")

    shape = mlm.MlmShape(tok.vocab_size, cfg.seq_len, cfg.dim, cfg.layers, cfg.heads, cfg.ff_dim, cfg.dropout)
    fits, models = [], []
    for which, (w, reps) in enumerate([(target_w, target_reps), (ref_w, ref_reps)]):
        seed = cfg.seed * 2 + which
        seed_everything(seed, cfg.deterministic)
        encoder, head = mlm.build_mlm(shape)
        rows = np.repeat(np.arange(len(w)), reps)
        fits.append(
            mlm.train_mlm(
                encoder,
                head,
                w.tokens[rows],
                w.lengths[rows],
                cfg.epochs,
                cfg.batch_size,
                cfg.learning_rate,
                seed,
                cfg.mask_rate,
            )
        )
        models.append((encoder, head))

    # the scored windows of every part
    def sample(notes: np.ndarray, k: Optional[int]) -> np.ndarray:
        return notes if k is None or k >= len(notes) else np.sort(rng.choice(notes, k, replace=False))

    parts = [
        ("member", sample(split.members, cfg.score_notes)),
        ("nonmember", sample(split.nonmembers, cfg.score_notes)),
        (
            "population",
            sample(split.population, cfg.population_score_notes)
            if cfg.population_score_notes
            else split.population[:0],
        ),
        ("near", sample(split.near, cfg.score_notes)),
    ]
    pieces = []
    for name, notes in parts:
        w = subword.windows([ids[i] for i in notes], notes, cfg.seq_len, cfg.min_tokens, cfg.score_windows)
        pieces.append((name, w))
    if len(far_texts):
        far_ids = tok.encode(far_texts)
        pieces.append(
            (
                "far",
                subword.windows(
                    far_ids, np.arange(len(far_ids)), cfg.seq_len, cfg.min_tokens, cfg.score_windows
                ),
            )
        )
    tokens = np.concatenate([w.tokens for _, w in pieces])
    lengths = np.concatenate([w.lengths for _, w in pieces])

    start = time.perf_counter()
    pll_t = mlm.pll(*models[0], tokens, lengths, cfg.batch_copies)
    pll_r = mlm.pll(*models[1], tokens, lengths, cfg.batch_copies)
    score_s = time.perf_counter() - start

    seen_t = subword.occurrences(tokens, target_w.tokens, target_reps)
    seen_r = subword.occurrences(tokens, ref_w.tokens, ref_reps)
    frames = []
    offset = 0
    for name, w in pieces:
        sl = slice(offset, offset + len(w))
        offset += len(w)
        copies = times_trained(w.note) if name == "member" else np.zeros(len(w), np.int64)
        frames.append(
            pd.DataFrame(
                {
                    "part": name,
                    "note_id": w.note,
                    "window": w.index,
                    "n_tokens": w.lengths,
                    "note_copies": copies,
                    "seen_target": seen_t[sl],
                    "seen_reference": seen_r[sl],
                    "pll_target": pll_t[sl],
                    "pll_reference": pll_r[sl],
                }
            )
        )
    scores = pd.concat(frames, ignore_index=True)
    nonmember = scores["part"] == "nonmember"
    trial = {
        "n_member_notes": len(split.members),
        "n_reference_notes": len(ref_notes),
        "n_member_windows": len(target_w),
        "n_target_train_windows": int(target_reps.sum()),
        "n_reference_train_windows": int(ref_reps.sum()),
        "vocab_size": tok.vocab_size,
        "n_params": mlm.n_params(*models[0]),
        "target_train_s": fits[0].train_s,
        "reference_train_s": fits[1].train_s,
        "target_epoch_s": float(np.mean(fits[0].epoch_s[1:] or fits[0].epoch_s)),
        "target_tokens_per_epoch": int(fits[0].tokens_per_epoch),
        "target_final_loss": fits[0].final_loss,
        "reference_final_loss": fits[1].final_loss,
        "n_scored": len(scores),
        "score_s": score_s,
        "member_windows_in_nonmembers": int((scores.loc[nonmember, "seen_target"] > 0).sum()),
    }
    return {"mlm_trial": pd.DataFrame([trial]), "mlm_scores": scores}


KIND = TrialKind(
    name="mlm_mia",
    description="Masked language models on clinical notes: loss and likelihood-ratio membership attacks "
    "(members, non-members, near and far externals; duplicated or deduplicated training).",
    config_cls=MlmConfig,
    run=run,
    tables=TABLES,
    uses_tensorflow=True,
    smoke={
        "synthetic_notes": 160,
        "member_notes": 30,
        "nonmember_notes": 30,
        "near_notes": 20,
        "far_notes": 20,
        "population_score_notes": 10,
        "vocab_size": 300,
        "seq_len": 16,
        "dim": 32,
        "heads": 2,
        "ff_dim": 64,
        "layers": 1,
        "epochs": 2,
        "score_windows": 2,
    },
)
