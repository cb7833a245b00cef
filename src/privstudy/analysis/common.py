"""Shared analysis helpers: a study's done trials, setting labels, interval summaries, table output."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from privstudy.harness import results
from privstudy.harness.status import StudyStatus, study_status
from privstudy.stats.intervals import mean_interval


class AnalysisError(RuntimeError):
    """The results cannot be analysed as they are (wrong schema version, no study folder...)."""


@dataclasses.dataclass
class StudyData:
    """What analysis knows of one study: its manifest and the records of its trials."""

    study_dir: Path
    manifest: dict
    records: pd.DataFrame  # one row per recorded trial in the manifest (done or failed)
    expected: pd.DataFrame  # one row per manifest trial: trial_id, kind, setting_id
    status: StudyStatus  # the trials by state
    store_dir: Path | None = None  # where the attack stage keeps its units (None: the study folder)
    _tables: dict = dataclasses.field(default_factory=dict, repr=False)  # (kind, table) -> rows, read once

    @property
    def attack_store(self) -> Path:
        """The folder holding ``attacks/``: the study folder unless outputs go elsewhere (``--out``)."""
        return self.store_dir or self.study_dir

    @property
    def name(self) -> str:
        """The study name."""
        return self.manifest["study"]

    def done_ids(self, kind: str) -> list[str]:
        """The ids of the done trials of one kind, sorted."""
        r = self.records
        return sorted(r.loc[(r["status"] == "done") & (r["kind"] == kind), "trial_id"])

    def table(self, kind: str, table: str) -> pd.DataFrame:
        """Rows of one table over the kind's done trials, with schema-version check; read once per study.

        The frame is shared between callers: copy it before changing it in place.
        """
        key = (kind, table)
        if key not in self._tables:
            self._tables[key] = self._read(kind, table)
        return self._tables[key]

    def _read(self, kind: str, table: str) -> pd.DataFrame:
        rows = results.read_table(self.study_dir, table, self.done_ids(kind))
        if len(rows):
            versions = set(rows["schema_version"].unique())
            if versions != {results.SCHEMA_VERSION}:
                raise AnalysisError(
                    f"{self.study_dir}: table {table} has schema versions {sorted(versions)}; "
                    f"this privstudy reads version {results.SCHEMA_VERSION}: re-run the "
                    f"trials with --retry-failed after deleting their shards, or use the "
                    f"privstudy version that wrote them"
                )
        return rows


def load_study(study_dir: Path, allow_damaged: bool = False) -> StudyData:
    """Read a study's manifest and trial records, and verify the done trials' files.

    Args:
        study_dir: the study folder.
        allow_damaged: build over the undamaged trials only (the report then lists the damaged ones);
            otherwise a damaged trial raises AnalysisError.
    """
    if not (study_dir / results.MANIFEST).is_file():
        raise AnalysisError(
            f"{study_dir}: not a study folder (no {results.MANIFEST}); "
            f"pass results/<study name> as written by `privstudy sweep`"
        )
    try:
        manifest = results.read_manifest(study_dir)
    except results.ResultsError as err:
        raise AnalysisError(str(err)) from None
    expected = pd.DataFrame(
        [
            {"trial_id": t["trial_id"], "kind": t["kind"], "setting_id": t["setting_id"]}
            for t in manifest["trials"]
        ]
    )
    records = results.read_records(study_dir)
    records = records[records["trial_id"].isin(expected["trial_id"])].reset_index(drop=True)
    bad = set(records["schema_version"].unique()) - {results.SCHEMA_VERSION}
    if bad:
        raise AnalysisError(
            f"{study_dir}: trial records of schema version {sorted(bad)}; this privstudy "
            f"reads version {results.SCHEMA_VERSION}"
        )
    status = study_status(study_dir, manifest, records)
    if status.damage and not allow_damaged:
        first = status.damage[0].line()
        raise AnalysisError(
            f"{study_dir}: {len(status.damaged)} done trials have damaged files (first: {first}); "
            f"`privstudy verify {study_dir}` lists them, `privstudy sweep` reruns them; or pass "
            f"--allow-damaged to build the tables without them"
        )
    records = records[~records["trial_id"].isin(status.damaged)].reset_index(drop=True)
    return StudyData(study_dir, manifest, records, expected, status)


def varying_params(configs: Iterable[str], ignore: Sequence[str] = ("seed",)) -> list[str]:
    """Config keys whose values differ between the given config JSONs (the setting's coordinates)."""
    parsed = [json.loads(c) for c in configs]
    if not parsed:
        return []
    keys = [k for k in parsed[0] if k not in ignore]
    return [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in parsed}) > 1]


