"""The Slurm executor against a real Slurm controller (slurm/local-cluster/up.sh in CI).

Every test here is marked `slurm` and skips, with the reason, where no controller answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, TESTS
from privstudy.analysis.aggregate import main as aggregate
from privstudy.harness import results
from privstudy.harness.slurm import JOBS_FILE, SLURM_DIR, sbatch_script, slurm_reachable
from privstudy.harness.spec import Resources

pytestmark = pytest.mark.slurm

POLL_ENV = {"PRIVSTUDY_SLURM_POLL_S": "1"}


@pytest.fixture(scope="module")
def cluster():
    ok, why = slurm_reachable(timeout_s=10)
    if not ok:
        pytest.skip(
            f"no Slurm controller answers ({why}); start one with "
            f"`sudo slurm/local-cluster/up.sh && source /tmp/privstudy-slurm/env.sh`"
        )
    return why


@pytest.fixture
def env(test_kinds):
    """Environment for driver subprocesses: the test kinds, a fast poll, this checkout first."""
    e = dict(os.environ, **POLL_ENV)
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return e


def _privstudy(*args: str, env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "privstudy", *args], env=env, capture_output=True, text=True, **kw
    )


def _kind_columns(study_dir: Path, table: str) -> pd.DataFrame:
    df = results.read_table(study_dir, table)
    keep = [c for c in df.columns if c not in results.PROVENANCE.names or c in ("trial_id", "seed")]
    return df[keep].sort_values(list(df[keep].columns[:3])).reset_index(drop=True)


def _echo_spec(path: Path, name: str, seeds: int, **fixed) -> Path:
    spec = {
        "name": name,
        "kind": "echo",
        "fixed": {"n_rows": 2, **fixed},
        "seeds": seeds,
        "resources": {"cpus": 1, "mem_gb": 0.5, "timeout_min": 5, "trials_per_task": 2},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _jobs(study_dir: Path) -> list[dict]:
    files = sorted((study_dir / SLURM_DIR).glob(f"*/{JOBS_FILE}"))
    return [j for f in files for j in yaml.safe_load(f.read_text())["jobs"]]


def _records(study_dir: Path) -> pd.DataFrame:
    return results.read_records(study_dir, ["trial_id", "status", "error", "started_at", "slurm_job_id"])


def test_sbatch_sweep_sh_matches_the_local_executor(cluster, env, tmp_path):
    """`sbatch --wait slurm/sweep.sh jobs/ci_slurm.yaml` gives the local executor's shards and tables."""
    local = _privstudy(
        "sweep",
        "jobs/ci_slurm.yaml",
        "--executor",
        "local",
        "--results",
        str(tmp_path / "local"),
        "--no-progress",
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert local.returncode == 0, local.stderr
    log = tmp_path / "driver.log"
    proc = subprocess.run(
        [
            "sbatch",
            "--wait",
            f"--output={log}",
            f"--chdir={ROOT}",
            "slurm/sweep.sh",
            "jobs/ci_slurm.yaml",
            "--results",
            str(tmp_path / "slurm"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    driver_log = log.read_text() if log.exists() else "(no driver log)"
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n{driver_log}"
    assert "submitted array job" in driver_log and "12 done, 0 failed, 0 pending" in driver_log
    a, b = tmp_path / "local" / "ci_slurm", tmp_path / "slurm" / "ci_slurm"
    recs = _records(b)
    assert len(recs) == 12 and (recs["status"] == "done").all()
    assert recs["slurm_job_id"].notna().all(), "trial rows name their array task"
    for table in ("linprog_model", "linprog_metrics", "linprog_extremes", "linprog_bins"):
        pd.testing.assert_frame_equal(_kind_columns(a, table), _kind_columns(b, table))
    assert aggregate([str(a)]) == 0 and aggregate([str(b)]) == 0
    csv_a = {p.name: p.read_bytes() for p in (a / "tables").glob("*.csv")}
    csv_b = {p.name: p.read_bytes() for p in (b / "tables").glob("*.csv")}
    assert csv_a and csv_a == csv_b


def _wait_running(study_dir: Path, timeout_s: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = _jobs(study_dir) if (study_dir / SLURM_DIR).is_dir() else []
        if jobs:
            ids = ",".join(sorted({j["array_job_id"] for j in jobs}))
            out = subprocess.run(
                ["squeue", "-h", "-r", "-j", ids, "-o", "%i %T"], capture_output=True, text=True
            ).stdout.split("\n")
            running = [line.split()[0] for line in out if line.endswith("RUNNING")]
            if running:
                return [j for j in jobs if j["job_id"] in running]
        time.sleep(0.3)
    raise AssertionError("no array task started running")


def test_scancel_of_a_task_then_rerun_loses_and_duplicates_nothing(cluster, env, tmp_path):
    spec = _echo_spec(tmp_path / "s.yaml", "cancelme", seeds=8, sleep_s=2.0)
    root = tmp_path / "res"
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privstudy",
            "sweep",
            str(spec),
            "--executor",
            "slurm",
            "--results",
            str(root),
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    study = root / "cancelme"
    victim = _wait_running(study)[0]
    subprocess.run(["scancel", victim["job_id"]], check=True)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 1, out + err
    assert f"array task {victim['job_id']} ended CANCELLED" in err
    first = _records(study).set_index("trial_id")
    lost = first[first["error"].fillna("").str.contains("SlurmTaskLost")]
    assert 1 <= len(lost) <= 2 and set(lost.index) <= set(victim["trial_ids"])
    status = _privstudy("status", str(study), "--json", env=env)
    assert '"failed": %d' % len(lost) in status.stdout

    rerun = _privstudy(
        "sweep",
        str(spec),
        "--executor",
        "slurm",
        "--results",
        str(root),
        "--no-progress",
        env=env,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"to run: {len(lost)};" in rerun.stdout, "only the lost trials run again"
    second = _records(study).set_index("trial_id")
    assert len(second) == 8 and (second["status"] == "done").all()
    done_before = first[first["status"] == "done"].index
    assert (second.loc[done_before, "started_at"] == first.loc[done_before, "started_at"]).all(), (
        "finished trials were not run again"
    )
    echo = results.read_table(study, "echo")
    assert len(echo) == 8 * 2 and not echo.duplicated(["trial_id", "i"]).any()


def test_a_task_that_dies_hard_is_reported_failed_in_bounded_time(cluster, env, tmp_path):
    spec = _echo_spec(tmp_path / "s.yaml", "dies", seeds=4, die_seeds=[1])
    start = time.monotonic()
    proc = _privstudy(
        "sweep",
        str(spec),
        "--executor",
        "slurm",
        "--results",
        str(tmp_path),
        "--no-progress",
        env=env,
        timeout=240,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stdout + proc.stderr
    recs = _records(tmp_path / "dies").set_index("trial_id")
    assert len(recs) == 4
    failed = recs[recs["status"] == "failed"]
    # Seed 1 killed its process: it and its chunk-mate after it (if any) are lost, nothing else.
    assert 1 <= len(failed) <= 2 and failed["error"].str.contains("SlurmTaskLost").all()
    assert "ended FAILED" in proc.stderr or "ended CANCELLED" in proc.stderr, proc.stderr
    assert elapsed < 180


def test_gpus_per_node_reaches_the_job(cluster, env, tmp_path):
    spec = {
        "name": "gpu",
        "kind": "echo",
        "fixed": {"n_rows": 1, "env_var": "CUDA_VISIBLE_DEVICES"},
        "seeds": 2,
        "resources": {"cpus": 1, "mem_gb": 0.5, "timeout_min": 5, "gpus": 1},
    }
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = _privstudy(
        "sweep",
        str(path),
        "--executor",
        "slurm",
        "--results",
        str(tmp_path),
        "--no-progress",
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    echo = results.read_table(tmp_path / "gpu", "echo")
    assert echo["env"].tolist() == ["0", "0"], "Slurm gave each task the emulated GPU"
    job = _jobs(tmp_path / "gpu")[0]["job_id"]
    tres = ""
    for _ in range(30):  # the accounting record reaches slurmdbd a moment after the job ends
        tres = subprocess.run(
            ["sacct", "-n", "-X", "-j", job, "-o", "AllocTRES%80"], capture_output=True, text=True
        ).stdout
        if tres.strip():
            break
        time.sleep(0.5)
    assert "gres/gpu=1" in tres
    # What submitit really submitted has the #SBATCH lines that sbatch_script (golden-tested) renders.
    folder = next((tmp_path / "gpu" / SLURM_DIR).iterdir())
    submitted = next(folder.glob("*_submission.sh")).read_text()
    res = Resources(**spec["resources"])
    expected = sbatch_script(res, "privstudy-gpu-echo", str(folder), n_tasks=2)
    flags = lambda text: sorted(line for line in text.splitlines() if line.startswith("#SBATCH"))  # noqa: E731
    assert flags(submitted) == flags(expected)


def test_no_wait_submits_and_status_follows_the_running_study(cluster, env, tmp_path):
    spec = _echo_spec(tmp_path / "s.yaml", "nowait", seeds=4, sleep_s=1.5)
    proc = _privstudy(
        "sweep",
        str(spec),
        "--executor",
        "slurm",
        "--results",
        str(tmp_path),
        "--no-wait",
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not waiting" in proc.stdout
    study = tmp_path / "nowait"
    status = _privstudy("status", str(study), env=env)
    assert status.returncode == 0 and "4 trials" in status.stdout
    # A second sweep while the arrays live would run trials twice: refused.
    again = _privstudy(
        "sweep", str(spec), "--executor", "slurm", "--results", str(tmp_path), env=env, timeout=60
    )
    if "still queued or running" not in again.stderr:
        assert again.returncode == 0  # the arrays had already finished
    else:
        assert again.returncode == 2
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        st = _privstudy("status", str(study), "--json", env=env)
        # A task writes its last shard a moment before Slurm sees it exit (submitit pickles
        # its result first), so "done: 4" with a task still running is a true, passing state.
        if '"done": 4' in st.stdout and '"slurm_tasks": {}' in st.stdout:
            break
        time.sleep(1)
    assert '"done": 4' in st.stdout and '"slurm_tasks": {}' in st.stdout, st.stdout


def test_requeued_task_resumes_without_redoing_trials(cluster, env, tmp_path):
    """A task requeued mid-chunk (as on preemption) runs again and skips the trials it had finished."""
    spec = {
        "name": "requeue",
        "kind": "echo",
        "fixed": {"n_rows": 1, "sleep_s": 2.0},
        "seeds": 4,
        "resources": {"cpus": 1, "mem_gb": 0.5, "timeout_min": 5, "trials_per_task": 4},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(spec))
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privstudy",
            "sweep",
            str(path),
            "--executor",
            "slurm",
            "--results",
            str(tmp_path),
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    study = tmp_path / "requeue"
    task = _wait_running(study)[0]["job_id"]
    deadline = time.monotonic() + 60
    while not (study / results.TRIALS_DIR).is_dir() or not any((study / results.TRIALS_DIR).iterdir()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    before = _records(study).set_index("trial_id")
    subprocess.run(["scontrol", "requeue", task], check=True)
    # Slurm holds a requeued job back for two minutes (reason BeginTime); let it start again at once.
    for _ in range(60):
        state = subprocess.run(
            ["squeue", "-h", "-j", task, "-o", "%T %r"], capture_output=True, text=True
        ).stdout.split()
        if state == ["PENDING", "BeginTime"]:
            subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], check=True)
            break
        time.sleep(0.5)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, out + err
    after = _records(study).set_index("trial_id")
    assert len(after) == 4 and (after["status"] == "done").all()
    assert (after.loc[before.index, "started_at"] == before.loc[before.index, "started_at"]).all()


def test_attack_stage_runs_as_a_job_array_and_matches_the_local_stage(cluster, env, tmp_path):
    """`privstudy attack --executor slurm`: the (setting, attack, target) units of a synthetic study run as
    an array job (4 targets per task), their rows name their array task, and the tables equal the local
    executor's."""
    from privstudy.harness import attack_stage
    from privstudy.mia.synthetic import write_study

    a = write_study(tmp_path / "local", "syn", n_models=8, pool_size=800, seed=2)
    b = write_study(tmp_path / "slurm", "syn", n_models=8, pool_size=800, seed=2)
    attacks = ["--attacks", "loss,lira_online,lira_offline,rmia"]
    local = _privstudy("attack", str(a), "--executor", "local", *attacks, env=env, timeout=600)
    assert local.returncode == 0, local.stderr
    slurm = _privstudy(
        "attack", str(b), "--executor", "slurm", "--targets-per-task", "4", *attacks, env=env, timeout=600
    )
    assert slurm.returncode == 0, slurm.stderr
    assert "submitted array job" in slurm.stdout and "attack units: 32; computed now: 32" in slurm.stdout
    jobs = _jobs(b)
    assert len(jobs) == 2 and {j["kind"] for j in jobs} == {attack_stage.KIND}
    units = pd.concat(
        [pd.read_parquet(p) for p in (b / attack_stage.UNITS_DIR).glob("*.parquet")], ignore_index=True
    )
    assert len(units) == 32 and (units["status"] == "done").all()
    assert units["slurm_array_job_id"].notna().all(), "unit rows name their array task"
    pd.testing.assert_frame_equal(
        pd.read_csv(a / "tables" / "mia_attack_per_target.csv"),
        pd.read_csv(b / "tables" / "mia_attack_per_target.csv"),
    )
    # Everything is stored: a rerun submits nothing.
    again = _privstudy("attack", str(b), "--executor", "slurm", *attacks, env=env, timeout=300)
    assert again.returncode == 0 and "computed now: 0" in again.stdout and len(_jobs(b)) == 2
