"""Benchmark SISA's unlearning: measured speed-up of single and batched requests over full retraining,
next to the cost model's prediction, and accuracy against S = 1, side by side in one run.

    python benchmarks/bench_sisa.py [--data-dir ../shared/data/location30] [--out benchmarks/out/sisa.json]

For each dataset (the built-in digits with the image MLP; Location-30 with the tabular MLP when its
folder is given or found, as distributed and re-labelled into 2 k-means classes as the SISA reference
code's example does with Purchase) and each (S, R), one `sisa` trial serves K uniform requests one by one and
another serves them in batches of 10. Reported per row: wall seconds per request (or batch), the full
retrain's seconds (one model, e epochs, on the surviving points), the measured speed-ups in wall time
and in point-epochs, the prediction ((2R + 1)/(3R) N/S e per request; the batch formula per batch), and
the test accuracy of the label vote and of the monolithic model. Absolute times are noise on a shared
machine; the ratios are measured within one trial, one after the other.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import write_result

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "location30"

DATASETS = {
    "digits": {"dataset": "digits", "arch": "mlp", "pool_size": 1200, "test_size": 297, "meta_size": 300,
               "epochs": 20, "batch_size": 32},
    "location30": {"dataset": "location30", "arch": "tabular", "hidden": (128,), "pool_size": 4000,
                   "test_size": 510, "meta_size": 500, "epochs": 30, "batch_size": 32},
}  # fmt: skip
# The SISA reference code's own example re-labels Purchase into 2 k-means classes; the same on Location-30.
DATASETS["location30_k2"] = {**DATASETS["location30"], "tabular_classes": 2}


def one(fixed: dict, shards: int, slices: int, requests: int, batch: int) -> dict:
    from privstudy.harness.config import from_mapping
    from privstudy.sisa_runner import SisaConfig, run

    cfg = from_mapping(
        SisaConfig,
        {**fixed, "n_models": 2, "seed": 0, "shards": shards, "slices": slices, "requests": requests,
         "request_batch": batch},
    )  # fmt: skip
    t0 = time.perf_counter()
    out = run(cfg)
    t = out["sisa_trial"].iloc[0]
    per_batch = t["unlearn_s"] / t["n_batches"]
    return {
        "dataset": fixed["dataset"]
        + (f" ({fixed['tabular_classes']} classes)" if "tabular_classes" in fixed else ""),
        "shards": shards,
        "slices": slices,
        "requests": requests,
        "request_batch": batch,
        "n_train": int(t["n_train"]),
        "s_per_batch": per_batch,
        "s_full_retrain": t["retrain_s"],
        "speedup_time": t["retrain_s"] / per_batch,
        "speedup_work": t["speedup_work"],
        "speedup_predicted": t["speedup_predicted"],
        "time_vs_prediction": t["retrain_s"] / per_batch / t["speedup_predicted"],
        "acc_vote": t["acc_vote_after"],
        "acc_stacked": t["acc_stacked_after"],
        "acc_s1": t["acc_retrain"],
        "trial_s": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder with dataset_location.tgz (Location-30)")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--grid", default="5x1,5x5,5x10,10x1,10x5", help="SxR pairs, comma-separated")
    parser.add_argument("--out", default="benchmarks/out/sisa.json")
    args = parser.parse_args()
    data_dir = args.data_dir or (str(SHARED) if SHARED.is_dir() else None)
    sets = {"digits": DATASETS["digits"]}
    if data_dir:
        for name in ("location30", "location30_k2"):
            sets[name] = {**DATASETS[name], "data_dir": data_dir}
    grid = [tuple(int(v) for v in pair.split("x")) for pair in args.grid.split(",")]
    rows = []
    for name, fixed in sets.items():
        for shards, slices in grid:
            for batch in (1, 10):
                rows.append(one(fixed, shards, slices, args.requests, batch))
                r = rows[-1]
                print(
                    f"{name:10s} S={shards:2d} R={slices:2d} batch={batch:2d}: speed-up time "
                    f"{r['speedup_time']:.2f}, work {r['speedup_work']:.2f}, "
                    f"predicted {r['speedup_predicted']:.2f} "
                    f"(time/predicted {r['time_vs_prediction']:.2f}); acc vote {r['acc_vote']:.3f}, "
                    f"stacked {r['acc_stacked']:.3f}, S=1 {r['acc_s1']:.3f}",
                    flush=True,
                )
    write_result({"benchmark": "sisa", "requests": args.requests, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
