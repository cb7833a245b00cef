"""Trial kind `cnn_similarity`: an image model's confidence on each point vs its distance to the training set.

Faithful to the published `runner.py` defaults: CIFAR-10, a pool of all 60,000 train and test images,
a stratified 50/50 member / non-member split seeded by the trial number, per-channel standardisation
with the members' statistics, the published CNN (Adam 1e-3, batch 100, up to 100 epochs, early
stopping on validation loss with min_delta 1e-3, patience 10, best weights restored), then for every
pool point its confidence and the normalised angular distance arccos(cos_sim)/pi from its 128-d
feature (layer ``features``) to the nearest training point's (for members: the nearest *other* one).

Two published bugs are not reproduced: query confidences and features were computed on
unstandardised images while training features came from standardised ones (here every point goes
through the same preprocessing), and validation on the non-members let them steer model selection
(``validation: nonmembers`` keeps that choice available, ``members`` holds out a slice of the members).

Run it as a study (`privstudy sweep jobs/cnn_similarity.yaml`) or with the published flags:
``python -m privstudy.runner --exp_name cifar_cnn --num_trials 100``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from privstudy.data.images import DATASET_SIZES, IMAGE_DATASETS
from privstudy.harness.config import TrialConfig, check, param
from privstudy.harness.executors import EXECUTOR_CHOICES
from privstudy.harness.registry import TrialKind
from privstudy.models.image import ARCHS
from privstudy.similarity import confidence as similarity
from privstudy.stats import ranks as stats

Dataset = Literal[IMAGE_DATASETS]


@dataclasses.dataclass(frozen=True)
class CnnSimilarityConfig(TrialConfig):
    """Trial ``seed`` of the image confidence-similarity study."""

    dataset: Dataset = param("cifar10", "Image dataset; its train and test images form the pool.")
    data_dir: str = param("", "Folder holding the dataset; empty: the standard places.")
    pool_size: int = param(
        0,
        "Pool points drawn (stratified, seeded by pool_seed) from train + test; "
        "0: all of them (published: 60,000).",
    )
    pool_seed: int = param(0, "Seed of the pool sample when pool_size > 0.")
    arch: Literal[ARCHS] = param("cnn", "Model: the published CNN or an MLP.")
    epochs: int = param(100, "Most training epochs.")
    batch_size: int = param(100, "Training batch size.")
    learning_rate: float = param(1e-3, "Adam learning rate.")
    patience: int = param(10, "Early-stopping patience in epochs (validation loss); 0: no early stopping.")
    min_delta: float = param(1e-3, "Smallest validation-loss improvement that resets the patience.")
    validation: Literal["nonmembers", "members"] = param(
        "nonmembers",
        "Early-stopping validation set: the non-members (published) or a held-out slice of "
        "the members (then not trained on).",
    )
    val_fraction: float = param(0.1, "Share of the members held out when validation is `members`.")
    same_class: bool = param(False, "Nearest training point of the point's own class only.")
    pixel_distance: bool = param(
        False, "Also the angular distance to the nearest training point in (standardised) pixel space."
    )
    percent: float = param(5.0, "Size of the top and bottom confidence sets, in percent of the pool.")
    n_bins: int = param(10, "Equal-count confidence bins (10 = deciles).")
    nn_block: int = param(
        2048, "Query points per nearest-neighbour block (memory: 4 x block x members bytes)."
    )
    deterministic: bool = param(False, "TensorFlow deterministic ops.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.pool_size == 0 or self.pool_size >= 20,
            "pool_size",
            f"must be 0 (all) or >= 20, got {self.pool_size}",
        )
        check(
            self.pool_size <= DATASET_SIZES[self.dataset],
            "pool_size",
            f"exceeds the {DATASET_SIZES[self.dataset]} images of {self.dataset}, got {self.pool_size}",
        )
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.patience >= 0, "patience", f"must be >= 0, got {self.patience}")
        check(0 < self.val_fraction < 0.5, "val_fraction", f"must be in (0, 0.5), got {self.val_fraction}")
        check(0 < self.percent <= 50, "percent", f"must be in (0, 50], got {self.percent}")
        check(self.n_bins >= 2, "n_bins", f"must be >= 2, got {self.n_bins}")
        check(self.nn_block >= 1, "nn_block", f"must be >= 1, got {self.nn_block}")


POINTS = pa.schema(
    [
        ("point_id", pa.int64()),  # index into the dataset's train + test images
        ("is_member", pa.bool_()),
        ("is_validation", pa.bool_()),  # held out from the members for early stopping
        ("label", pa.int32()),
        ("predicted", pa.int32()),
        ("confidence", pa.float64()),  # max softmax probability
        ("p_true", pa.float64()),
        ("loss", pa.float64()),
        ("nn_distance", pa.float64()),  # normalised angular distance to the nearest training feature
        ("nn_point_id", pa.int64()),
        ("nn_pixel_distance", pa.float64()),  # the same in pixel space (NaN unless pixel_distance)
    ]
)
EXTREMES = pa.schema(
    [
        ("subset", pa.string()),
        ("rank", pa.int64()),
        ("point_id", pa.int64()),
        ("is_member", pa.bool_()),
        ("label", pa.int32()),
        ("confidence", pa.float64()),
        ("nn_distance", pa.float64()),
    ]
)
METRICS = pa.schema([("metric", pa.string()), ("value", pa.float64())])
BINS = pa.schema(
    [
        ("bin", pa.int64()),
        ("n_points", pa.int64()),
        ("confidence_mean", pa.float64()),
        ("member_nn_distance_mean", pa.float64()),
        ("nonmember_nn_distance_mean", pa.float64()),
        ("member_share", pa.float64()),
    ]
)
MODEL = pa.schema(
    [
        ("n_pool", pa.int64()),
        ("n_train", pa.int64()),
        ("n_validation", pa.int64()),
        ("train_accuracy", pa.float64()),
        ("nonmember_accuracy", pa.float64()),
        ("epochs_run", pa.int32()),
        ("best_epoch", pa.int32()),
        ("load_s", pa.float64()),
        ("train_s", pa.float64()),
        ("features_s", pa.float64()),
        ("nn_s", pa.float64()),
        ("device", pa.string()),
    ]
)
TABLES = {
    "cnn_points": POINTS,
    "cnn_extremes": EXTREMES,
    "cnn_metrics": METRICS,
    "cnn_bins": BINS,
    "cnn_model": MODEL,
}


def split_members(labels: np.ndarray, seed: int) -> np.ndarray:
    """Stratified 50/50 member mask, seeded by the trial number (sklearn's train_test_split, as published)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    members, _ = train_test_split(idx, test_size=0.5, stratify=labels, random_state=seed)
    mask = np.zeros(len(labels), bool)
    mask[members] = True
    return mask


def select_pool(n: int, labels: np.ndarray, cfg: CnnSimilarityConfig) -> np.ndarray:
    """Indices of the pool: everything, or a stratified sample of pool_size."""
    if cfg.pool_size == 0 or cfg.pool_size >= n:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(
        np.arange(n), train_size=cfg.pool_size, stratify=labels, random_state=cfg.pool_seed
    )
    return np.sort(keep)


def standardised_pool(x: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Every pool image standardised per channel with the members' statistics (as published).

    Args:
        x: (n, h, w, c) uint8 pool images.
        member: (n,) the members (the training set and any validation slice of it).

    Returns:
        (n, h, w, c) float32.
    """
    from privstudy.models.image import channel_stats, standardise

    mean, std = channel_stats(x[member])
    return standardise(x, mean, std)


def run(cfg: CnnSimilarityConfig) -> dict[str, pd.DataFrame]:
    """Train on the members, then measure every pool point's confidence and nearest-training distance."""
    from privstudy.data.images import load_images
    from privstudy.harness.tf_setup import device_name
    from privstudy.mia.scores import example_scores
    from privstudy.models.image import build_image_model
    from privstudy.models.training import FitOptions, features_of, fit, logits_of, seed_everything
    from privstudy.similarity.neighbours import nearest_angular

    t0 = time.perf_counter()
    data = load_images(cfg.dataset, cfg.data_dir or None)
    x_all, y_all = data.pool()
    pool = select_pool(len(x_all), y_all, cfg)
    x, y = x_all[pool], y_all[pool]
    load_s = time.perf_counter() - t0

    member = split_members(y, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    validation = np.zeros(len(y), bool)
    if cfg.validation == "members" and cfg.patience > 0:
        mem_idx = np.flatnonzero(member)
        validation[
            rng.choice(mem_idx, max(1, int(round(cfg.val_fraction * len(mem_idx)))), replace=False)
        ] = True
    train = member & ~validation
    seed_everything(cfg.seed, cfg.deterministic)
    xs = standardised_pool(x, member)
    model = build_image_model(cfg.arch, xs.shape[1:], data.n_classes)
    val = None
    if cfg.patience > 0:
        vmask = validation if cfg.validation == "members" else ~member
        val = (xs[vmask], y[vmask])
    opts = FitOptions(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        patience=cfg.patience if cfg.patience > 0 else None,
        min_delta=cfg.min_delta,
    )
    fr = fit(model, xs[train], y[train], opts, validation=val)

    t1 = time.perf_counter()
    sc = example_scores(logits_of(model, xs), y)
    feats = features_of(model, xs)
    features_s = time.perf_counter() - t1

    t2 = time.perf_counter()
    device = device_name()
    use_gpu = device.startswith("GPU")
    train_idx = np.flatnonzero(train)
    row_in_train = np.full(len(y), -1, np.int64)
    row_in_train[train_idx] = np.arange(len(train_idx))
    labels_kw = {"query_labels": y, "ref_labels": y[train_idx]} if cfg.same_class else {}
    dist, nn = nearest_angular(
        feats, feats[train_idx], row_in_train, block=cfg.nn_block, use_gpu=use_gpu, **labels_kw
    )
    pix = np.full(len(y), np.nan)
    if cfg.pixel_distance:
        pix, _ = nearest_angular(
            xs.reshape(len(xs), -1),
            xs[train_idx].reshape(len(train_idx), -1),
            row_in_train,
            block=cfg.nn_block,
            use_gpu=use_gpu,
            **labels_kw,
        )
    nn_s = time.perf_counter() - t2

    probs = sc["probs"]
    conf = probs.max(axis=1)
    point_id = pool.astype(np.int64)
    nn_point = np.where(nn >= 0, point_id[train_idx][np.maximum(nn, 0)], -1)
    points = pd.DataFrame(
        {
            "point_id": point_id,
            "is_member": member,
            "is_validation": validation,
            "label": y.astype(np.int32),
            "predicted": probs.argmax(axis=1).astype(np.int32),
            "confidence": conf,
            "p_true": sc["p_true"],
            "loss": sc["loss"],
            "nn_distance": dist,
            "nn_point_id": nn_point,
            "nn_pixel_distance": pix,
        }
    )

    # Summaries over the points that have a nearest training point (all, unless same_class finds none).
    ok = np.isfinite(dist)
    order = similarity.confidence_order(conf, sc["p_true"], point_id)
    k = similarity.set_size(len(y), cfg.percent)
    bottom, top = similarity.extreme_sets(order, k)
    extremes = pd.concat(
        [
            pd.DataFrame(
                {
                    "subset": name,
                    "rank": np.arange(k),
                    "point_id": point_id[idx],
                    "is_member": member[idx],
                    "label": y[idx].astype(np.int32),
                    "confidence": conf[idx],
                    "nn_distance": dist[idx],
                }
            )
            for name, idx in (("bottom", bottom), ("top", top))
        ],
        ignore_index=True,
    )
    d = np.where(ok, dist, np.nan)
    nonmem = ~member & ok
    mem_ok = member & ok & ~validation
    values = {
        "spearman_confidence_nn_distance": stats.spearman(conf[ok], dist[ok]),
        "spearman_confidence_nn_distance_members": stats.spearman(conf[mem_ok], dist[mem_ok]),
        "spearman_confidence_nn_distance_nonmembers": stats.spearman(conf[nonmem], dist[nonmem]),
        "auc_confidence_membership": stats.auc(conf, member),
        "auc_nn_distance_membership": stats.auc(-np.nan_to_num(dist, posinf=2.0), member),
        "member_confidence_mean": float(conf[member].mean()),
        "nonmember_confidence_mean": float(conf[~member].mean()),
        "member_nn_distance_mean": float(np.nanmean(d[mem_ok])),
        "nonmember_nn_distance_mean": float(np.nanmean(d[nonmem])),
        "top_nn_distance_mean": float(np.nanmean(d[top])),
        "bottom_nn_distance_mean": float(np.nanmean(d[bottom])),
        "top_member_share": float(member[top].mean()),
        "bottom_member_share": float(member[bottom].mean()),
        "set_size": float(k),
    }
    metrics = pd.DataFrame({"metric": list(values), "value": list(values.values())})
    bin_of = similarity.bins_by_rank(order, cfg.n_bins)
    means = similarity.binned_means(
        bin_of,
        cfg.n_bins,
        confidence_mean=conf,
        member_nn_distance_mean=np.where(mem_ok, d, np.nan),
        nonmember_nn_distance_mean=np.where(nonmem, d, np.nan),
        member_share=member.astype(np.float64),
    )
    bins = pd.DataFrame({"bin": np.arange(1, cfg.n_bins + 1), **means})
    model_row = pd.DataFrame(
        [
            {
                "n_pool": len(y),
                "n_train": int(train.sum()),
                "n_validation": int(validation.sum()),
                "train_accuracy": float(sc["correct"][train].mean()),
                "nonmember_accuracy": float(sc["correct"][~member].mean()),
                "epochs_run": fr.epochs_run,
                "best_epoch": fr.best_epoch,
                "load_s": load_s,
                "train_s": fr.train_s,
                "features_s": features_s,
                "nn_s": nn_s,
                "device": device,
            }
        ]
    )
    return {
        "cnn_points": points,
        "cnn_extremes": extremes,
        "cnn_metrics": metrics,
        "cnn_bins": bins,
        "cnn_model": model_row,
    }


KIND = TrialKind(
    name="cnn_similarity",
    description="Image model (CNN on CIFAR-10 as published): confidence vs angular distance to the nearest "
    "training point in feature space.",
    config_cls=CnnSimilarityConfig,
    run=run,
    tables=TABLES,
    uses_tensorflow=True,
    smoke={
        "dataset": "digits",
        "pool_size": 200,
        "arch": "mlp",
        "epochs": 2,
        "patience": 1,
        "deterministic": True,
    },
)


def build_parser() -> argparse.ArgumentParser:
    """The published flags of runner.py, plus --results and --executor."""
    d = CnnSimilarityConfig()
    p = argparse.ArgumentParser(
        prog="python -m privstudy.runner",
        description="Run the CNN confidence-similarity study with the published flags; "
        "results go to RESULTS/EXP_NAME (aggregate with analysis/aggregate.py).",
    )
    p.add_argument("--exp_name", required=True, help="study name: the folder under --results")
    p.add_argument("--dataset", default=d.dataset, choices=IMAGE_DATASETS)
    p.add_argument("--model", default=d.arch, choices=ARCHS, help="architecture")
    p.add_argument("--num_trials", type=int, default=100, help="trials (seeds 0..N-1)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch_size", type=int, default=d.batch_size)
    p.add_argument("--percent", type=float, default=d.percent)
    p.add_argument("--same_class", choices=["true", "false"], default="false")
    p.add_argument("--data_dir", default="", help="where the dataset is (default: the standard places)")
    p.add_argument("--results", default="results", help="results root")
    p.add_argument("--executor", default="local", choices=EXECUTOR_CHOICES)
    return p


def main(argv: list[str] | None = None) -> int:
    """Build a one-experiment study from the published flags and sweep it."""
    from pathlib import Path

    from privstudy.harness.flags import sweep_from_flags

    a = build_parser().parse_args(argv)
    raw = {
        "name": a.exp_name,
        "kind": "cnn_similarity",
        "seeds": a.num_trials,
        "fixed": {
            "dataset": a.dataset,
            "arch": a.model,
            "epochs": a.epochs,
            "batch_size": a.batch_size,
            "percent": a.percent,
            "same_class": a.same_class == "true",
            "data_dir": a.data_dir,
        },
    }
    return sweep_from_flags(raw, "runner", Path(a.results), a.executor)


if __name__ == "__main__":
    raise SystemExit(main())
