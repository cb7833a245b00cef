"""Trial kind `mia_train`: train model m of a membership-inference study and score every pool example.

A study of M models over a pool of N examples (drawn from the dataset's train + test images by
``pool_seed``) shares one keep matrix (LiRA's construction, seeded by ``keep_seed``): every example
is IN for exactly M/2 models. The trial with ``seed = m`` trains model m on its IN examples, then
writes, for every pool example (and every external example, never trained on), the statistics the
attacks need. The attacks run afterwards on these shards (`privstudy attack`, `analysis/aggregate.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from privstudy.data.examples import check_tabular_arch
from privstudy.data.images import DATASET_SIZES, IMAGE_DATASETS
from privstudy.data.tabular import TABULAR_DATASETS, TABULAR_SIZES
from privstudy.defences.dp import DP_OPTIMIZERS
from privstudy.harness.config import TrialConfig, check, param
from privstudy.harness.registry import TrialKind
from privstudy.mia.canaries import CANARY_TYPES
from privstudy.models.image import ARCHS

Dataset = Literal[IMAGE_DATASETS]
MiaDataset = Literal[IMAGE_DATASETS + ("imdb",) + TABULAR_DATASETS]
SIZES = {**DATASET_SIZES, **TABULAR_SIZES}
DpOptimizer = Literal[DP_OPTIMIZERS]


@dataclasses.dataclass(frozen=True)
class MiaTrainConfig(TrialConfig):
    """Model ``seed`` (0..n_models-1) of a membership-inference study."""

    dataset: MiaDataset = param(
        "cifar10",
        "Dataset; its train and test examples form the candidate pool "
        "(imdb: the 50,000 labelled reviews, with arch lstm; the tabular benchmarks location30, "
        "purchase100, texas100 and the built-in digits_binary, with arch tabular).",
    )
    tabular_classes: Optional[int] = param(
        None,
        "Tabular datasets: the records re-labelled into this many classes by k-means on the features "
        "(Shokri et al.'s Purchase-2..100); null: the distributed labels.",
    )
    data_dir: str = param(
        "",
        "Folder holding the dataset (see privstudy.data.locate); empty: the standard "
        "places ($PRIVSTUDY_DATA, Keras' cache).",
    )
    pool_size: int = param(10000, "Examples in the study's pool (the N of the keep matrix).")
    pool_seed: int = param(0, "Seed of the pool sample; trials of one study share it.")
    n_models: int = param(16, "Models in the study (the M of the keep matrix); even. Seeds are 0..M-1.")
    keep_seed: int = param(0, "Seed of the keep matrix; trials of one study share it.")
    arch: Literal[ARCHS + ("lstm", "tabular")] = param(
        "cnn",
        "Model: the published CNN, an MLP (images), the published LSTM (imdb), or the tabular papers' "
        "tanh MLP (widths: hidden).",
    )
    hidden: tuple[int, ...] = param(
        (1024, 512, 256, 128),
        "arch tabular: widths of the tanh hidden layers (the papers' 1024-512-256-128).",
    )
    vocab_size: int = param(
        20000, "lstm: vocabulary of the TextVectorization fitted on the model's training text."
    )
    seq_len: int = param(100, "lstm: tokens per review (truncated / padded).")
    epochs: int = param(20, "Training epochs.")
    batch_size: int = param(128, "Training batch size.")
    learning_rate: float = param(1e-3, "Adam learning rate.")
    train_augment: bool = param(False, "Random mirror and 4-pixel shifts while training.")
    tta_mirror: bool = param(False, "Also score the mirrored image (a second view for LiRA).")
    record_probs: bool = param(
        True, "Record every example's probability vector (the shadow attack needs it)."
    )
    external_dataset: Optional[Dataset] = param(
        None, "Dataset of external examples (same image shape) that no model trains on; null: none."
    )
    external_size: int = param(0, "External examples scored by every model.")
    null_membership: bool = param(
        False,
        "Train on an independent random half of the pool instead of the "
        "recorded IN set: members the model never saw (null test).",
    )
    deterministic: bool = param(False, "TensorFlow deterministic ops (slower; exact reruns on one machine).")
    # Defences: parameters of every model of a setting, so that target and shadow models are trained alike.
    holdout_size: int = param(
        0,
        "Examples from outside the pool, never scored: the validation set of early "
        "stopping and the reference set of adversarial regularisation.",
    )
    l2: float = param(0.0, "Defence: L2 weight penalty (lambda) on every layer's kernel.")
    dropout: Optional[float] = param(
        None, "Defence: every dropout rate set to this; null: the published rates."
    )
    early_stopping_patience: int = param(
        0,
        "Defence: early stopping on validation loss (holdout set) with this "
        "patience; best weights restored; 0: off.",
    )
    label_smoothing: float = param(0.0, "Defence: label smoothing alpha of the cross-entropy.")
    adv_reg: float = param(
        0.0,
        "Defence: adversarial regularisation lambda (Nasr et al. 2018; reference set: the holdout); 0: off.",
    )
    temperature: float = param(1.0, "Defence at inference: released probabilities are softmax(logits / T).")
    round_decimals: Optional[int] = param(
        None, "Defence at inference: released probabilities rounded to this many decimals; null: not rounded."
    )
    release_top_k: Optional[int] = param(
        None,
        "Defence at inference: only the k largest probabilities released (renormalised; 1: the label "
        "only); null: all.",
    )
    dp_noise_multiplier: Optional[float] = param(None, "DP-SGD noise multiplier; null: no DP-SGD.")
    dp_l2_norm_clip: float = param(1.0, "DP-SGD clipping norm of each microbatch's gradient.")
    dp_microbatches: int = param(0, "DP-SGD microbatches per batch (divides batch_size); 0: one per example.")
    dp_optimizer: DpOptimizer = param(
        "adam",
        "DP-SGD optimizer: tensorflow-privacy's DPKeras{Adam,SGD}Optimizer or the vectorized variants; "
        "adam_fast/sgd_fast: the same DP-SGD by fast gradient clipping (per-example norms without "
        "per-example gradients, privstudy.defences.fast_dp), at a fraction of the cost; not with l2 or vgg.",
    )
    dp_delta: Optional[float] = param(
        None,
        "Delta of the reported epsilon and of the DP audit (also for models without DP-SGD); "
        "null: 1/n_train rounded down to a power of ten.",
    )
    # The DP audit (privstudy.mia.canaries, privstudy.mia.audit).
    canaries: int = param(
        0,
        "Audit canaries: examples from outside the pool and holdout, each included in every model's "
        "training set by an independent fair coin; scored and audited (one-run and many-run); 0: none.",
    )
    canary_type: Literal[CANARY_TYPES] = param(
        "mislabelled", "Canaries as they are (natural) or each moved to another class (mislabelled)."
    )
    canary_seed: int = param(0, "Seed of the canaries' draw, labels and coins; trials of one study share it.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.pool_size >= 4, "pool_size", f"must be >= 4, got {self.pool_size}")
        check(
            self.n_models >= 2 and self.n_models % 2 == 0,
            "n_models",
            f"must be even and >= 2 (every example IN for half of the models), got {self.n_models}",
        )
        check(
            self.seed < self.n_models,
            "seed",
            f"is the model index and must be below n_models={self.n_models}, got {self.seed}; "
            f"use `seeds: {self.n_models}`",
        )
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        check(self.external_size >= 0, "external_size", f"must be >= 0, got {self.external_size}")
        check(
            (self.external_dataset is None) == (self.external_size == 0),
            "external_size",
            "set external_dataset and external_size > 0 together",
        )
        text = self.dataset == "imdb"
        check(
            text == (self.arch == "lstm"),
            "arch",
            f"imdb needs arch lstm and lstm needs imdb, got dataset {self.dataset} with arch {self.arch}",
        )
        table = self.dataset in TABULAR_DATASETS
        check_tabular_arch(self.dataset, self.arch, self.tabular_classes)
        check(
            not ((text or table) and (self.tta_mirror or self.train_augment or self.external_dataset)),
            "dataset",
            "tta_mirror, train_augment and external_dataset are for image datasets",
        )
        check(len(self.hidden) >= 1 and min(self.hidden) >= 1, "hidden", "needs at least one positive width")
        check(
            self.release_top_k is None or self.release_top_k >= 1,
            "release_top_k",
            f"must be >= 1, got {self.release_top_k}",
        )
        check(
            self.vocab_size >= 100 and self.seq_len >= 1,
            "vocab_size",
            "needs vocab_size >= 100, seq_len >= 1",
        )
        check(self.holdout_size >= 0, "holdout_size", f"must be >= 0, got {self.holdout_size}")
        check(self.l2 >= 0, "l2", f"must be >= 0, got {self.l2}")
        check(
            self.dropout is None or 0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}"
        )
        check(self.early_stopping_patience >= 0, "early_stopping_patience", "must be >= 0")
        check(
            0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}"
        )
        check(self.adv_reg >= 0, "adv_reg", f"must be >= 0, got {self.adv_reg}")
        check(
            self.holdout_size > 0 or (self.early_stopping_patience == 0 and self.adv_reg == 0),
            "holdout_size",
            "early stopping and adversarial regularisation need holdout_size > 0 (examples outside the pool)",
        )
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        check(self.round_decimals is None or self.round_decimals >= 0, "round_decimals", "must be >= 0")
        dp = self.dp_noise_multiplier is not None
        check(not dp or self.dp_noise_multiplier >= 0, "dp_noise_multiplier", "must be >= 0")
        check(self.dp_l2_norm_clip > 0, "dp_l2_norm_clip", f"must be > 0, got {self.dp_l2_norm_clip}")
        check(
            self.dp_microbatches >= 0
            and (self.dp_microbatches == 0 or self.batch_size % self.dp_microbatches == 0),
            "dp_microbatches",
            f"must divide batch_size={self.batch_size}, got {self.dp_microbatches}",
        )
        check(
            not (dp and (self.adv_reg > 0 or self.train_augment or self.early_stopping_patience)),
            "dp_noise_multiplier",
            "DP-SGD is combined here with none of adv_reg, train_augment, early stopping",
        )
        fast = dp and self.dp_optimizer.endswith("_fast")
        check(
            not (fast and self.l2 > 0),
            "dp_optimizer",
            f"{self.dp_optimizer} does not clip an L2 penalty with each example; use adam for l2 > 0",
        )
        check(
            not (fast and self.arch == "vgg"),
            "dp_optimizer",
            f"{self.dp_optimizer} has no per-example norm for BatchNormalization (arch vgg); use adam",
        )
        check(self.canaries >= 0, "canaries", f"must be >= 0, got {self.canaries}")
        available = SIZES[self.dataset]
        check(
            self.pool_size + self.holdout_size + self.canaries <= available,
            "pool_size",
            f"pool_size={self.pool_size} + holdout_size={self.holdout_size} + canaries={self.canaries} "
            f"exceed the {available} examples of {self.dataset}",
        )
        check(
            self.external_dataset is None or self.external_size <= DATASET_SIZES[self.external_dataset],
            "external_size",
            f"exceeds the examples of {self.external_dataset}",
        )
        check(
            self.dp_delta is None or 0 < self.dp_delta < 1,
            "dp_delta",
            f"must be in (0, 1), got {self.dp_delta}",
        )

    @property
    def uses_dp(self) -> bool:
        return self.dp_noise_multiplier is not None


SCORES = pa.schema(
    [
        ("model_index", pa.int32()),
        ("source", pa.string()),  # "pool", "external" or "canary"
        ("example_id", pa.int64()),  # position in the pool (or in the external sample, or canary number)
        ("dataset_index", pa.int64()),  # index into the dataset's train + test images
        ("is_member", pa.bool_()),  # canaries: whether this model trained on it
        ("label", pa.int32()),  # canaries: the training label (moved, if mislabelled)
        ("loss", pa.float64()),
        ("p_true", pa.float64()),
        ("lira", pa.float64()),  # log p_y - log(1 - p_y), from the logits
        ("entropy", pa.float64()),
        ("mentr", pa.float64()),  # modified entropy (Song and Mittal)
        ("correct", pa.bool_()),
        ("lira_views", pa.list_(pa.float64())),  # the LiRA statistic per test-time view (view 0: as is)
        ("probs", pa.list_(pa.float32())),  # empty unless record_probs
    ]
)

MODEL = pa.schema(
    [
        ("model_index", pa.int32()),
        ("n_train", pa.int64()),
        ("train_accuracy", pa.float64()),
        ("test_accuracy", pa.float64()),  # on the pool examples the model did not train on
        ("train_loss", pa.float64()),
        ("test_loss", pa.float64()),
        ("epochs_run", pa.int32()),
        ("train_s", pa.float64()),
        ("n_params", pa.int64()),
        ("n_holdout", pa.int64()),
        ("n_canaries_in", pa.int64()),  # audit canaries in the training set (n_train counts them)
        # DP-SGD epsilon at dp_delta (NaN without DP-SGD): RDP / PLD accountant; each example once per
        # epoch / assuming Poisson sampling
        ("eps_rdp_epoch", pa.float64()),
        ("eps_rdp_poisson", pa.float64()),
        ("eps_pld_epoch", pa.float64()),
        ("eps_pld_poisson", pa.float64()),
        ("dp_delta", pa.float64()),
    ]
)

TABLES = {"mia_scores": SCORES, "mia_model": MODEL}
EPS_COLUMNS = ("rdp_epoch", "rdp_poisson", "pld_epoch", "pld_poisson")  # the eps_* columns of mia_model


@dataclasses.dataclass
class Pool:
    """The study's pool and holdout, raw (uint8 images or review texts)."""

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray  # into the dataset's train + test examples
    n_classes: int
    x_hold: np.ndarray
    y_hold: np.ndarray
    is_text: bool
    x_can: np.ndarray  # the audit canaries, with their training labels (see privstudy.mia.canaries)
    y_can: np.ndarray
    index_can: np.ndarray


