"""A study's trials by state (done, failed, pending), counted in one place from its manifest and records."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from privstudy.harness import results

LOST_MARK = "SlurmTaskLost: "  # the last line of the record of a trial whose Slurm task vanished


def last_line(error: Optional[str]) -> str:
    """The last line of a recorded traceback (what status and reports show); empty when there is none."""
    return error.strip().splitlines()[-1] if error and error.strip() else ""


@dataclasses.dataclass
class StudyStatus:
    """Counts of a study's trials by state, and the failures with their last error line."""

    done: int
    failed: int
    pending: int
    failures: list[dict[str, Any]]  # {trial_id, kind, error}, sorted by trial id
    unknown_records: int  # records of trials no longer in the manifest (spec changed)
    damage: list = dataclasses.field(default_factory=list)  # integrity.Damage of trials in the manifest

    @property
    def damaged(self) -> list[str]:
        """Ids of the trials recorded as done whose files are damaged (counted as pending, not done)."""
        return sorted({d.trial_id for d in self.damage})

    @property
    def total(self) -> int:
        return self.done + self.failed + self.pending

    @property
    def lost(self) -> int:
        """Failed trials that were lost with their Slurm task (a plain rerun retries them)."""
        return sum(1 for f in self.failures if f["error"].startswith(LOST_MARK))

    def as_json(self) -> dict[str, Any]:
        """The machine-readable form printed by ``privstudy status --json``."""
        return {
            "done": self.done,
            "failed": self.failed,
            "pending": self.pending,
            "failures": self.failures,
            "damaged": [
                {"trial_id": d.trial_id, "table": d.table, "problem": d.problem} for d in self.damage
            ],
        }


def study_status(
    study_dir: Path, manifest: Optional[dict] = None, records: Optional[pd.DataFrame] = None
) -> StudyStatus:
    """Count a study's trials by state from its manifest and records (read here unless given).

    The done trials' files are verified (``integrity.verify``, Parquet metadata only): a damaged trial
    counts as pending and is listed in ``damage``.
    """
    from privstudy.harness.integrity import verify

    manifest = manifest if manifest is not None else results.read_manifest(study_dir)
    cols = ["trial_id", "kind", "status", "error", "row_counts_json"]
    if records is None or not set(cols) <= set(records.columns):
        records = results.read_records(study_dir, cols)
    expected = {t["trial_id"]: t["kind"] for t in manifest["trials"]}
    known = records[records["trial_id"].isin(expected.keys())]
    damage = [d for d in verify(study_dir, known) if d.trial_id in expected]
    bad = {d.trial_id for d in damage}
    known = known[~known["trial_id"].isin(bad)]
    failed_rows = known[known["status"] == "failed"].sort_values("trial_id")
    failures = [
        {"trial_id": r.trial_id, "kind": expected[r.trial_id], "error": last_line(r.error)}
        for r in failed_rows.itertuples()
    ]
    return StudyStatus(
        done=int((known["status"] == "done").sum()),
        failed=len(failed_rows),
        pending=len(expected) - len(known),
        failures=failures,
        unknown_records=int((~records["trial_id"].isin(expected.keys())).sum()),
        damage=damage,
    )
