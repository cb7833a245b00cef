"""Trial kind `sisa`: one SISA ensemble (Bourtoule et al. 2021), its unlearning requests, and the
membership evidence that the forgotten points are forgotten.

A study of M trials (``seed`` = 0..M-1) shares a pool of examples and LiRA's keep matrix, as
`mia_train` does: trial m trains on its IN half of the pool. Its training points are shuffled (by the
trial's seed) into S contiguous shards of R slices each; every shard trains stage by stage with a
checkpoint per stage (``privstudy.unlearning``). Then K unlearning requests, drawn from one of the
reference code's distributions over the shuffled order, are served one by one or in batches: each
deletes its points and retrains the shards it touches from their last checkpoint that never saw them.
A monolithic model (S = 1, R = 1) is trained from scratch on the surviving points: the baseline of
time and accuracy. The trial writes the ensemble's accuracy under every aggregation (label vote,
probability average, a stacked meta-learner fitted on a held-out split), the time and point-epochs of
every request and of the baseline, the checkpoint storage, and every pool example's membership scores
before unlearning, after it, and under the retrained baseline. The analysis (`analysis/sisa.py`) runs
the attacks on them, using the study's other trials as reference models, and compares forgotten,
retained and never-seen points.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from privstudy.data.examples import check_tabular_arch
from privstudy.data.images import DATASET_SIZES, IMAGE_DATASETS
from privstudy.data.tabular import TABULAR_DATASETS, TABULAR_SIZES
from privstudy.harness.config import TrialConfig, check, param
from privstudy.harness.registry import TrialKind
from privstudy.unlearning.sisa import REQUEST_DISTRIBUTIONS, ensemble_logits

SisaDataset = Literal[IMAGE_DATASETS + TABULAR_DATASETS]
SIZES = {**DATASET_SIZES, **TABULAR_SIZES}
UNLEARNING = ("sisa", "none")
STRATEGIES = ("vote", "average", "vote_proportional", "average_proportional", "stacked")
PHASES = ("before", "after", "retrain")


@dataclasses.dataclass(frozen=True)
class SisaConfig(TrialConfig):
    """Ensemble ``seed`` (0..n_models-1) of a SISA study."""

    dataset: SisaDataset = param(
        "digits",
        "Dataset: images (digits built in, fashion_mnist, cifar10, cifar100; arch mlp or cnn) or tabular "
        "(location30, purchase100, texas100, digits_binary built in; arch tabular).",
    )
    data_dir: str = param("", "Folder holding the dataset; empty: $PRIVSTUDY_DATA and Keras' cache.")
    tabular_classes: Optional[int] = param(
        None, "Tabular datasets: records re-labelled into this many classes by k-means; null: as distributed."
    )
    arch: Literal["mlp", "cnn", "tabular"] = param(
        "mlp", "Shard model: the project's image MLP or published CNN, or the tabular tanh MLP (hidden)."
    )
    hidden: tuple[int, ...] = param((128,), "arch tabular: widths of the tanh hidden layers.")
    dropout: Optional[float] = param(
        0.0,
        "Every dropout rate of the image models (null: the published rates). 0 by default: without "
        "stochastic layers a retrained shard equals, bit for bit, one trained without the points.",
    )
    pool_size: int = param(1200, "Examples in the study's pool; each ensemble trains on its IN half.")
    pool_seed: int = param(0, "Seed of the pool, evaluation and meta splits; trials of one study share it.")
    n_models: int = param(8, "Ensembles in the study (the keep matrix's M); even. Seeds are 0..M-1.")
    keep_seed: int = param(0, "Seed of the keep matrix; trials of one study share it.")
    test_size: int = param(
        300, "Evaluation examples outside the pool: the one split every accuracy is measured on."
    )
    meta_size: int = param(
        200,
        "Held-out examples outside the pool and the evaluation split: the stacked meta-learner's training "
        "set and the preprocessing statistics (no shard trains on them, so unlearning never touches them).",
    )
    shards: int = param(5, "S: shards.")
    slices: int = param(1, "R: slices per shard.")
    epochs: int = param(20, "e: epochs of work per point (spread over the stages by SISA's schedule).")
    batch_size: int = param(32, "Mini-batch size.")
    learning_rate: float = param(1e-3, "Adam learning rate.")
    requests: int = param(0, "K: unlearning requests (distinct training points).")
    request_distribution: Literal[REQUEST_DISTRIBUTIONS] = param(
        "uniform",
        "Where requests fall in the shuffled training order: uniform, exponential (lambda = -ln(0.05)/N) "
        "or pareto (a = 1.16), as the SISA reference code draws them.",
    )
    request_batch: int = param(
        1, "Requests served together (their shards retrained once); 1: one by one; 0: all K in one batch."
    )
    unlearning: Literal[UNLEARNING] = param(
        "sisa",
        "sisa: delete and retrain; none: the requested points stay in the model (the negative control "
        "of the membership check: forgotten points must then be found).",
    )
    deterministic: bool = param(True, "TensorFlow deterministic ops (exact retraining on one machine).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.n_models >= 2 and self.n_models % 2 == 0,
            "n_models",
            f"must be even and >= 2 (every example IN for half of the ensembles), got {self.n_models}",
        )
        check(
            self.seed < self.n_models,
            "seed",
            f"is the ensemble index and must be below n_models={self.n_models}, got {self.seed}; "
            f"use `seeds: {self.n_models}`",
        )
        check_tabular_arch(self.dataset, self.arch, self.tabular_classes)
        check(len(self.hidden) >= 1 and min(self.hidden) >= 1, "hidden", "needs at least one positive width")
        check(
            self.dropout is None or 0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}"
        )
        check(self.shards >= 1 and self.slices >= 1, "shards", "shards and slices must be >= 1")
        check(self.epochs >= 1 and self.batch_size >= 1, "epochs", "epochs and batch_size must be >= 1")
        check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        check(self.test_size >= 1, "test_size", f"must be >= 1, got {self.test_size}")
        check(self.meta_size >= 2, "meta_size", f"must be >= 2, got {self.meta_size}")
        n_train = self.pool_size // 2
        check(
            self.shards * self.slices <= n_train,
            "shards",
            f"{self.shards} shards x {self.slices} slices need a point per slice; each ensemble trains on "
            f"{n_train} points (half of pool_size={self.pool_size}): raise pool_size or lower them",
        )
        check(
            0 <= self.requests <= n_train // 2,
            "requests",
            f"must be in 0..{n_train // 2} (half of the {n_train} training points), got {self.requests}",
        )
        check(self.request_batch >= 0, "request_batch", f"must be >= 0, got {self.request_batch}")
        available = SIZES[self.dataset]
        check(
            self.pool_size + self.test_size + self.meta_size <= available,
            "pool_size",
            f"pool_size={self.pool_size} + test_size={self.test_size} + meta_size={self.meta_size} exceed "
            f"the {available} examples of {self.dataset}; lower them",
        )

    @property
    def n_train(self) -> int:
        return self.pool_size // 2

    @property
    def requests_per_batch(self) -> int:
        """Requests served together: request_batch, or all K when it is 0."""
        return self.request_batch or max(self.requests, 1)


TRIAL = pa.schema(
    [
        ("n_train", pa.int64()),  # N: the ensemble's training points before any request
        ("n_classes", pa.int32()),
        ("n_params", pa.int64()),  # of one shard model
        ("stage_epochs", pa.string()),  # the schedule e_1..e_R, comma-separated
        ("train_s", pa.float64()),  # training every shard, all stages
        ("train_point_epochs", pa.int64()),
        ("checkpoints", pa.int64()),  # S * R stored after training
        ("checkpoint_bytes", pa.int64()),  # their size (float32 weights)
        ("checkpoint_peak_bytes", pa.int64()),  # the most ever held (during retraining)
        ("model_bytes", pa.int64()),  # one model's weights: what a monolithic model stores
        ("n_forgotten", pa.int64()),  # points deleted by the requests
        ("n_batches", pa.int64()),  # request batches served
        ("shards_retrained", pa.int64()),  # shard retrainings, all batches
        ("unlearn_s", pa.float64()),  # all batches
        ("unlearn_point_epochs", pa.int64()),
        ("retrain_s", pa.float64()),  # the monolithic baseline on the surviving points, from scratch
        ("retrain_point_epochs", pa.int64()),
        ("speedup_work", pa.float64()),  # retrain point-epochs / mean point-epochs per batch
        ("speedup_predicted", pa.float64()),  # the cost model for this batch size (uniform requests)
        # accuracy on the evaluation split: ensemble before and after the requests, by aggregation
        *[(f"acc_{s}_{w}", pa.float64()) for w in ("before", "after") for s in STRATEGIES],
        ("acc_retrain", pa.float64()),  # the monolithic baseline (S = 1, R = 1) on the surviving points
        ("acc_shard_mean", pa.float64()),  # mean accuracy of the shard models alone, after
    ]
)

REQUEST = pa.schema(
    [
        ("batch", pa.int64()),  # 0-based, in serving order
        ("n_points", pa.int64()),  # requests in the batch
        ("shards_retrained", pa.int64()),
        ("from_stages", pa.string()),  # the checkpoint each retrained shard resumed from (0: scratch)
        ("point_epochs", pa.int64()),
        ("point_epochs_predicted", pa.float64()),  # expected for uniform requests at this batch size
        ("wall_s", pa.float64()),
    ]
)

SCORES = pa.schema(
    [
        ("phase", pa.string()),  # before (the trained ensemble), after (unlearnt), retrain (baseline)
        ("example_id", pa.int64()),  # position in the pool
        ("member", pa.bool_()),  # in the trial's keep row: trained on before any request
        ("forgotten", pa.bool_()),  # requested for deletion (a member; marked in every phase)
        ("label", pa.int32()),
        ("loss", pa.float64()),  # of the probability-averaged ensemble (the baseline: its own)
        ("p_true", pa.float64()),
        ("lira", pa.float64()),  # log p_y - log(1 - p_y)
        ("entropy", pa.float64()),
        ("mentr", pa.float64()),
        ("correct", pa.bool_()),
    ]
)

TABLES = {"sisa_trial": TRIAL, "sisa_request": REQUEST, "sisa_scores": SCORES}


@dataclasses.dataclass
class Splits:
    x: np.ndarray  # pool, preprocessed float32
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_meta: np.ndarray
    y_meta: np.ndarray
    n_classes: int


def study_splits(cfg: SisaConfig) -> Splits:
    """The pool (by pool_seed), then the evaluation and meta splits from the rest; preprocessed with
    statistics of the meta split only."""
    from privstudy.data.examples import load_examples
    from privstudy.mia.keep import pool_indices

    x_all, y_all, n_classes = load_examples(
        cfg.dataset, cfg.data_dir or None, cfg.tabular_classes, cfg.pool_seed
    )
    if cfg.pool_size + cfg.test_size + cfg.meta_size > len(x_all):
        raise ValueError(
            f"pool_size={cfg.pool_size} + test_size={cfg.test_size} + meta_size={cfg.meta_size} exceed the "
            f"{len(x_all)} examples of {cfg.dataset}; lower them"
        )
    idx = pool_indices(len(x_all), cfg.pool_size, cfg.pool_seed)
    rest = np.random.default_rng([cfg.pool_seed, 0x73697361]).permutation(
        np.setdiff1d(np.arange(len(x_all)), idx)
    )
    test, meta = rest[: cfg.test_size], rest[cfg.test_size : cfg.test_size + cfg.meta_size]
    if cfg.dataset in TABULAR_DATASETS:
        x_all = np.asarray(x_all, np.float32)
    else:
        from privstudy.models import image

        mean, std = image.channel_stats(x_all[meta])
        x_all = image.standardise(x_all, mean, std)
    y_all = np.asarray(y_all, np.int64)
    return Splits(x_all[idx], y_all[idx], x_all[test], y_all[test], x_all[meta], y_all[meta], n_classes)


def _builder(cfg: SisaConfig, splits: Splits):
    from privstudy.models import image, tabular

    if cfg.arch == "tabular":
        return lambda: tabular.build_tabular_model(splits.x.shape[1], splits.n_classes, cfg.hidden)
    return lambda: image.build_image_model(
        cfg.arch, splits.x.shape[1:], splits.n_classes, dropout=cfg.dropout
    )


def _log_probs(logits: np.ndarray) -> np.ndarray:
    from scipy.special import log_softmax

    return log_softmax(logits, axis=-1)


def accuracies(
    shard_test: np.ndarray,
    y_test: np.ndarray,
    shard_meta: np.ndarray,
    y_meta: np.ndarray,
    sizes: np.ndarray,
    seed: int,
) -> dict[str, float]:
    """Test accuracy of every aggregation strategy, given the shards' logits on test and meta splits."""
    from sklearn.linear_model import LogisticRegression

    from privstudy.unlearning.sisa import aggregate, shard_weights

    probs = np.exp(_log_probs(shard_test))
    out = {}
    for how in ("vote", "average"):
        for weighting, suffix in (("uniform", ""), ("proportional", "_proportional")):
            pred = aggregate(probs, how, shard_weights(sizes, weighting))
            out[how + suffix] = float((pred == y_test).mean())

    def features(z: np.ndarray) -> np.ndarray:  # (S, n, C) -> (n, S*C) log-probabilities
        return np.transpose(_log_probs(z), (1, 0, 2)).reshape(z.shape[1], -1)

    if len(np.unique(y_meta)) < 2:
        out["stacked"] = float("nan")
    else:
        meta = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
        meta.fit(features(shard_meta), y_meta)
        out["stacked"] = float((meta.predict(features(shard_test)) == y_test).mean())
    return out


