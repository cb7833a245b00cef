"""Benchmark membership inference: the cost of one model trial, and of the attack stage as the number
of models M grows (8, 16, 32), measured side by side in one run.

    python benchmarks/bench_mia.py [--pool 10000] [--models 8 16 32] [--out benchmarks/out/mia.json]

The model trial is one `mia_train` MLP on the built-in digits (or on CIFAR-10 with --data-dir). The
attack stage runs on recorded-score sets of M models over the pool with a realistic signal (per-example
Gaussian IN / OUT statistics), so that its cost is measured without training M models first.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from common import write_result

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def model_trial(data_dir: str | None) -> dict:
    from privstudy.harness.config import from_mapping
    from privstudy.mia_runner import MiaTrainConfig, run

    fixed = (
        {"dataset": "cifar10", "data_dir": data_dir, "pool_size": 10000, "epochs": 10}
        if data_dir
        else {"dataset": "digits", "pool_size": 1797, "epochs": 30, "batch_size": 32}
    )
    cfg = from_mapping(MiaTrainConfig, {**fixed, "n_models": 8, "arch": "mlp", "seed": 0})
    t0 = time.perf_counter()
    out = run(cfg)
    return {
        **fixed,
        "seconds": time.perf_counter() - t0,
        "train_s": float(out["mia_model"]["train_s"].iloc[0]),
    }


def synthetic(m: int, n: int, seed: int = 0):
    from privstudy.mia.attacks import ScoreSet
    from privstudy.mia.keep import keep_matrix

    rng = np.random.default_rng(seed)
    keep = keep_matrix(m, n, seed)
    mu_out = rng.normal(1.5, 1.5, n)
    stat = np.where(keep, mu_out + rng.uniform(0.2, 2.0, n), mu_out) + rng.normal(0, 0.7, (m, n))
    labels = rng.integers(0, 10, n)
    logits = rng.normal(0, 1, (m, n, 10))
    logits[np.arange(m)[:, None], np.arange(n)[None, :], labels[None, :]] = stat + np.log(9)
    return ScoreSet.from_logits(keep, logits, labels)


def attack_stage(m: int, n: int) -> dict:
    from privstudy.mia.attacks import available_attacks, run_attack
    from privstudy.mia.metrics import attack_metrics

    data = synthetic(m, n)
    per_attack = {}
    for name in available_attacks(data):
        t0 = time.perf_counter()
        run_attack(name, data, 0)
        attack_metrics(run_attack(name, data, 0), data.keep[0])
        per_attack[name] = (time.perf_counter() - t0) / 2
    all_targets = sum(v * (min(m, 8) if k == "shadow" else m) for k, v in per_attack.items())
    return {
        "models": m,
        "pool": n,
        "seconds_per_target": per_attack,
        "estimated_seconds_all_targets": all_targets,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--pool", type=int, default=10000)
    p.add_argument("--models", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--out", default="benchmarks/out/mia.json")
    a = p.parse_args(argv)
    result = {
        "model_trial": model_trial(a.data_dir),
        "attack_stage": [attack_stage(m, a.pool) for m in a.models],
    }
    write_result(result, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
