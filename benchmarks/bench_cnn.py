"""Benchmark the image pipeline: one real-data trial per phase, and blockwise nearest neighbours
against a naive full-matrix computation (time and peak memory, side by side in one run).

    python benchmarks/bench_cnn.py [--data-dir ../shared/data/cifar10] [--pool 5000] [--epochs 2]
                                   [--nn-queries 20000 --nn-refs 10000] [--out benchmarks/out/cnn.json]

Without CIFAR-10 (no --data-dir and none in the standard places) the trial runs on the built-in digits.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

from common import write_result

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def trial_phases(data_dir: str | None, pool: int, epochs: int) -> dict:
    from privstudy.data.images import find
    from privstudy.data.locate import DataMissing
    from privstudy.harness.config import from_mapping
    from privstudy.runner import CnnSimilarityConfig, run

    dataset = "cifar10"
    try:
        if find("cifar10", data_dir) is None:
            raise DataMissing("no cifar10")
    except DataMissing:
        dataset, data_dir, pool = "digits", None, 0
    cfg = from_mapping(
        CnnSimilarityConfig,
        {
            "dataset": dataset,
            "data_dir": data_dir or "",
            "pool_size": pool,
            "epochs": epochs,
            "patience": 0,
            "seed": 0,
        },
    )
    start = time.perf_counter()
    out = run(cfg)
    total = time.perf_counter() - start
    m = out["cnn_model"].iloc[0]
    return {
        "dataset": dataset,
        "pool": int(m["n_pool"]),
        "epochs": int(m["epochs_run"]),
        "load_s": float(m["load_s"]),
        "train_s_per_epoch": float(m["train_s"]) / int(m["epochs_run"]),
        "features_s": float(m["features_s"]),
        "nn_s": float(m["nn_s"]),
        "total_s": total,
        "device": m["device"],
    }


def naive_nearest(q: np.ndarray, r: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The full q x r cosine matrix at once (what the published code did with sklearn)."""
    from privstudy.similarity.neighbours import angular, unit_rows

    sim = unit_rows(q) @ unit_rows(r).T
    rows = np.flatnonzero(own >= 0)
    sim[rows, own[rows]] = -np.inf
    idx = sim.argmax(axis=1)
    return angular(sim[np.arange(len(q)), idx]), idx


def nn_comparison(n_queries: int, n_refs: int, block: int) -> dict:
    from privstudy.similarity.neighbours import nearest_angular

    rng = np.random.default_rng(0)
    q = rng.normal(size=(n_queries, 128)).astype(np.float32)
    r = q[:n_refs]
    own = np.full(n_queries, -1)
    own[:n_refs] = np.arange(n_refs)
    out = {}
    for name, fn in (
        ("blockwise", lambda: nearest_angular(q, r, own, block=block)),
        ("naive", lambda: naive_nearest(q, r, own)),
    ):
        fn()  # warm-up
        tracemalloc.start()
        t0 = time.perf_counter()
        d, i = fn()
        secs = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[name] = {"seconds": secs, "peak_mb": peak / 2**20, "queries_per_s": n_queries / secs, "dist": d}
    agree = float(np.mean(np.abs(out["blockwise"].pop("dist") - out["naive"].pop("dist")) < 1e-6))
    return {
        "n_queries": n_queries,
        "n_refs": n_refs,
        "block": block,
        **out,
        "agreement": agree,
        "speed_ratio_blockwise_over_naive": out["naive"]["seconds"] / out["blockwise"]["seconds"],
        "memory_ratio_naive_over_blockwise": out["naive"]["peak_mb"] / out["blockwise"]["peak_mb"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--pool", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--nn-queries", type=int, default=20000)
    p.add_argument("--nn-refs", type=int, default=10000)
    p.add_argument("--block", type=int, default=2048)
    p.add_argument("--out", default="benchmarks/out/cnn.json")
    a = p.parse_args(argv)
    result = {
        "trial": trial_phases(a.data_dir, a.pool, a.epochs),
        "nearest_neighbours": nn_comparison(a.nn_queries, a.nn_refs, a.block),
    }
    write_result(result, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
