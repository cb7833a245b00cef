"""Running one trial inside any executor: run the kind's pure function, then write its shards and record."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import socket
import subprocess
import time
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

from privstudy import __version__
from privstudy.harness import results
from privstudy.harness.config import canonical_json, from_mapping, setting_id
from privstudy.harness.registry import get_kind


@dataclasses.dataclass(frozen=True)
class TrialTask:
    """Everything a worker needs to run one trial; small and picklable (configs, never models)."""

    study: str  # study name
    study_dir: str  # the study folder
    kind: str  # registered kind name
    config: dict  # the trial's config as plain values
    trial_id: str  # its id (checked against the config on arrival)
    code_version: str  # privstudy version and git commit of the submitting checkout
    cpus: int = 1  # cores the trial may use (sizes TensorFlow's thread pools)


@dataclasses.dataclass(frozen=True)
class TrialOutcome:
    """What a worker reports back: the status of one trial."""

    trial_id: str
    status: str  # "done", "failed" or "skipped" (already done on arrival)
    error: Optional[str]  # last line of the traceback when failed
    duration_s: float


class InfrastructureError(RuntimeError):
    """The results folder could not take a trial's results (disk full, read-only, vanished): not a
    failure of the trial, which stays pending; the message names the folder and the fix."""


def infra_message(folder: Path, exc: OSError) -> str:
    """One line for an OSError of the results folder, with the fix."""
    reason, fix = results.os_error_reason(exc)
    return (
        f"cannot write to {folder}: {reason}; {fix}, then rerun the same command (unfinished trials stay "
        f"pending)"
    )


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+g<commit>[.dirty]`` when run from a git checkout, else the package version."""
    root = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"


def _slurm_ids() -> dict[str, Optional[str]]:
    env = os.environ
    return {
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "slurm_array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
    }


def record_status(study_dir: Path, trial_id: str) -> Optional[str]:
    """The status in the trial's record ("done" or "failed"), or None when it has none."""
    path = results.record_path(study_dir, trial_id)
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["status"]).column("status")[0].as_py()


def is_done(study_dir: Path, trial_id: str) -> bool:
    """Whether the trial has a record with status done."""
    return record_status(study_dir, trial_id) == "done"


def _device(kind_uses_tf: bool) -> str:
    if not kind_uses_tf:
        return "cpu"
    from privstudy.harness.tf_setup import device_name

    return device_name()


def _provenance(task: TrialTask, cfg, **values: Any) -> dict[str, Any]:
    """The provenance columns of a trial's rows and record; ``values`` sets status, error, slurm ids..."""
    row: dict[str, Any] = {
        "study": task.study,
        "trial_id": task.trial_id,
        "kind": task.kind,
        "schema_version": results.SCHEMA_VERSION,
        "code_version": task.code_version,
        "seed": cfg.seed,
        "status": "done",
        "error": None,
        "started_at": dt.datetime.now(dt.timezone.utc),
        "host": socket.gethostname(),
        "config_json": canonical_json(cfg),
        "duration_s": 0.0,
        **_slurm_ids(),
    }
    row.update(values)
    return row


def _write_record(
    task: TrialTask, cfg, provenance: dict[str, Any], row_counts: dict[str, int], device: str
) -> None:
    """Write the trial's record: the commit point of a finished trial (shards are written before it)."""
    record = dict(
        provenance,
        setting_id=setting_id(task.kind, cfg),
        row_counts_json=json.dumps(row_counts, sort_keys=True),
        device=device,
    )
    table = pa.Table.from_pylist([record], schema=results.TRIAL_RECORD)
    results.write_atomic(results.record_path(Path(task.study_dir), task.trial_id), table)


def execute_trial(task: TrialTask) -> TrialOutcome:
    """Run one trial and write its shards, then its record; a raised error becomes a failed record.

    Re-running a finished trial is a no-op, so duplicated deliveries (requeued Slurm tasks,
    resumed sweeps) never count a trial twice. A task that is not a trial (the attack stage's chunks,
    ``privstudy.harness.attack_stage.AttackTask``) runs through its own ``execute``.
    """
    if not isinstance(task, TrialTask):
        return task.execute()
    study_dir = Path(task.study_dir)
    if is_done(study_dir, task.trial_id):
        return TrialOutcome(task.trial_id, "skipped", None, 0.0)
    kind = get_kind(task.kind)
    cfg = from_mapping(kind.config_cls, task.config)
    provenance = _provenance(task, cfg)
    start = time.perf_counter()
    row_counts: dict[str, int] = {}
    device = "cpu"
    try:
        if kind.uses_tensorflow:
            from privstudy.harness.tf_setup import configure_tensorflow

            configure_tensorflow(task.cpus)
        device = _device(kind.uses_tensorflow)
        produced = kind.run(cfg)
        unknown = set(produced) - set(kind.tables)
        if unknown:
            raise ValueError(f"kind {task.kind} returned undeclared tables {sorted(unknown)}")
        provenance["duration_s"] = time.perf_counter() - start
        # Convert every table before writing any, so a schema error leaves nothing behind.
        arrow = {
            name: results.to_arrow(rows, kind.tables[name], provenance, name)
            for name, rows in produced.items()
        }
        error = None
    except Exception:  # noqa: BLE001 - any failure of the science is recorded, the sweep carries on
        error = traceback.format_exc()
        provenance.update(status="failed", error=error, duration_s=time.perf_counter() - start)
        arrow = {}
    try:
        for name, table in arrow.items():
            results.write_atomic(results.shard_path(study_dir, name, task.trial_id), table)
            row_counts[name] = table.num_rows
        _write_record(task, cfg, provenance, row_counts, device)
    except OSError as exc:
        # The folder, not the trial, failed: leave no shard behind and no record (the trial stays
        # pending), and stop the sweep.
        for name in row_counts:
            try:
                results.shard_path(study_dir, name, task.trial_id).unlink(missing_ok=True)
            except OSError:
                pass
        raise InfrastructureError(infra_message(study_dir, exc)) from None
    last_line = error.strip().splitlines()[-1] if error else None
    return TrialOutcome(task.trial_id, provenance["status"], last_line, provenance["duration_s"])


def write_lost_record(task: TrialTask, reason: str, detail: str, slurm_task: Optional[str] = None) -> None:
    """Record a trial whose process died without writing its record (e.g. a cancelled Slurm task).

    ``reason`` is the error's last line (what `privstudy status` shows); ``detail`` goes above it.
    An attack-stage chunk has no record: its units not committed are simply computed by the next run.
    """
    if not isinstance(task, TrialTask):
        return
    cfg = from_mapping(get_kind(task.kind).config_cls, task.config)
    array_job, _, array_task = (slurm_task or "").partition("_")
    provenance = _provenance(
        task,
        cfg,
        status="failed",
        error=f"{detail}\n{reason}",
        slurm_job_id=slurm_task,
        slurm_array_job_id=array_job or None,
        slurm_array_task_id=array_task or None,
    )
    _write_record(task, cfg, provenance, {}, "unknown")


def execute_chunk(tasks: list[TrialTask]) -> list[TrialOutcome]:
    """Run several short trials in one process (one TensorFlow import, one Slurm array task)."""
    return [execute_trial(t) for t in tasks]