def add_setting_columns(rows: pd.DataFrame, params: Sequence[str]) -> pd.DataFrame:
    """Add one column per varying parameter, read from each row's config_json."""
    if not len(rows):
        return rows
    cache = {c: json.loads(c) for c in rows["config_json"].unique()}
    out = rows.copy()
    for p in params:
        values = {c: cache[c][p] for c in cache}
        out[p] = rows["config_json"].map(
            lambda c, values=values: json.dumps(values[c]) if isinstance(values[c], list) else values[c]
        )
    return out


def summarise(rows: pd.DataFrame, by: list[str], value: str, prefix: str | None = None) -> pd.DataFrame:
    """Mean and 95% Student-t interval of a per-trial value within each group.

    Returns:
        columns ``by + [<p>_mean, <p>_ci_low, <p>_ci_high, n_trials]`` with p = prefix or value.
    """
    return summarise_columns(rows, by, [(value, prefix or value)])


def summarise_columns(
    rows: pd.DataFrame, by: list[str], columns: Sequence[str | tuple[str, str]]
) -> pd.DataFrame:
    """``summarise`` of several columns in one pass over the groups.

    Args:
        columns: value names, or (value, prefix) pairs.

    Returns:
        columns ``by``, the first column's ``_mean, _ci_low, _ci_high``, ``n_trials`` (counted on the
        first column), then the other columns' triples, in order.
    """
    pairs = [(c, c) if isinstance(c, str) else c for c in columns]
    groups = []
    for key, g in rows.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        for i, (value, p) in enumerate(pairs):
            m, lo, hi, n = mean_interval(g[value].to_numpy(dtype=np.float64))
            row.update({f"{p}_mean": m, f"{p}_ci_low": lo, f"{p}_ci_high": hi})
            if i == 0:
                row["n_trials"] = n
        groups.append(row)
    return pd.DataFrame(groups)


def intervals(numeric: pd.DataFrame, prefix: str) -> list[str]:
    """``fmt_interval`` of each row's ``<prefix>_mean, _ci_low, _ci_high``."""
    cols = [f"{prefix}_mean", f"{prefix}_ci_low", f"{prefix}_ci_high"]
    return [fmt_interval(*v) for v in numeric[cols].itertuples(index=False)]


def interval_bars(frame: pd.DataFrame, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(means, 2 x n error-bar lengths) of ``<prefix>_mean, _ci_low, _ci_high``, for Matplotlib's
    ``errorbar``; an undefined interval (one trial) draws no bar."""
    mean = frame[f"{prefix}_mean"].to_numpy(dtype=float)
    low, high = (frame[f"{prefix}_{c}"].to_numpy(dtype=float) for c in ("ci_low", "ci_high"))
    return mean, np.nan_to_num(np.vstack([mean - low, high - mean]))


def fmt_interval(mean: float, low: float, high: float, digits: int = 3) -> str:
    """``mean [low, high]`` for Markdown tables; ``n/a`` for NaN."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if low == high:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a frame (values as shown by str())."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class Written:
    """A table written as CSV and Markdown: its files and its Markdown body (for the report)."""

    files: list[Path]
    markdown: str


def write_table(out_dir: Path, name: str, numeric: pd.DataFrame, pretty: pd.DataFrame, title: str) -> Written:
    """Write a table as CSV (full precision) and Markdown (intervals formatted), atomically."""
    csv_path, md_path = out_dir / "tables" / f"{name}.csv", out_dir / "tables" / f"{name}.md"
    body = markdown_table(pretty)
    results.write_text_atomic(csv_path, numeric.to_csv(index=False, float_format="%.10g"))
    results.write_text_atomic(md_path, f"# {title}\n\n" + body)
    return Written([csv_path, md_path], body)


def save_figure(fig, out_dir: Path, name: str) -> Path:
    """Write a Matplotlib figure to ``out_dir/figures/<name>.png`` atomically, then close it."""
    import matplotlib.pyplot as plt

    path = out_dir / "figures" / f"{name}.png"
    results.write_file_atomic(path, "wb", lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)
    return path


@contextlib.contextmanager
def staged_output(out_dir: Path):
    """Write outputs into a staging folder, then move every file into ``out_dir`` (same relative path):
    a crash or a full disk while building leaves ``out_dir`` as it was, never half of a new set.

    Yields:
        The staging folder to write into.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = out_dir / f".staging-{uuid.uuid4().hex}"
    stage.mkdir()
    try:
        yield stage
        files = sorted(p for p in stage.rglob("*") if p.is_file())
        for f in files:
            target = out_dir / f.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)  # a rename within one file system: needs no space
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def study_output(study_dir: Path, out_dir: Path, purpose: str):
    """``staged_output`` into ``out_dir``, holding the study's lock when writing into the study folder
    itself (no sweep or other analysis writes there meanwhile)."""
    from privstudy.harness.lock import StudyLock

    if Path(out_dir).resolve() != Path(study_dir).resolve():
        with staged_output(out_dir) as stage:
            yield stage
        return
    with StudyLock(study_dir, purpose), staged_output(out_dir) as stage:
        yield stage
