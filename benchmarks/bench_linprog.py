"""Benchmark the LP pipeline: per-trial time of the default config, and the 2-worker speedup on 20 trials.

    python benchmarks/bench_linprog.py [--trials 20] [--out benchmarks/out/linprog.json]

Both numbers come from one run on one machine, so the ratio is meaningful even where absolute times
on a shared machine are not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from privstudy.harness.spec import load_study
from privstudy.harness.sweep import run_sweep
from privstudy.linprog_runner import LinprogConfig, run


def per_trial_times(n: int) -> dict[str, float]:
    """CPU and wall seconds of one default trial on one core (one BLAS/OpenMP thread), after a warm-up."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _times(n)


def _times(n: int) -> dict[str, float]:
    run(LinprogConfig(seed=0))  # warm-up: fills the per-process query-point cache, as in a worker
    cpu, wall = [], []
    for seed in range(1, n + 1):
        c0, w0 = time.process_time(), time.perf_counter()
        run(LinprogConfig(seed=seed))
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {
        "cpu_s_median": statistics.median(cpu),
        "wall_s_median": statistics.median(wall),
        "cpu_s_max": max(cpu),
    }


def sweep_wall(n_trials: int, workers: int) -> float:
    """Wall seconds of a local sweep of n_trials default trials (including shard writes and start-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench.yaml"
        spec.write_text(yaml.safe_dump({"name": "bench", "kind": "linprog", "seeds": n_trials}))
        study = load_study(spec)
        t0 = time.perf_counter()
        code = run_sweep(
            study,
            Path(tmp) / "r",
            "local",
            workers,
            False,
            False,
            show_progress=False,
            out=open(os.devnull, "w"),
        )
        elapsed = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"benchmark sweep failed with exit code {code}")
        return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20, help="trials per sweep (default 20)")
    parser.add_argument("--repeats", type=int, default=2, help="sweeps per worker count (best is kept)")
    parser.add_argument("--out", default="benchmarks/out/linprog.json")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    trial = per_trial_times(10)
    walls = {w: min(sweep_wall(args.trials, w) for _ in range(args.repeats)) for w in (1, 2)}
    result = {
        "cores": cores,
        "default_trial": trial,
        "trials": args.trials,
        "sweep_wall_s": {str(k): v for k, v in walls.items()},
        "speedup_2_over_1": walls[1] / walls[2],
        "sweep_wall_per_trial_1_worker_s": walls[1] / args.trials,
    }
    print(f"machine: {cores} cores")
    print(
        f"default LP trial (1,000,000 query points), one core: median {trial['cpu_s_median']:.3f} s CPU, "
        f"{trial['wall_s_median']:.3f} s wall (max {trial['cpu_s_max']:.3f} s CPU)"
    )
    print(
        f"sweep of {args.trials} default trials incl. shard writes: 1 worker {walls[1]:.2f} s, "
        f"2 workers {walls[2]:.2f} s -> speedup {walls[1] / walls[2]:.2f}x"
    )
    if cores < 2:
        print("note: fewer than 2 cores; the speedup cannot reach 2", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
