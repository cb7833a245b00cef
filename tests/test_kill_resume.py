"""A sweep killed with SIGKILL (driver or worker) resumes without redoing trials and ends identical."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import small_lp_spec
from privstudy.analysis.aggregate import main as aggregate
from privstudy.harness import results

# Trials of about a quarter second each, so that a kill lands mid-sweep.
SPEC = small_lp_spec(name="killme", seeds=10, test_size=250000, grid_size=600.0, train_size=10)


def _default_sigint() -> None:
    # A shell starts background commands with SIGINT ignored, and Python keeps an ignored SIGINT
    # ignored; restore it so that the sweep sees Ctrl-C wherever the test suite itself was started.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sweep(spec_path: Path, root: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privstudy",
            "sweep",
            str(spec_path),
            "--results",
            str(root),
            "--no-progress",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )


def _n_records(study_dir: Path) -> int:
    d = study_dir / results.TRIALS_DIR
    return len([p for p in d.glob("*.parquet")]) if d.is_dir() else 0


def _wait_for_records(study_dir: Path, n: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while _n_records(study_dir) < n:
        assert proc.poll() is None, f"sweep ended before the kill: {proc.communicate()}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)


def _worker_pids(driver_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(driver_pid)], capture_output=True, text=True).stdout.split()
    pids = []
    for pid in map(int, out):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "spawn_main" in cmd and "resource_tracker" not in cmd:
            pids.append(pid)
    return pids


def _tables(study_dir: Path) -> dict[str, bytes]:
    assert aggregate([str(study_dir)]) == 0
    return {p.name: p.read_bytes() for p in sorted((study_dir / "tables").glob("*.csv"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tables of an uninterrupted run."""
    root = tmp_path_factory.mktemp("ref")
    spec = root / "spec.yaml"
    import yaml

    spec.write_text(yaml.safe_dump(SPEC))
    proc = _sweep(spec, root, "--workers", "2")
    assert proc.wait(timeout=300) == 0, proc.communicate()
    return spec, _tables(root / "killme")


def test_sigkill_of_the_driver_then_rerun(reference, tmp_path):
    spec, expected = reference
    root = tmp_path / "r"
    proc = _sweep(spec, root, "--workers", "2")
    study = root / "killme"
    _wait_for_records(study, 4, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    try:  # orphaned workers of the dead driver, if any
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    before = results.read_records(study).set_index("trial_id")["started_at"]
    assert 4 <= len(before) < 20
    rerun = _sweep(spec, root, "--workers", "2")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"already done: {len(before)}" in out
    after = results.read_records(study).set_index("trial_id")["started_at"]
    assert len(after) == 20
    assert (after[before.index] == before).all(), "a finished trial was redone"
    assert not list(study.rglob("*.tmp"))
    assert _tables(study) == expected


def test_sigkill_of_a_worker_restarts_the_pool(reference, tmp_path):
    spec, expected = reference
    root = tmp_path / "r"
    proc = _sweep(spec, root, "--workers", "2")
    study = root / "killme"
    _wait_for_records(study, 2, proc)
    workers = _worker_pids(proc.pid)
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "a worker died; restarting the pool" in err
    assert "20 done, 0 failed, 0 pending" in out
    assert _tables(study) == expected


def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(test_kinds, tmp_path):
    """Slow trials (1 s each), so that Ctrl-C surely lands mid-sweep even on a loaded machine."""
    import yaml

    spec = tmp_path / "slow.yaml"
    spec.write_text(
        yaml.safe_dump({"name": "slow", "kind": "echo", "fixed": {"n_rows": 2, "sleep_s": 1.0}, "seeds": 12})
    )
    root = tmp_path / "r"
    proc = _sweep(spec, root, "--workers", "2")
    study = root / "slow"
    _wait_for_records(study, 3, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C: the whole process group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "rerun the same command to resume" in err
    assert not list(study.rglob("*.tmp")), "Ctrl-C left a partial file"
    n_before = _n_records(study)
    assert 3 <= n_before < 12
    time.sleep(1.5)  # a worker still running after the driver exited would add a record now
    assert _n_records(study) == n_before, "every worker stopped with the driver"
    rerun = _sweep(spec, root, "--workers", "2")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"already done: {n_before}" in out
    echo = results.read_table(study, "echo")
    assert len(echo) == 24 and not echo.duplicated(["trial_id", "i"]).any()
