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

from privstudy.harness.config import TrialConfig, check, param
from privstudy.harness.registry import TrialKind

Dataset = Literal["cifar10", "cifar100", "fashion_mnist", "digits"]


@dataclasses.dataclass(frozen=True)
class MiaTrainConfig(TrialConfig):
    """Model ``seed`` (0..n_models-1) of a membership-inference study."""

    dataset: Dataset = param("cifar10", "Image dataset; its train and test images form the candidate pool.")
    data_dir: str = param("", "Folder holding the dataset (see privstudy.dataloader); empty: the standard "
                              "places ($PRIVSTUDY_DATA, Keras' cache).")
    pool_size: int = param(10000, "Examples in the study's pool (the N of the keep matrix).")
    pool_seed: int = param(0, "Seed of the pool sample; trials of one study share it.")
    n_models: int = param(16, "Models in the study (the M of the keep matrix); even. Seeds are 0..M-1.")
    keep_seed: int = param(0, "Seed of the keep matrix; trials of one study share it.")
    arch: Literal["cnn", "mlp"] = param("cnn", "Model: the published CNN or an MLP.")
    epochs: int = param(20, "Training epochs.")
    batch_size: int = param(128, "Training batch size.")
    learning_rate: float = param(1e-3, "Adam learning rate.")
    train_augment: bool = param(False, "Random mirror and 4-pixel shifts while training.")
    tta_mirror: bool = param(False, "Also score the mirrored image (a second view for LiRA).")
    record_probs: bool = param(True, "Record every example's probability vector (the shadow attack needs it).")
    external_dataset: Optional[Dataset] = param(None, "Dataset of external examples (same image shape) that "
                                                      "no model trains on; null: none.")
    external_size: int = param(0, "External examples scored by every model.")
    null_membership: bool = param(False, "Train on an independent random half of the pool instead of the "
                                         "recorded IN set: members the model never saw (null test).")
    deterministic: bool = param(False, "TensorFlow deterministic ops (slower; exact reruns on one machine).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.pool_size >= 4, "pool_size", f"must be >= 4, got {self.pool_size}")
        check(self.n_models >= 2 and self.n_models % 2 == 0, "n_models",
              f"must be even and >= 2 (every example IN for half of the models), got {self.n_models}")
        check(self.seed < self.n_models, "seed",
              f"is the model index and must be below n_models={self.n_models}, got {self.seed}; "
              f"use `seeds: {self.n_models}`")
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        check(self.external_size >= 0, "external_size", f"must be >= 0, got {self.external_size}")
        check((self.external_dataset is None) == (self.external_size == 0), "external_size",
              "set external_dataset and external_size > 0 together")


SCORES = pa.schema([
    ("model_index", pa.int32()),
    ("source", pa.string()),  # "pool" or "external"
    ("example_id", pa.int64()),  # position in the pool (or in the external sample)
    ("dataset_index", pa.int64()),  # index into the dataset's train + test images
    ("is_member", pa.bool_()),
    ("label", pa.int32()),
    ("loss", pa.float64()),
    ("p_true", pa.float64()),
    ("lira", pa.float64()),  # log p_y - log(1 - p_y), from the logits
    ("entropy", pa.float64()),
    ("mentr", pa.float64()),  # modified entropy (Song and Mittal)
    ("correct", pa.bool_()),
    ("lira_views", pa.list_(pa.float64())),  # the LiRA statistic per test-time view (view 0: as is)
    ("probs", pa.list_(pa.float32())),  # empty unless record_probs
])

MODEL = pa.schema([
    ("model_index", pa.int32()),
    ("n_train", pa.int64()),
    ("train_accuracy", pa.float64()),
    ("test_accuracy", pa.float64()),  # on the pool examples the model did not train on
    ("train_loss", pa.float64()),
    ("test_loss", pa.float64()),
    ("epochs_run", pa.int32()),
    ("train_seconds", pa.float64()),
    ("n_params", pa.int64()),
])

TABLES = {"mia_scores": SCORES, "mia_model": MODEL}


def study_pool(cfg: MiaTrainConfig):
    """(images, labels, dataset indices, label names) of the study's pool."""
    from privstudy.dataloader import load_images
    from privstudy.mia.keep import pool_indices

    data = load_images(cfg.dataset, cfg.data_dir or None)
    x, y = data.pool()
    if cfg.pool_size > len(x):
        raise ValueError(f"pool_size={cfg.pool_size} exceeds the {len(x)} images of {cfg.dataset}")
    idx = pool_indices(len(x), cfg.pool_size, cfg.pool_seed)
    return x[idx], y[idx], idx, data


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


def _score_rows(model, xs: np.ndarray, ys: np.ndarray, views: list[np.ndarray], record_probs: bool):
    from privstudy.mia.scores import example_scores
    from privstudy.nets import logits_of

    base = example_scores(logits_of(model, views[0]), ys)
    extra = [example_scores(logits_of(model, v), ys)["lira"] for v in views[1:]]
    lira_views = np.stack([base["lira"], *extra], axis=1)
    probs = base["probs"].astype(np.float32) if record_probs else np.zeros((len(ys), 0), np.float32)
    return base, lira_views, probs


def run(cfg: MiaTrainConfig) -> dict[str, pd.DataFrame]:
    """Train model ``cfg.seed`` on its IN examples; score the pool and the external examples."""
    from privstudy.dataloader import load_images
    from privstudy.nets import build_image_model, channel_stats, fit, seed_everything, standardise

    x, y, idx, data = study_pool(cfg)
    member, train = training_mask(cfg)
    seed_everything(cfg.seed * 1000003 + cfg.keep_seed, cfg.deterministic)
    mean, std = channel_stats(x[train])
    xs = standardise(x, mean, std)
    model = build_image_model(cfg.arch, xs.shape[1:], data.n_classes)
    fr = fit(model, xs[train], y[train], cfg.epochs, cfg.batch_size, cfg.learning_rate,
             augment=cfg.train_augment, seed=cfg.seed)

    def views_of(images: np.ndarray) -> list[np.ndarray]:
        return [images, images[:, :, ::-1, :]] if cfg.tta_mirror else [images]

    base, lira_views, probs = _score_rows(model, xs, y, views_of(xs), cfg.record_probs)
    frames = [_frame(cfg, "pool", np.arange(len(y)), idx, member, y, base, lira_views, probs)]
    if cfg.external_dataset is not None:
        ext = load_images(cfg.external_dataset, cfg.data_dir or None)
        ex, ey = ext.pool()
        if ex.shape[1:] != x.shape[1:]:
            raise ValueError(f"external_dataset {cfg.external_dataset} has images {ex.shape[1:]}, "
                             f"the pool {x.shape[1:]}; pick a dataset of the same shape")
        if cfg.external_size > len(ex):
            raise ValueError(f"external_size={cfg.external_size} exceeds the {len(ex)} images of "
                             f"{cfg.external_dataset}")
        eidx = np.sort(np.random.default_rng([cfg.pool_seed, 0x657874]).permutation(len(ex))[:cfg.external_size])
        exs = standardise(ex[eidx], mean, std)
        # External labels are of another label set: scored against the model's own top class.
        from privstudy.nets import logits_of
        elabels = logits_of(model, exs).argmax(axis=1)
        eb, elv, ep = _score_rows(model, exs, elabels, views_of(exs), cfg.record_probs)
        frames.append(_frame(cfg, "external", np.arange(len(eidx)), eidx, np.zeros(len(eidx), bool), elabels,
                             eb, elv, ep))
    scores = pd.concat(frames, ignore_index=True)
    out = ~train
    model_row = pd.DataFrame([{
        "model_index": cfg.seed, "n_train": int(train.sum()),
        "train_accuracy": float(base["correct"][train].mean()),
        "test_accuracy": float(base["correct"][out].mean()) if out.any() else float("nan"),
        "train_loss": float(base["loss"][train].mean()),
        "test_loss": float(base["loss"][out].mean()) if out.any() else float("nan"),
        "epochs_run": fr.epochs_run, "train_seconds": fr.seconds, "n_params": int(model.count_params()),
    }])
    return {"mia_scores": scores, "mia_model": model_row}


def _frame(cfg, source, example_id, dataset_index, member, labels, base, lira_views, probs) -> pd.DataFrame:
    return pd.DataFrame({
        "model_index": np.full(len(labels), cfg.seed, np.int32), "source": source,
        "example_id": example_id.astype(np.int64), "dataset_index": np.asarray(dataset_index, np.int64),
        "is_member": np.asarray(member, bool), "label": np.asarray(labels, np.int32),
        "loss": base["loss"], "p_true": base["p_true"], "lira": base["lira"], "entropy": base["entropy"],
        "mentr": base["mentr"], "correct": base["correct"],
        "lira_views": list(lira_views), "probs": list(probs),
    })


KIND = TrialKind(
    name="mia_train",
    description="Membership inference: train model m of M on its half of the pool, record per-example scores.",
    config_cls=MiaTrainConfig, run=run, tables=TABLES, uses_tensorflow=True)
