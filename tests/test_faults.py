"""The fault suite: a results folder damaged, shared, full or changed never gives a silent wrong table.

Each test damages a finished (or running) study the way a shared cluster file system does, and checks
that the damage is reported by trial id, that no table is built on it silently, that a plain rerun
repairs it without rerunning anything else, and that the final tables equal an undamaged run's.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import run_cli, small_lp_spec
from privstudy.harness import results
from privstudy.harness.lock import LOCK_NAME, StudyLock

SPEC = small_lp_spec(name="lp", seeds=3)


def _sweep(spec_path: Path, root: Path, *extra: str) -> int:
    args = ("--results", str(root), "--executor", "inline", "--no-progress", *extra)
    return run_cli("sweep", str(spec_path), *args)


def _table(study: Path) -> pd.DataFrame:
    return pd.read_csv(study / "tables" / "linprog_confidence_vs_nn.csv")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An undamaged finished study, aggregated: the tables every repaired study must reproduce."""
    tmp = tmp_path_factory.mktemp("ref")
    spec = tmp / "lp.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert _sweep(spec, tmp / "r") == 0
    assert run_cli("aggregate", str(tmp / "r" / "lp")) == 0
    return spec, tmp / "r" / "lp"


@pytest.fixture
def study(reference, tmp_path):
    """A private copy of the finished study (not yet aggregated) and its spec."""
    spec, ref = reference
    dest = tmp_path / "r" / "lp"
    shutil.copytree(ref, dest, ignore=shutil.ignore_patterns("tables", "figures", "report.md"))
    return spec, dest


def _shards(study: Path, table: str = "linprog_metrics") -> list[Path]:
    return sorted((study / results.SHARDS_DIR / table).glob("*.parquet"))


def _records_mtime(study: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (study / results.TRIALS_DIR).glob("*.parquet")}


