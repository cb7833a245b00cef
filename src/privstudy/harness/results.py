"""Result shards: the Parquet layout of a study folder, the provenance schema and atomic writes.

A study folder holds::

    manifest.json                  every trial of the study (written before any trial runs)
    spec.yaml                      the study spec as given
    trials/<trial_id>.parquet      one record per finished trial: status done or failed (the commit)
    shards/<table>/<trial_id>.parquet   the rows of each table the trial emitted

A trial's table shards are written first and its record last, so a trial counts as done only once
all of its rows are on disk; readers ignore shards whose trial has no ``done`` record.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 2
"""Bump when a table's columns change name or meaning; analysis refuses shards of another version.

2: timing columns end in ``_s`` (``train_s``, not ``train_seconds``); records name ``row_counts_json``.
"""

PROVENANCE = pa.schema(
    [
        ("study", pa.string()),
        ("trial_id", pa.string()),
        ("kind", pa.string()),
        ("schema_version", pa.int32()),
        ("code_version", pa.string()),
        ("seed", pa.int64()),
        ("status", pa.string()),  # "done" or "failed"
        ("error", pa.string()),  # the traceback of a failed trial, else null
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("duration_s", pa.float64()),
        ("host", pa.string()),
        ("slurm_job_id", pa.string()),
        ("slurm_array_job_id", pa.string()),
        ("slurm_array_task_id", pa.string()),
        ("config_json", pa.string()),
    ]
)

TRIAL_RECORD = pa.schema(
    list(PROVENANCE)
    + [
        ("setting_id", pa.string()),  # hash of the config without its seed: trials of one setting share it
        ("row_counts_json", pa.string()),  # table name -> number of rows written, as JSON
        ("device", pa.string()),  # e.g. "cpu" or "GPU:0 (NVIDIA A100)"
    ]
)

MANIFEST = "manifest.json"
SPEC_COPY = "spec.yaml"
TRIALS_DIR = "trials"
SHARDS_DIR = "shards"
TMP_SUFFIX = ".tmp"
FOREIGN_TEMP_AGE_S = 3600.0
_HOST = socket.gethostname().replace("/", "_")
_WRITER = re.compile(r"\.w(\d+)@(.+)\.tmp$")


def table_schema(kind_columns: pa.Schema) -> pa.Schema:
    """The full schema of a table: provenance columns, then the kind's own."""
    clash = set(kind_columns.names) & set(PROVENANCE.names)
    if clash:
        raise ValueError(f"table columns {sorted(clash)} clash with provenance columns")
    return pa.schema(list(PROVENANCE) + list(kind_columns))


def to_arrow(
    rows: pd.DataFrame, kind_columns: pa.Schema, provenance: Mapping[str, Any], table: str
) -> pa.Table:
    """Rows of one table plus provenance, cast to the table's explicit schema.

    Raises:
        ValueError: when the rows' columns are not exactly the schema's (a bug in the trial kind).
    """
    got, want = list(rows.columns), kind_columns.names
    if sorted(got) != sorted(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise ValueError(f"table {table}: columns differ from its schema (missing {missing}, extra {extra})")
    n = len(rows)
    arrays = [pa.repeat(pa.scalar(provenance[f.name], type=f.type), n) for f in PROVENANCE]
    for f in kind_columns:
        arrays.append(
            pa.array(
                rows[f.name].tolist() if f.type == pa.string() else rows[f.name].to_numpy(),
                type=f.type,
                from_pandas=True,
            )
        )
    return pa.Table.from_arrays(arrays, schema=table_schema(kind_columns))


def write_file_atomic(path: Path, mode: str, write: Callable[[IO], None]) -> None:
    """Write a file so that readers see all of it or none of it (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.w{os.getpid()}@{_HOST}{TMP_SUFFIX}")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, table: pa.Table) -> None:
    """Write a Parquet file atomically."""
    write_file_atomic(path, "wb", lambda fh: pq.write_table(table, fh, compression="zstd"))


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file atomically."""
    write_file_atomic(path, "w", lambda fh: fh.write(text))


def record_path(study_dir: Path, trial_id: str) -> Path:
    """Where a trial's record lives."""
    return study_dir / TRIALS_DIR / f"{trial_id}.parquet"


def shard_path(study_dir: Path, table: str, trial_id: str) -> Path:
    """Where a trial's shard of one table lives."""
    return study_dir / SHARDS_DIR / table / f"{trial_id}.parquet"


def temp_writer_gone(tmp: Path, now: Optional[float] = None) -> bool:
    """Whether the process that was writing a temp file is gone: on this host, its pid no longer exists;
    written elsewhere (another node of a shared file system) or of unknown writer, the file has not
    changed for ``FOREIGN_TEMP_AGE_S`` (a write takes seconds)."""
    from privstudy.harness.lock import pid_alive

    match = _WRITER.search(tmp.name)
    if match and match.group(2) == _HOST:
        return not pid_alive(int(match.group(1)))
    try:
        age = (now or time.time()) - tmp.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > FOREIGN_TEMP_AGE_S


def remove_stale_temp_files(study_dir: Path) -> int:
    """Delete temp files whose writer is gone (``temp_writer_gone``); returns how many were removed.

    A temp file of a live writer (another sweep's worker, a Slurm task still running) is left alone.
    """
    removed = 0
    for tmp in study_dir.rglob(f".*{TMP_SUFFIX}"):
        if tmp.is_file() and temp_writer_gone(tmp):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _parquet_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and not p.name.startswith("."))


