"""Benchmark the attack stage at LiRA's scale: every attack on every target of synthetic studies of M
models over N examples, with 1 and 2 workers, wall time and peak memory, side by side in one run.

    python benchmarks/bench_attack_stage.py [--models 16 64 256] [--pool 10000 50000] [--workers 1 2]
                                            [--lp-trials 10000] [--root /tmp/privstudy-bench-attack]
                                            [--keep] [--out benchmarks/out/attack_stage.json]

Each study is written by ``privstudy.mia.synthetic`` (no training: per-example IN/OUT Gaussians with
heavy-tailed spreads, 10 classes, 2 views, probability vectors recorded). ``privstudy attack`` then runs
as a subprocess (all attacks: the threshold attacks, LiRA's four variants, reference, offset, RMIA, and
the shadow attack on its capped number of targets), from an empty attack store, with ``--workers W``;
the peak memory is the largest sum of the resident sizes of the whole process tree, sampled every 0.1 s.
A last rerun, with every unit stored, times the serial part alone: reading the units and reducing them.
Beside it, the per-target cost of the attacks as they ran before the stage shared its statistics
(``privstudy.mia.attacks`` on the whole ScoreSet, one target), extrapolated to every target: that is
what one process computed in a loop before.

Then the aggregation of a study of ``--lp-trials`` small `linprog` trials (a 101 x 101 grid, 2,000
query points: the shard count is what is measured, not the trial size): the sweep's time, and the wall
time and peak memory of `analysis/aggregate.py` on it (0 skips this part).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]


def _tree_rss_bytes(pid: int) -> int:
    """The resident set size of ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except OSError:
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _timed(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak process-tree RSS (bytes) and stdout of a command; raises if it fails."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_bytes(proc.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {err.strip().splitlines()[-1:]}")
    return wall, peak, out


LP_SPEC = """\
name: lp_many
kind: linprog
fixed: {{train_size: 10, test_size: 2000, grid_size: 100.0}}
seeds: {n}
"""


def lp_aggregation(root: Path, n_trials: int) -> dict:
    """Sweep ``n_trials`` small linprog trials (2 workers), then time their aggregation."""
    root.mkdir(parents=True, exist_ok=True)
    spec = root / "lp_many.yaml"
    spec.write_text(LP_SPEC.format(n=n_trials))
    sweep_s, _, _ = _timed(
        [sys.executable, "-m", "privstudy", "sweep", str(spec), "--results", str(root), "--workers", "2"]
        + ["--no-progress"]
    )
    wall, peak, _ = _timed([sys.executable, str(ROOT / "analysis" / "aggregate.py"), str(root / "lp_many")])
    return {
        "trials": n_trials,
        "sweep_s": round(sweep_s, 1),
        "aggregate_wall_s": round(wall, 2),
        "aggregate_peak_rss_gb": round(peak / 2**30, 3),
    }


def run_attack_stage(study: Path, workers: int) -> dict:
    """Time ``privstudy attack`` on a study from an empty store, and sample its tree's memory."""
    shutil.rmtree(study / "attacks", ignore_errors=True)
    cmd = [sys.executable, "-m", "privstudy", "attack", str(study), "--executor", "local"]
    wall, peak, out = _timed(cmd + ["--workers", str(workers)])
    units = next((ln for ln in out.splitlines() if ln.startswith("attack units:")), "")
    return {
        "workers": workers,
        "wall_s": round(wall, 2),
        "peak_rss_gb": round(peak / 2**30, 3),
        "units": units,
    }


def per_target_before(study: Path, m: int, n: int) -> dict:
    """The attacks' cost for one target as computed before the shared statistics, extrapolated."""
    from privstudy.analysis.common import load_study
    from privstudy.harness import attack_stage as stage
    from privstudy.mia.attacks import run_attack
    from privstudy.mia.metrics import attack_metrics

    data_study = load_study(study)
    plan = stage.setting_plans(data_study.manifest, data_study.records, None)[0]
    data = stage.load_setting(
        study, plan.trial_ids, plan.model_ids, plan.config, ("loss", "p_true", "entropy", "mentr", "views")
    )
    data = type(data)(**{**data.__dict__, "probs": None})
    seconds = {}
    for name in plan.attacks:
        if name == "shadow":
            continue  # unchanged but for its feature memory: it runs in the stage on its 8 targets
        t0 = time.perf_counter()
        scores = run_attack(name, data, 0)
        attack_metrics(scores, data.keep[0])
        seconds[name] = time.perf_counter() - t0
    return {
        "seconds_per_target": {k: round(v, 4) for k, v in seconds.items()},
        "extrapolated_all_targets_s": round(sum(seconds.values()) * m, 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--pool", type=int, nargs="+", default=[10000, 50000])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--root", default="/tmp/privstudy-bench-attack")
    p.add_argument("--keep", action="store_true", help="keep the synthetic studies (else deleted after use)")
    p.add_argument("--skip-before", action="store_true", help="skip the per-target cost before sharing")
    p.add_argument("--lp-trials", type=int, default=10000)
    p.add_argument("--out", default="benchmarks/out/attack_stage.json")
    a = p.parse_args(argv)
    from privstudy.mia.synthetic import write_study

    rows = []
    for n in a.pool:
        for m in a.models:
            name = f"syn_m{m}_n{n}"
            t0 = time.perf_counter()
            study = write_study(Path(a.root), name, n_models=m, pool_size=n, seed=m)
            row = {"models": m, "pool": n, "generate_s": round(time.perf_counter() - t0, 1), "runs": []}
            for w in a.workers:
                row["runs"].append(run_attack_stage(study, w))
                print(m, n, row["runs"][-1], flush=True)
            # Everything stored: the rerun only reads the units and reduces them (pooled ROCs, tables,
            # figures), the serial part of the stage.
            wall, peak, _ = _timed([sys.executable, "-m", "privstudy", "attack", str(study), "--no-progress"])
            row["rerun_all_stored"] = {"wall_s": round(wall, 2), "peak_rss_gb": round(peak / 2**30, 3)}
            print(m, n, "rerun", row["rerun_all_stored"], flush=True)
            if not a.skip_before:
                row["before"] = per_target_before(study, m, n)
            rows.append(row)
            if not a.keep:
                shutil.rmtree(study, ignore_errors=True)
    result = {"attack_stage": rows}
    if a.lp_trials:
        result["lp_aggregation"] = lp_aggregation(Path(a.root) / "lp", a.lp_trials)
        print(result["lp_aggregation"], flush=True)
        if not a.keep:
            shutil.rmtree(Path(a.root) / "lp", ignore_errors=True)
    write_result(result, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