def study_pool(cfg: MiaTrainConfig) -> Pool:
    """The study's pool (drawn by pool_seed) and the holdout (drawn from the rest)."""
    from privstudy.data.examples import load_examples
    from privstudy.mia.canaries import canary_indices, canary_labels
    from privstudy.mia.keep import pool_indices

    x_all, y_all, n_classes = load_examples(
        cfg.dataset, cfg.data_dir or None, cfg.tabular_classes, cfg.pool_seed
    )
    if cfg.pool_size + cfg.holdout_size + cfg.canaries > len(x_all):
        raise ValueError(
            f"pool_size={cfg.pool_size} plus holdout_size={cfg.holdout_size} plus canaries={cfg.canaries} "
            f"exceed the {len(x_all)} examples of {cfg.dataset}; lower one of them"
        )
    idx = pool_indices(len(x_all), cfg.pool_size, cfg.pool_seed)
    rest = np.setdiff1d(np.arange(len(x_all)), idx)
    hold = np.sort(np.random.default_rng([cfg.pool_seed, 0x686F6C64]).permutation(rest)[: cfg.holdout_size])
    can = canary_indices(np.setdiff1d(rest, hold), cfg.canaries, cfg.canary_seed)
    y_can = canary_labels(y_all[can], n_classes, cfg.canary_type, cfg.canary_seed)
    return Pool(
        x_all[idx],
        y_all[idx],
        idx,
        n_classes,
        x_all[hold],
        y_all[hold],
        cfg.dataset == "imdb",
        x_all[can],
        y_can,
        can,
    )