def score_rows(phase: str, logits: np.ndarray, splits: Splits, member, forgotten) -> pd.DataFrame:
    from privstudy.mia.scores import example_scores

    sc = example_scores(logits, splits.y)
    return pd.DataFrame(
        {
            "phase": phase,
            "example_id": np.arange(len(splits.y), dtype=np.int64),
            "member": member,
            "forgotten": forgotten,
            "label": splits.y.astype(np.int32),
            **{k: sc[k] for k in ("loss", "p_true", "lira", "entropy", "mentr", "correct")},
        }
    )


def request_batches(cfg: SisaConfig, order: np.ndarray) -> list[np.ndarray]:
    """The K requested training points (indices into the ensemble's training set), in batches."""
    from privstudy.unlearning.sisa import draw_requests

    rng = np.random.default_rng([cfg.seed, cfg.keep_seed, 0x72657175])
    positions = draw_requests(cfg.request_distribution, len(order), cfg.requests, rng)
    points = order[positions]
    size = cfg.requests_per_batch
    return [points[i : i + size] for i in range(0, len(points), size)]


def run(cfg: SisaConfig) -> dict[str, pd.DataFrame]:
    from privstudy.mia.keep import keep_matrix
    from privstudy.models.training import seed_everything
    from privstudy.unlearning import sisa
    from privstudy.unlearning.sisa_train import CheckpointStore, KerasTrainer, train_shard

    splits = study_splits(cfg)
    member = keep_matrix(cfg.n_models, cfg.pool_size, cfg.keep_seed)[cfg.seed]
    train_ids = np.flatnonzero(member)  # pool positions of the training points
    x, y = splits.x[train_ids], splits.y[train_ids]
    seed_everything(cfg.seed * 1000003 + cfg.keep_seed, cfg.deterministic)
    trainer = KerasTrainer(_builder(cfg, splits), cfg.batch_size, cfg.learning_rate)

    plan = sisa.SisaPlan.build(len(x), cfg.shards, cfg.slices, cfg.epochs, cfg.seed)
    order = np.concatenate([s.points for s in plan.shards])  # the shuffled training order
    schedule = plan.schedule()
    store = CheckpointStore()
    weights, train_s, train_work = [], 0.0, 0
    for s, shard in enumerate(plan.shards):
        w, cost = train_shard(shard, s, schedule, x, y, trainer, store, cfg.seed)
        weights.append(w)
        train_s += cost.seconds
        train_work += cost.point_epochs
    checkpoint_bytes = store.nbytes

    def evaluate(ws):
        return tuple(
            np.stack([trainer.logits(w, part) for w in ws])
            for part in (splits.x, splits.x_test, splits.x_meta)
        )

    pool_z, test_z, meta_z = evaluate(weights)
    acc_before = accuracies(test_z, splits.y_test, meta_z, splits.y_meta, plan.sizes(), cfg.seed)
    batches = request_batches(cfg, order)
    forgotten = np.zeros(len(splits.y), bool)  # pool positions of the requested points
    for b in batches:
        forgotten[train_ids[b]] = True
    # "before" marks the points that will be requested: they are members then
    scores = [score_rows("before", ensemble_logits(pool_z), splits, member, forgotten)]
    requests, shards_retrained = [], 0
    for i, points in enumerate(batches):
        start = time.perf_counter()
        jobs = sisa.delete(plan, points) if cfg.unlearning == "sisa" else []
        work = 0
        for job in jobs:
            weights[job.shard], cost = train_shard(
                plan.shards[job.shard], job.shard, schedule, x, y, trainer, store, cfg.seed, job.from_stage
            )
            work += cost.point_epochs
        store.keep_only(sh.key(r) for sh in plan.shards for r in range(1, cfg.slices + 1))
        shards_retrained += len(jobs)
        requests.append(
            {
                "batch": i,
                "n_points": len(points),
                "shards_retrained": len(jobs),
                "from_stages": ",".join(str(j.from_stage) for j in jobs),
                "point_epochs": work,
                "point_epochs_predicted": sisa.expected_cost(
                    len(x), cfg.shards, cfg.slices, cfg.epochs, len(points)
                )
                if cfg.request_distribution == "uniform"
                else float("nan"),
                "wall_s": time.perf_counter() - start,
            }
        )
    if batches:
        pool_z, test_z, meta_z = evaluate(weights)
    acc_after = accuracies(test_z, splits.y_test, meta_z, splits.y_meta, plan.sizes(), cfg.seed)
    scores.append(score_rows("after", ensemble_logits(pool_z), splits, member, forgotten))

    # the baseline: one model trained from scratch, e epochs, on the surviving points
    survivors = np.setdiff1d(np.arange(len(x)), np.flatnonzero(forgotten[train_ids]))
    mono = sisa.ShardPlan([survivors])
    w_mono, mono_cost = train_shard(
        mono, cfg.shards, [cfg.epochs], x, y, trainer, CheckpointStore(), cfg.seed + 7919
    )
    mono_pool = trainer.logits(w_mono, splits.x)
    scores.append(score_rows("retrain", mono_pool, splits, member, forgotten))
    acc_retrain = float((trainer.logits(w_mono, splits.x_test).argmax(1) == splits.y_test).mean())

    req = pd.DataFrame(requests, columns=REQUEST.names)
    served_work = req["point_epochs"].mean() if len(req) else float("nan")
    unlearnt = bool(len(req)) and cfg.unlearning == "sisa" and served_work > 0
    row = {
        "n_train": len(x),
        "n_classes": splits.n_classes,
        "n_params": int(sum(w.size for w in weights[0])),
        "stage_epochs": ",".join(map(str, schedule)),
        "train_s": train_s,
        "train_point_epochs": train_work,
        "checkpoints": cfg.shards * cfg.slices,
        "checkpoint_bytes": checkpoint_bytes,
        "checkpoint_peak_bytes": store.peak_nbytes,
        "model_bytes": int(sum(w.nbytes for w in weights[0])),
        "n_forgotten": int(forgotten.sum()),
        "n_batches": len(batches),
        "shards_retrained": shards_retrained,
        "unlearn_s": float(req["wall_s"].sum()) if len(req) else 0.0,
        "unlearn_point_epochs": int(req["point_epochs"].sum()) if len(req) else 0,
        "retrain_s": mono_cost.seconds,
        "retrain_point_epochs": mono_cost.point_epochs,
        "speedup_work": mono_cost.point_epochs / served_work if unlearnt else float("nan"),
        "speedup_predicted": sisa.predicted_speedup(
            len(x), cfg.shards, cfg.slices, cfg.epochs, cfg.requests_per_batch
        )
        if batches and cfg.request_distribution == "uniform" and cfg.unlearning == "sisa"
        else float("nan"),
        **{f"acc_{s}_before": acc_before[s] for s in STRATEGIES},
        **{f"acc_{s}_after": acc_after[s] for s in STRATEGIES},
        "acc_retrain": acc_retrain,
        "acc_shard_mean": float((test_z.argmax(2) == splits.y_test).mean()),
    }
    return {
        "sisa_trial": pd.DataFrame([row]),
        "sisa_request": req,
        "sisa_scores": pd.concat(scores, ignore_index=True),
    }


KIND = TrialKind(
    name="sisa",
    description="SISA: sharded, sliced training, unlearning requests against full retraining, and the "
    "membership scores of forgotten, retained and never-seen points.",
    config_cls=SisaConfig,
    run=run,
    tables=TABLES,
    uses_tensorflow=True,
    smoke={
        "dataset": "digits",
        "pool_size": 400,
        "n_models": 4,
        "test_size": 200,
        "meta_size": 100,
        "shards": 2,
        "slices": 2,
        "epochs": 4,
        "requests": 6,
        "request_batch": 3,
    },
)
