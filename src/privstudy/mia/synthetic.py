"""Synthetic `mia_train` studies: score shards of M models on N examples written without training.

For the attack stage's tests and its scale benchmark: a study folder exactly as `privstudy sweep` leaves
it (manifest, spec, trial records, `mia_scores` and `mia_model` shards), whose scores come from a known
model. Each example i has a difficulty mu_i ~ N(0, 2^2), a membership effect d_i = shift * |t_3| and a
heavy-tailed spread s_i = 0.3 + 0.5 |t_3| (t_3: Student's t with 3 degrees of freedom); model m's LiRA
statistic of example i in view v is mu_i + d_i [m trains on i] + s_i z_{miv} (views share part of the
noise: z = 0.8 e_mi + 0.6 e_miv). The logits put that statistic on the true class against a Dirichlet
split of the other classes, so every recorded column (loss, p_true, entropy, ...) is consistent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from privstudy.harness import results

SPEC = """\
name: {name}
description: synthetic scores (privstudy.mia.synthetic), no training
kind: mia_train
fixed:
  dataset: cifar10
  pool_size: {n}
  n_models: {m}
  record_probs: {probs}
  tta_mirror: {mirror}
  keep_seed: {keep_seed}
seeds: {m}
resources: {{cpus: 1, mem_gb: 4, timeout_min: 60}}
"""


def example_logits(
    m: int, n: int, keep: np.ndarray, n_classes: int, n_views: int, shift: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and each model's logits (M, V, N, C) under the module's score model."""
    rng = np.random.default_rng([seed, 0x5C0E])
    labels = rng.integers(0, n_classes, n)
    mu = rng.normal(0, 2, n)
    effect = shift * np.abs(rng.standard_t(3, n))
    spread = 0.3 + 0.5 * np.abs(rng.standard_t(3, n))
    split = rng.dirichlet(np.ones(n_classes - 1), n)  # how the other classes share the rest
    logits = np.empty((m, n_views, n, n_classes))
    rows = np.arange(n)
    other = np.ones((n, n_classes), bool)
    other[rows, labels] = False
    for j in range(m):
        common = rng.normal(size=n)
        for v in range(n_views):
            stat = mu + effect * keep[j] + spread * (0.8 * common + 0.6 * rng.normal(size=n))
            # z_y - logsumexp(z_other) = stat with z_other = log(split), whose logsumexp is 0
            z = np.empty((n, n_classes))
            z[other] = np.log(split).reshape(-1)
            z[rows, labels] = stat
            logits[j, v] = z
    return labels, logits


def write_study(
    root: Path,
    name: str,
    n_models: int,
    pool_size: int,
    n_classes: int = 10,
    n_views: int = 2,
    record_probs: bool = True,
    shift: float = 0.5,
    seed: int = 0,
    keep_seed: int = 0,
) -> Path:
    """Write a finished synthetic `mia_train` study under ``root``; return its folder."""
    from privstudy.harness.spec import load_study
    from privstudy.harness.sweep import study_dir_for, tasks_for, write_manifest
    from privstudy.harness.worker import _provenance, _write_record
    from privstudy.mia.keep import keep_matrix
    from privstudy.mia.scores import example_scores
    from privstudy.mia_runner import MODEL, SCORES

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    spec = root / f"{name}.yaml"
    spec.write_text(
        SPEC.format(
            name=name,
            n=pool_size,
            m=n_models,
            probs=str(record_probs).lower(),
            mirror=str(n_views > 1).lower(),
            keep_seed=keep_seed,
        )
    )
    study = load_study(spec)
    study_dir = study_dir_for(study, root)
    study_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(study, study_dir)
    keep = keep_matrix(n_models, pool_size, keep_seed)
    labels, logits = example_logits(n_models, pool_size, keep, n_classes, n_views, shift, seed)
    for task in tasks_for(study, study_dir, study.trials):
        j = int(task.config["seed"])
        sc = example_scores(logits[j, 0], labels)
        views = np.stack([example_scores(logits[j, v], labels)["lira"] for v in range(n_views)], axis=1)
        offsets = pa.array(np.arange(0, pool_size * n_views + 1, n_views, dtype=np.int32))
        width = n_classes if record_probs else 0
        probs = sc["probs"].astype(np.float32).reshape(-1) if record_probs else np.zeros(0, np.float32)
        cols = {
            "model_index": pa.array(np.full(pool_size, j, np.int32)),
            "source": pa.array(["pool"] * pool_size),
            "example_id": pa.array(np.arange(pool_size, dtype=np.int64)),
            "dataset_index": pa.array(np.arange(pool_size, dtype=np.int64)),
            "is_member": pa.array(keep[j]),
            "label": pa.array(labels.astype(np.int32)),
            "loss": pa.array(sc["loss"]),
            "p_true": pa.array(sc["p_true"]),
            "lira": pa.array(sc["lira"]),
            "entropy": pa.array(sc["entropy"]),
            "mentr": pa.array(sc["mentr"]),
            "correct": pa.array(sc["correct"].astype(bool)),
            "lira_views": pa.ListArray.from_arrays(offsets, pa.array(views.reshape(-1))),
            "probs": pa.ListArray.from_arrays(
                pa.array(np.arange(0, pool_size * width + 1, max(width, 1), dtype=np.int32))
                if width
                else pa.array(np.zeros(pool_size + 1, np.int32)),
                pa.array(probs, type=pa.float32()),
            ),
        }
        from privstudy.harness.config import from_mapping
        from privstudy.harness.registry import get_kind

        cfg = from_mapping(get_kind("mia_train").config_cls, task.config)
        prov = _provenance(task, cfg)
        arrays = [pa.repeat(pa.scalar(prov[f.name], type=f.type), pool_size) for f in results.PROVENANCE]
        arrays += [cols[f.name].cast(f.type) for f in SCORES]
        table = pa.Table.from_arrays(arrays, schema=results.table_schema(SCORES))
        results.write_atomic(results.shard_path(study_dir, "mia_scores", task.trial_id), table)
        correct = sc["correct"].astype(bool)
        model = {
            "model_index": j,
            "n_train": int(keep[j].sum()),
            "train_accuracy": float(correct[keep[j]].mean()),
            "test_accuracy": float(correct[~keep[j]].mean()),
            "train_loss": float(sc["loss"][keep[j]].mean()),
            "test_loss": float(sc["loss"][~keep[j]].mean()),
            "epochs_run": 0,
            "train_s": 0.0,
            "n_params": 0,
            "n_holdout": 0,
            "n_canaries_in": 0,
            **{c: np.nan for c in ("eps_rdp_epoch", "eps_rdp_poisson", "eps_pld_epoch", "eps_pld_poisson")},
            "dp_delta": np.nan,
        }
        import pandas as pd

        results.write_atomic(
            results.shard_path(study_dir, "mia_model", task.trial_id),
            results.to_arrow(pd.DataFrame([model]), MODEL, prov, "mia_model"),
        )
        _write_record(task, cfg, prov, {"mia_scores": pool_size, "mia_model": 1}, "cpu")
    return study_dir
