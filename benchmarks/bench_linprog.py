"""Benchmark the LP pipeline: per-trial time of the default config, and the 2-worker speedup on 20 trials.

    python benchmarks/bench_linprog.py [--trials 20] [--out benchmarks/out/linprog.json]
        [--published PATH] [--side-by-side 10]

With ``--published PATH`` (a checkout of the published code, or any folder or file inside its
``src/intuition_confidence_similarity``), the published trial runs on its defaults side by side with
ours: the same number of trials, interleaved, each on one thread, in this process. The published
study runs each trial twice, once per confidence (the second run reloads the first one's model from
disk); one of our trials computes both, so a published trial here is both runs. The published code
imports TensorFlow and matplotlib at module level, so they must be installed.

All numbers come from one run on one machine, so the ratios are meaningful even where absolute times
on a shared machine are not.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
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


PUBLISHED_MODULE = "linprog_experimenter.py"  # holds the published trial function, run_single_trial


def find_published(path: str) -> Path:
    """The folder holding the published ``linprog_experimenter.py``, from a checkout, folder or file."""
    p = Path(path).expanduser().resolve()
    folder = p.parent if p.is_file() else p
    if (folder / PUBLISHED_MODULE).is_file():
        return folder
    hits = sorted(folder.rglob(PUBLISHED_MODULE)) if folder.is_dir() else []
    if not hits:
        raise SystemExit(f"--published {path}: no {PUBLISHED_MODULE} found there")
    return hits[0].parent


class PublishedTrial:
    """The published trial on its defaults (ours are the same values), both confidence runs.

    Its query points are made once, as the published study does, outside the timed trials; the
    model file that the second run reads is written between the two runs, untimed.
    """

    def __init__(self, folder: Path, workdir: Path):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        sys.path.insert(0, str(folder))
        with contextlib.redirect_stdout(io.StringIO()):
            self.mod = importlib.import_module(Path(PUBLISHED_MODULE).stem)
        d = LinprogConfig()
        self.cfg = d
        self.weights = np.asarray(d.ideal_weights, dtype=np.float64)
        self.workdir = workdir
        self.exp = "bench"
        np.random.seed(0)  # the published sampler draws from NumPy's global generator
        with contextlib.redirect_stdout(io.StringIO()):
            self.x_test, self.test_ids = self.mod.rand_test_data(
                d.test_size, d.grid_size, d.granularity, d.num_dimensions
            )

    def _run(self, trial: int, use_sigmoid: bool):
        """One published run of trial ``trial``: the boundary confidence, or the sigmoid one."""
        d = self.cfg
        with contextlib.redirect_stdout(io.StringIO()):
            return self.mod.run_single_trial(
                trial,
                d.grid_size,
                d.train_size,
                self.x_test,
                self.test_ids,
                int(d.percent),
                d.same_class,
                self.weights,
                d.ideal_bias,
                use_sigmoid,
                str(self.workdir),
                self.exp,
            )

    def __call__(self, trial: int) -> tuple[float, float, float]:
        """Run trial ``trial``; returns (CPU s, wall s) of both runs, and the wall s of the first alone."""
        c0, w0 = time.process_time(), time.perf_counter()
        _, x_train, y_train, train_ids, weights, bias = self._run(trial, False)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        self._save_model(trial, x_train, y_train, train_ids, weights, bias)
        c1, w1 = time.process_time(), time.perf_counter()
        self._run(trial, True)
        return cpu + time.process_time() - c1, wall + time.perf_counter() - w1, wall

    def _save_model(self, trial: int, *arrays: np.ndarray) -> None:
        """The published model file, as its first run saves it, with this trial's model at its index."""
        folder = self.workdir / "distance_conf" / self.exp
        folder.mkdir(parents=True, exist_ok=True)
        names = ("X_train", "y_train", "train_ids", "weights", "bias")
        data = {}
        for name, a in zip(names, arrays):
            column = np.empty(trial + 1, dtype=object)
            column[trial] = a
            data[name] = column
        np.savez(folder / "experiment_models.npz", **data)


def side_by_side(published_path: str, n: int) -> dict:
    """Our default trial and the published one, interleaved, n timed trials each after a warm-up."""
    from threadpoolctl import threadpool_limits

    folder = find_published(published_path)
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):
        t0 = time.perf_counter()
        published = PublishedTrial(folder, Path(tmp))
        setup_s = time.perf_counter() - t0
        run(LinprogConfig(seed=0))  # warm-ups: our query-point cache; imports and first calls
        published(0)
        ours_cpu, ours_wall, pub_cpu, pub_wall, pub_first = [], [], [], [], []
        for seed in range(1, n + 1):
            c0, w0 = time.process_time(), time.perf_counter()
            run(LinprogConfig(seed=seed))
            ours_cpu.append(time.process_time() - c0)
            ours_wall.append(time.perf_counter() - w0)
            # The published code numbers trials from 0 and seeds trial t with t + 1.
            cpu, wall, first = published(seed - 1)
            pub_cpu.append(cpu)
            pub_wall.append(wall)
            pub_first.append(first)
    med = statistics.median
    return {
        "published_folder": str(folder),
        "trials": n,
        "published_query_points_s": setup_s,
        "ours_cpu_s_median": med(ours_cpu),
        "ours_wall_s_median": med(ours_wall),
        "published_cpu_s_median": med(pub_cpu),
        "published_wall_s_median": med(pub_wall),
        "published_first_run_wall_s_median": med(pub_first),
        "speedup_wall": med(pub_wall) / med(ours_wall),
        "speedup_cpu": med(pub_cpu) / med(ours_cpu),
        "speedup_wall_over_first_run_alone": med(pub_first) / med(ours_wall),
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
    parser.add_argument(
        "--published",
        metavar="PATH",
        default=None,
        help="a checkout of the published code (or a folder or file in it): time its trial beside ours",
    )
    parser.add_argument("--side-by-side", type=int, default=10, help="trials of each in the comparison")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if args.published:
        v = side_by_side(args.published, args.side_by_side)
        print(
            f"side by side, {v['trials']} default trials each, one thread, interleaved: ours median "
            f"{v['ours_wall_s_median']:.3f} s wall ({v['ours_cpu_s_median']:.3f} s CPU), published "
            f"{v['published_wall_s_median']:.3f} s wall ({v['published_cpu_s_median']:.3f} s CPU) "
            f"for its two runs per trial ({v['published_first_run_wall_s_median']:.3f} s the first alone) "
            f"-> ours is {v['speedup_wall']:.1f}x faster (wall; {v['speedup_cpu']:.1f}x CPU; "
            f"{v['speedup_wall_over_first_run_alone']:.1f}x against the first run alone)"
        )
        versus = v
    else:
        versus = {"skipped": "no --published PATH given"}
        print("published code: skipped (give --published PATH to time it beside ours)")
    trial = per_trial_times(10)
    walls = {w: min(sweep_wall(args.trials, w) for _ in range(args.repeats)) for w in (1, 2)}
    result = {
        "cores": cores,
        "default_trial": trial,
        "trials": args.trials,
        "sweep_wall_s": {str(k): v for k, v in walls.items()},
        "speedup_2_over_1": walls[1] / walls[2],
        "sweep_wall_per_trial_1_worker_s": walls[1] / args.trials,
        "published": versus,
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