def training_mask(cfg: MiaTrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(recorded membership, what the model trains on) of model ``cfg.seed``."""
    from privstudy.mia.keep import keep_matrix

    keep = keep_matrix(cfg.n_models, cfg.pool_size, cfg.keep_seed)[cfg.seed]
    if not cfg.null_membership:
        return keep, keep
    # An independent half, from a seed stream no keep matrix uses: unrelated to the recorded membership.
    rng = np.random.default_rng([cfg.keep_seed, cfg.seed, 0x6E756C6C])
    train = np.zeros(cfg.pool_size, bool)
    train[rng.permutation(cfg.pool_size)[: cfg.pool_size // 2]] = True
    return keep, train


def _score_rows(model, ys: np.ndarray, views: list[np.ndarray], cfg: MiaTrainConfig):
    from privstudy.defences.release import released_logits
    from privstudy.mia.scores import example_scores
    from privstudy.models.training import logits_of

    def scores(v):
        released = released_logits(
            logits_of(model, v), cfg.temperature, cfg.round_decimals, cfg.release_top_k
        )
        return example_scores(released, ys)

    base = scores(views[0])
    extra = [scores(v)["lira"] for v in views[1:]]
    lira_views = np.stack([base["lira"], *extra], axis=1)
    probs = base["probs"].astype(np.float32) if cfg.record_probs else np.zeros((len(ys), 0), np.float32)
    return base, lira_views, probs


def _train(cfg: MiaTrainConfig, pool: Pool, train: np.ndarray, canary_in: np.ndarray):
    """Preprocess, build and train the model on its pool examples and its included canaries.

    The preprocessing (image channel statistics, the text vocabulary) is fitted on the model's pool
    training examples; under DP-SGD on the whole pool instead, the same for every model: fitted on the
    training set it would reveal members outside DP-SGD's guarantee (a rare word enters the vocabulary
    only if a member uses it). Canaries never enter the preprocessing.
    """
    from privstudy.models import image, tabular, text
    from privstudy.models.training import FitOptions, fit

    # Under DP-SGD the L2 penalty goes into every example's loss (clipped with it: see
    # models.training._with_l2); Keras' regularisers would add a scalar to the per-example loss vector.
    l2_model = 0.0 if cfg.uses_dp else cfg.l2
    fit_on = np.ones(len(pool.x), bool) if cfg.uses_dp else train
    if pool.is_text:
        vec = text.make_vectorizer(pool.x[fit_on], cfg.vocab_size, cfg.seq_len)
        xs, xh = text.vectorize(vec, pool.x), text.vectorize(vec, pool.x_hold)
        model = text.build_text_model(cfg.vocab_size, dropout=cfg.dropout, l2=l2_model)
        transform = lambda raw: text.vectorize(vec, raw)  # noqa: E731
    elif cfg.arch == "tabular":
        transform = lambda raw: np.asarray(raw, np.float32)  # noqa: E731  (0/1 features used as they are)
        xs, xh = transform(pool.x), transform(pool.x_hold)
        model = tabular.build_tabular_model(
            xs.shape[1], pool.n_classes, cfg.hidden, l2=l2_model, dropout=cfg.dropout
        )
    else:
        mean, std = image.channel_stats(pool.x[fit_on])
        xs, xh = image.standardise(pool.x, mean, std), image.standardise(pool.x_hold, mean, std)
        model = image.build_image_model(
            cfg.arch, xs.shape[1:], pool.n_classes, l2=l2_model, dropout=cfg.dropout
        )
        transform = lambda raw: image.standardise(raw, mean, std)  # noqa: E731
    x_tr, y_tr = xs[train], pool.y[train]
    if canary_in.any():
        x_tr = np.concatenate([x_tr, transform(pool.x_can[canary_in])])
        y_tr = np.concatenate([y_tr, pool.y_can[canary_in]])
    opts = FitOptions(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        patience=cfg.early_stopping_patience or None,
        label_smoothing=cfg.label_smoothing,
        augment=cfg.train_augment,
        seed=cfg.seed,
        dp_loss=cfg.uses_dp,
        l2_in_loss=cfg.l2 if cfg.uses_dp else 0.0,
    )
    if cfg.uses_dp:
        from privstudy.defences.dp import make_optimizer

        micro = cfg.dp_microbatches or cfg.batch_size
        opt = make_optimizer(
            cfg.dp_optimizer,
            cfg.learning_rate,
            cfg.dp_l2_norm_clip,
            cfg.dp_noise_multiplier,
            micro,
            noise_seed=cfg.seed,
        )
        fr = fit(model, x_tr, y_tr, opts, optimizer=opt)
    elif cfg.adv_reg > 0:
        from privstudy.defences.adversarial import fit_adversarial

        fr = fit_adversarial(model, x_tr, y_tr, xh, pool.y_hold, opts, cfg.adv_reg)
    else:
        fr = fit(model, x_tr, y_tr, opts, validation=(xh, pool.y_hold) if opts.patience else None)
    return model, xs, fr, transform


def run(cfg: MiaTrainConfig) -> dict[str, pd.DataFrame]:
    """Train model ``cfg.seed`` on its IN examples; score the pool and the external examples."""
    from privstudy.mia.canaries import canary_inclusion
    from privstudy.models.training import logits_of, seed_everything

    pool = study_pool(cfg)
    member, train = training_mask(cfg)
    canary_in = canary_inclusion(cfg.canaries, cfg.canary_seed, cfg.seed)
    seed_everything(cfg.seed * 1000003 + cfg.keep_seed, cfg.deterministic)
    model, xs, fr, transform = _train(cfg, pool, train, canary_in)

    def views_of(inputs: np.ndarray) -> list[np.ndarray]:
        return [inputs, inputs[:, :, ::-1, :]] if cfg.tta_mirror else [inputs]

    base, lira_views, probs = _score_rows(model, pool.y, views_of(xs), cfg)
    frames = [
        _frame(cfg, "pool", np.arange(len(pool.y)), pool.index, member, pool.y, base, lira_views, probs)
    ]
    if cfg.external_dataset is not None:
        from privstudy.data.images import load_images

        ext = load_images(cfg.external_dataset, cfg.data_dir or None)
        ex, _ = ext.pool()
        if ex.shape[1:] != pool.x.shape[1:]:
            raise ValueError(
                f"external_dataset {cfg.external_dataset} has images {ex.shape[1:]}, "
                f"the pool {pool.x.shape[1:]}; pick a dataset of the same shape"
            )
        if cfg.external_size > len(ex):
            raise ValueError(
                f"external_size={cfg.external_size} exceeds the {len(ex)} images of {cfg.external_dataset}"
            )
        eidx = np.sort(
            np.random.default_rng([cfg.pool_seed, 0x657874]).permutation(len(ex))[: cfg.external_size]
        )
        exs = transform(ex[eidx])
        # External labels are of another label set: scored against the model's own top class.
        elabels = logits_of(model, exs).argmax(axis=1)
        eb, elv, ep = _score_rows(model, elabels, views_of(exs), cfg)
        frames.append(
            _frame(
                cfg, "external", np.arange(len(eidx)), eidx, np.zeros(len(eidx), bool), elabels, eb, elv, ep
            )
        )
    if cfg.canaries:
        cb, clv, cp = _score_rows(model, pool.y_can, views_of(transform(pool.x_can)), cfg)
        ids = np.arange(cfg.canaries)
        frames.append(_frame(cfg, "canary", ids, pool.index_can, canary_in, pool.y_can, cb, clv, cp))
    scores = pd.concat(frames, ignore_index=True)
    n_train = int(train.sum() + canary_in.sum())
    eps = {f"eps_{k}": float("nan") for k in EPS_COLUMNS}
    delta = float("nan")
    if cfg.uses_dp:
        from privstudy.defences.dp import default_delta, epsilons, microbatch_size

        delta = cfg.dp_delta if cfg.dp_delta is not None else default_delta(n_train)
        size = microbatch_size(cfg.batch_size, cfg.dp_microbatches)
        found = epsilons(n_train, cfg.batch_size, fr.epochs_run, cfg.dp_noise_multiplier, delta, size)
        eps = {f"eps_{k}": v for k, v in found.items()}
    out = ~train
    model_row = pd.DataFrame(
        [
            {
                "model_index": cfg.seed,
                "n_train": n_train,
                "train_accuracy": float(base["correct"][train].mean()),
                "test_accuracy": float(base["correct"][out].mean()) if out.any() else float("nan"),
                "train_loss": float(base["loss"][train].mean()),
                "test_loss": float(base["loss"][out].mean()) if out.any() else float("nan"),
                "epochs_run": fr.epochs_run,
                "train_s": fr.train_s,
                "n_params": int(model.count_params()),
                "n_holdout": len(pool.y_hold),
                "n_canaries_in": int(canary_in.sum()),
                **eps,
                "dp_delta": delta,
            }
        ]
    )
    return {"mia_scores": scores, "mia_model": model_row}


def _frame(cfg, source, example_id, dataset_index, member, labels, base, lira_views, probs) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model_index": np.full(len(labels), cfg.seed, np.int32),
            "source": source,
            "example_id": example_id.astype(np.int64),
            "dataset_index": np.asarray(dataset_index, np.int64),
            "is_member": np.asarray(member, bool),
            "label": np.asarray(labels, np.int32),
            "loss": base["loss"],
            "p_true": base["p_true"],
            "lira": base["lira"],
            "entropy": base["entropy"],
            "mentr": base["mentr"],
            "correct": base["correct"],
            "lira_views": list(lira_views),
            "probs": list(probs),
        }
    )


KIND = TrialKind(
    name="mia_train",
    description="Membership inference: train model m of M on its half of the pool, score every example.",
    config_cls=MiaTrainConfig,
    run=run,
    tables=TABLES,
    uses_tensorflow=True,
    smoke={
        "dataset": "digits",
        "pool_size": 200,
        "n_models": 4,
        "arch": "mlp",
        "epochs": 2,
        "deterministic": True,
    },
)