def read_records(study_dir: Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """All trial records of a study (one row per trial that finished, done or failed)."""
    files = _parquet_files(study_dir / TRIALS_DIR)
    names = list(columns) if columns is not None else TRIAL_RECORD.names
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f, columns=names))
        except (pa.ArrowException, OSError):
            continue  # a damaged record: its trial is not done; privstudy.harness.integrity reports it
    if not tables:
        return TRIAL_RECORD.empty_table().select(names).to_pandas()
    return pa.concat_tables(tables).to_pandas()


def read_table(study_dir: Path, table: str, trial_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows of one table over the study's trials (by default every trial recorded as done).

    Args:
        study_dir: the study folder.
        table: the table name.
        trial_ids: restrict to these trials; None means all done trials.

    Returns:
        The concatenated rows; an empty frame when there are none.
    """
    if trial_ids is None:
        records = read_records(study_dir, ["trial_id", "status"])
        trial_ids = records.loc[records["status"] == "done", "trial_id"]
    files = [shard_path(study_dir, table, t) for t in trial_ids]
    files = [f for f in files if f.exists()]
    if not files:
        return pd.DataFrame()
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()


_OS_ERRORS = {  # errno -> (what happened, what to do)
    errno.ENOSPC: ("no space left on the device", "free space"),
    errno.EDQUOT: ("disk quota exceeded", "free space or raise the quota"),
    errno.EROFS: ("read-only file system", "pass --results on a writable file system"),
    errno.EACCES: ("permission denied", "pass --results in a folder you can write"),
    errno.ENOENT: ("it vanished (deleted or unmounted?)", "check the file system"),
    errno.ESTALE: ("stale file handle (the file system was remounted?)", "check the mount"),
    errno.EIO: ("I/O error", "check the file system"),
}


def os_error_reason(exc: OSError) -> tuple[str, str]:
    """(what happened, what to do) for an OSError of a results or output folder, in words."""
    return _OS_ERRORS.get(exc.errno, (exc.strerror or type(exc).__name__, "check the file system"))


class ResultsError(RuntimeError):
    """A study folder that cannot be used as it is; the message names the problem and the fix."""


def read_manifest(study_dir: Path) -> dict[str, Any]:
    """The study's manifest (its expanded trials).

    Raises:
        ResultsError: when it is missing or unreadable (e.g. truncated).
    """
    path = study_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or not isinstance(manifest.get("trials"), list):
            raise ValueError("no list of trials")
    except FileNotFoundError:
        raise ResultsError(
            f"{study_dir}: not a study folder (no {MANIFEST}); pass results/<study name> as written by "
            f"`privstudy sweep`"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResultsError(
            f"{path} is damaged ({type(exc).__name__}); rerun `privstudy sweep` with the study's spec "
            f"(a copy is {study_dir / SPEC_COPY}) to rewrite it: finished trials are kept"
        ) from None
    return manifest