DAMAGES = {
    "deleted shard": lambda p: p.unlink(),
    "empty shard": lambda p: p.write_bytes(b""),
    "truncated shard": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_shard_is_reported_refused_and_repaired(damage, study, reference, capsys):
    spec, lp = study
    victim = _shards(lp)[1]
    trial_id = victim.stem
    DAMAGES[damage](victim)
    capsys.readouterr()
    # Reported by id, by status and verify; the trial is not done.
    assert run_cli("verify", str(lp)) == 1
    assert trial_id in capsys.readouterr().out
    assert run_cli("status", str(lp), "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["done"] == 5 and status["pending"] == 1
    assert [d["trial_id"] for d in status["damaged"]] == [trial_id]
    # No table built on it silently.
    assert run_cli("aggregate", str(lp)) == 2
    assert trial_id in capsys.readouterr().err and not (lp / "tables").exists()
    # Told to proceed: the report says what is missing from which table.
    assert run_cli("aggregate", str(lp), "--allow-damaged") == 0
    report = (lp / "report.md").read_text()
    assert f"`{trial_id}`: missing from table `linprog_metrics`" in report
    assert _table(lp)["n_trials"].min() == 2  # the damaged trial left out, and said so
    # A plain rerun moves the damaged files aside (never deletes them) and reruns that trial only.
    before = _records_mtime(lp)
    assert _sweep(spec, lp.parent) == 0
    assert trial_id in capsys.readouterr().err
    after = _records_mtime(lp)
    assert [k for k in after if after[k] != before.get(k)] == [f"{trial_id}.parquet"]
    kept = list((lp / "damaged").rglob(f"{trial_id}.parquet"))
    assert "trials" in {p.parent.name for p in kept}
    assert (next((lp / "damaged").iterdir()) / "WHY.txt").exists()
    assert damage == "deleted shard" or "linprog_metrics" in {p.parent.name for p in kept}
    assert run_cli("verify", str(lp)) == 0
    assert run_cli("aggregate", str(lp)) == 0
    pd.testing.assert_frame_equal(_table(lp), _table(reference[1]))


def test_a_shard_missing_a_column_is_damage(study, capsys):
    import pyarrow.parquet as pq

    spec, lp = study
    victim = _shards(lp)[0]
    table = pq.read_table(victim)
    pq.write_table(table.drop([table.column_names[-1]]), victim)
    assert run_cli("verify", str(lp)) == 1
    assert "lacks columns" in capsys.readouterr().out
    assert _sweep(spec, lp.parent) == 0 and run_cli("verify", str(lp)) == 0


def test_a_truncated_record_is_reported_and_the_study_resumes(study, reference, capsys):
    spec, lp = study
    record = sorted((lp / results.TRIALS_DIR).glob("*.parquet"))[2]
    record.write_bytes(record.read_bytes()[:100])
    assert run_cli("status", str(lp)) == 0
    out = capsys.readouterr().out
    assert "5 done" in out and record.stem in out and "trial record unreadable" in out
    assert run_cli("aggregate", str(lp)) == 2
    assert _sweep(spec, lp.parent) == 0
    assert run_cli("aggregate", str(lp)) == 0
    pd.testing.assert_frame_equal(_table(lp), _table(reference[1]))


def test_a_truncated_manifest_is_one_line_and_a_rerun_rewrites_it(study, reference, capsys):
    spec, lp = study
    manifest = lp / results.MANIFEST
    manifest.write_text(manifest.read_text()[:50])
    for cmd in (("status", str(lp)), ("verify", str(lp)), ("aggregate", str(lp))):
        assert run_cli(*cmd) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "manifest.json is damaged" in err and "privstudy sweep" in err
    before = _records_mtime(lp)
    assert _sweep(spec, lp.parent) == 0
    assert _records_mtime(lp) == before  # nothing rerun
    assert list((lp / "damaged").glob("manifest.json.*"))
    assert run_cli("aggregate", str(lp)) == 0
    pd.testing.assert_frame_equal(_table(lp), _table(reference[1]))


def test_a_second_sweep_is_refused_with_the_holders_name(study, capsys):
    spec, lp = study
    with StudyLock(lp, "privstudy sweep lp"):
        assert _sweep(spec, lp.parent) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"pid {os.getpid()} on {socket.gethostname()}" in err and "privstudy sweep lp" in err
        # The attack stage writes into the study folder too: refused alike.
        assert run_cli("attack", str(lp)) == 2
        assert "privstudy sweep lp" in capsys.readouterr().err
    assert not (lp / LOCK_NAME).exists()


def test_a_dead_holders_lock_does_not_block(study, capsys):
    spec, lp = study
    (lp / LOCK_NAME).write_text(
        json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started": "x", "token": "t"})
    )
    assert _sweep(spec, lp.parent) == 0
    # Another host's lock: live while it is touched, stale once silent for longer than the limit.
    other = {"host": "node-elsewhere", "pid": 1, "started": "x", "token": "u"}
    (lp / LOCK_NAME).write_text(json.dumps(other))
    assert _sweep(spec, lp.parent) == 2
    assert "node-elsewhere" in capsys.readouterr().err
    old = time.time() - 3600
    os.utime(lp / LOCK_NAME, (old, old))
    assert _sweep(spec, lp.parent) == 0 and not (lp / LOCK_NAME).exists()


def test_start_up_clean_up_spares_a_live_writers_temp_file(study):
    spec, lp = study
    live = lp / "shards" / "linprog_metrics" / f".x.parquet.abc.w{os.getpid()}@{socket.gethostname()}.tmp"
    dead = live.with_name(f".y.parquet.abc.w{_dead_pid()}@{socket.gethostname()}.tmp")
    foreign = live.with_name(".z.parquet.abc.w1@node-elsewhere.tmp")
    for f in (live, dead, foreign):
        f.write_bytes(b"partial")
    assert _sweep(spec, lp.parent) == 0
    assert live.exists() and foreign.exists() and not dead.exists()  # foreign: younger than an hour


def _fail_writes(monkeypatch, code: int, after: int = 0):
    """Make the results writes raise OSError(code) from the (after+1)-th on."""
    real = results.write_file_atomic
    calls = {"n": 0}

    def write(path, mode, fn):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(code, os.strerror(code), str(path))
        return real(path, mode, fn)

    monkeypatch.setattr(results, "write_file_atomic", write)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_stops_the_sweep_and_leaves_trials_pending(
    code, tmp_path, reference, monkeypatch, capsys
):
    spec, ref = reference
    root = tmp_path / "r"
    assert run_cli("sweep", str(spec), "--results", str(root), "--dry-run") == 0
    # The manifest and spec copy are written, then 2 trials' shards and records, then the disk fails.
    per_trial = len(list((ref / results.SHARDS_DIR).iterdir())) + 1
    _fail_writes(monkeypatch, code, after=2 + 2 * per_trial)
    capsys.readouterr()
    assert _sweep(spec, root) == 1
    err = capsys.readouterr().err
    first = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(first) == 1 and str(root / "lp") in first[0] and "rerun the same command" in first[0]
    assert "Traceback" not in err
    records = results.read_records(root / "lp", ["trial_id", "status"])
    assert list(records["status"]) == ["done", "done"]  # none recorded as failed
    assert not list((root / "lp").rglob("*.tmp"))
    monkeypatch.undo()
    assert _sweep(spec, root) == 0
    assert run_cli("aggregate", str(root / "lp")) == 0
    pd.testing.assert_frame_equal(_table(root / "lp"), _table(ref))


def test_aggregation_writes_all_of_its_outputs_or_none(study, monkeypatch, capsys):
    spec, lp = study
    assert run_cli("aggregate", str(lp)) == 0
    before = {p: p.read_bytes() for p in (lp / "tables").iterdir()}
    _fail_writes(monkeypatch, errno.ENOSPC, after=1)
    assert run_cli("aggregate", str(lp)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left" in err and "--out" in err
    assert {p: p.read_bytes() for p in (lp / "tables").iterdir()} == before
    assert not list(lp.glob(".staging-*"))


def test_a_changed_spec_is_refused_with_a_diff_unless_extended(study, tmp_path, capsys):
    spec, lp = study
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(small_lp_spec(name="lp", seeds=4, train_size=9)))
    manifest = (lp / results.MANIFEST).read_bytes()
    assert _sweep(changed, lp.parent) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "8 trials added, 6 dropped" in err and "train_size: 8 -> 9" in err
    assert (lp / results.MANIFEST).read_bytes() == manifest
    assert _sweep(changed, lp.parent, "--extend") == 0
    assert run_cli("status", str(lp)) == 0
    assert "14 trials: 14 done" in capsys.readouterr().out
    assert list(lp.glob("spec.*.yaml"))  # the earlier spec kept


def test_a_finished_study_is_resweept_without_writing(study):
    spec, lp = study
    stamps = {p: p.stat().st_mtime_ns for p in lp.rglob("*") if p.is_file()}
    assert _sweep(spec, lp.parent) == 0
    assert {p: p.stat().st_mtime_ns for p in lp.rglob("*") if p.is_file()} == stamps


def test_a_read_only_study_aggregates_into_another_folder(study, tmp_path):
    spec, lp = study
    stamps = sorted((str(p), p.stat().st_mtime_ns) for p in lp.rglob("*"))
    out = tmp_path / "elsewhere"
    assert run_cli("aggregate", str(lp), "--out", str(out)) == 0
    assert (out / "report.md").exists() and (out / "tables" / "linprog_confidence_vs_nn.csv").exists()
    assert sorted((str(p), p.stat().st_mtime_ns) for p in lp.rglob("*")) == stamps  # nothing written there


def test_bad_results_folders_and_specs_are_one_line_errors(tmp_path, write_spec, capsys):
    spec = write_spec(SPEC)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert _sweep(spec, a_file) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: x\nkind: linprog\nseeds: 2\nseeds: 3\n")
    assert _sweep(dup, tmp_path / "r") == 2
    assert "key 'seeds' given twice" in capsys.readouterr().err
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    assert _sweep(latin, tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not UTF-8" in err


def test_sigterm_to_the_driver_stops_the_workers(tmp_path):
    spec = tmp_path / "slow.yaml"
    spec.write_text(
        yaml.safe_dump(small_lp_spec(name="slow", seeds=20, test_size=250000, grid_size=600.0, train_size=10))
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "privstudy", "sweep", str(spec), "--results", str(tmp_path / "r")]
        + ["--no-progress", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    records = tmp_path / "r" / "slow" / results.TRIALS_DIR
    deadline = time.monotonic() + 120
    while not (records.is_dir() and any(records.glob("*.parquet"))):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    children = _children(proc.pid)
    assert children, "no workers found"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    time.sleep(1)
    assert not [p for p in children if _alive(p)], "workers outlived the driver"
    assert not (tmp_path / "r" / "slow" / LOCK_NAME).exists()


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    code = "import os; print(os.getpid())"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead: it only waits to be reaped.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_zombie_writer_counts_as_gone(tmp_path):
    """A worker killed while writing, whose dead parent leaves it unreaped, is a zombie: kill(pid, 0)
    still succeeds, but it will never write again, so its temp file is stale."""
    import subprocess
    import time

    from privstudy.harness import results
    from privstudy.harness.lock import pid_alive

    child = subprocess.Popen(["sleep", "0"])  # exits at once; not waited for: a zombie
    deadline = time.time() + 10
    while time.time() < deadline:
        if open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    assert not pid_alive(child.pid)
    tmp = tmp_path / f".x.parquet.abc.w{child.pid}@{results._HOST}.tmp"
    tmp.write_text("partial")
    assert results.temp_writer_gone(tmp) and results.remove_stale_temp_files(tmp_path) == 1
    child.wait()
    assert pid_alive(os.getpid())
