"""Checking a study folder against its own records, and moving damaged trials aside.

Every done trial's record names the tables it committed and their row counts (``row_counts_json``).
``verify`` checks, from Parquet metadata only (no data is read), that each of those shards exists, is a
readable Parquet file, holds exactly that many rows and has its table's columns; and that every record
file is itself readable. A trial that fails any check is *damaged*: it is not done, `privstudy sweep`
moves its files aside (``quarantine``: into ``damaged/<time>/``, never deleted) and runs it again, and
analysis refuses to build tables over it unless told to proceed without it.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import os
from pathlib import Path
from typing import Optional

import pyarrow.parquet as pq

from privstudy.harness import results

DAMAGED_DIR = "damaged"


@dataclasses.dataclass(frozen=True)
class Damage:
    """One problem of one trial's files."""

    trial_id: str
    problem: str  # one line: what is wrong
    path: Path  # the file concerned
    table: Optional[str] = None  # the table, for a shard

    def line(self) -> str:
        where = f"table {self.table}: " if self.table else ""
        return f"{self.trial_id}: {where}{self.problem} ({self.path})"


def unreadable_records(study_dir: Path) -> list[Damage]:
    """Record files that are not readable Parquet trial records."""
    out = []
    folder = study_dir / results.TRIALS_DIR
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.parquet")):
        if path.name.startswith("."):
            continue
        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except Exception as exc:  # noqa: BLE001 - any unreadable file is damage, whatever pyarrow says
            out.append(Damage(path.stem, f"trial record unreadable: {_short(exc)}", path))
            continue
        missing = [c for c in ("trial_id", "status", "row_counts_json") if c not in names]
        if missing:
            out.append(Damage(path.stem, f"trial record lacks columns {missing}", path))
    return out


def verify(study_dir: Path, records=None) -> list[Damage]:
    """Every damage of the study's done trials and record files, sorted by trial id.

    Args:
        study_dir: the study folder.
        records: its records (``results.read_records``), read here unless given.
    """
    damage = unreadable_records(study_dir)
    if records is None:
        records = results.read_records(study_dir, ["trial_id", "kind", "status", "row_counts_json"])
    done = records[records["status"] == "done"]
    columns: dict = collections.defaultdict(list)
    for trial_id, kind, counts_json in zip(done["trial_id"], done["kind"], done["row_counts_json"]):
        try:
            counts = json.loads(counts_json or "{}")
        except ValueError:
            damage.append(Damage(trial_id, "row counts unreadable", results.record_path(study_dir, trial_id)))
            continue
        for table, n_rows in sorted(counts.items()):
            found = _check_shard(study_dir, trial_id, table, int(n_rows))
            if isinstance(found, Damage):
                damage.append(found)
            else:
                columns[(kind, table)].append((trial_id, found))
    # Columns: every shard of a (kind, table) has the columns most of them have. (Analysis never
    # imports the trial kinds, so their declared schemas are not at hand here.)
    for (_, table), shards in columns.items():
        common = collections.Counter(names for _, names in shards).most_common(1)[0][0]
        for trial_id, names in shards:
            missing = [c for c in common if c not in names]
            if missing:
                path = results.shard_path(study_dir, table, trial_id)
                damage.append(Damage(trial_id, f"shard lacks columns {missing[:5]}", path, table))
    return sorted(damage, key=lambda d: (d.trial_id, d.table or ""))


def _check_shard(study_dir: Path, trial_id: str, table: str, n_rows: int):
    """The shard's column names, or its Damage."""
    path = results.shard_path(study_dir, table, trial_id)
    if not path.exists():
        return Damage(trial_id, f"shard missing (the record says {n_rows} rows)", path, table)
    try:
        meta = pq.ParquetFile(path)
        got, names = meta.metadata.num_rows, tuple(meta.schema_arrow.names)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is damage, whatever pyarrow says
        return Damage(trial_id, f"shard unreadable: {_short(exc)}", path, table)
    if got != n_rows:
        return Damage(trial_id, f"shard has {got} rows, the record says {n_rows}", path, table)
    return names


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]


def damaged_trials(damage: list[Damage]) -> list[str]:
    """The ids of the damaged trials, sorted, once each."""
    return sorted({d.trial_id for d in damage})


def quarantine(study_dir: Path, damage: list[Damage]) -> Optional[Path]:
    """Move every file of each damaged trial (its record and all its shards) to ``damaged/<time>/``,
    keeping their relative paths, and write what was wrong there; returns that folder (None if no damage).

    Nothing is deleted: the files can be inspected, or moved back.
    """
    ids = damaged_trials(damage)
    if not ids:
        return None
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = study_dir / DAMAGED_DIR / stamp
    for trial_id in ids:
        files = [results.record_path(study_dir, trial_id)]
        shards = study_dir / results.SHARDS_DIR
        if shards.is_dir():
            files += [t / f"{trial_id}.parquet" for t in sorted(shards.iterdir()) if t.is_dir()]
        for f in files:
            if f.exists():
                target = dest / f.relative_to(study_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, target)
    results.write_text_atomic(dest / "WHY.txt", "\n".join(d.line() for d in damage) + "\n")
    return dest
