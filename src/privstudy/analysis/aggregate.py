"""Aggregate a study's shards into tables (Markdown and CSV), figures (PNG) and a report."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable, Optional

from privstudy.analysis import common
from privstudy.analysis.options import add_output_options, output_error
from privstudy.harness import results
from privstudy.harness.lock import LockHeld

Builder = Callable[[common.StudyData, Path], list[str]]


def builder_for(kind: str) -> Optional[Builder]:
    """The ``build`` function of module ``privstudy.analysis.<kind>``, or None when the kind has no tables.

    Analysis modules are found by the kind's name, so adding a kind adds its analysis module and edits
    nothing here; analysis never imports the trial code itself.
    """
    name = f"{__package__}.{kind}"
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name).build


def aggregate_study(
    study_dir: Path, out_dir: Optional[Path] = None, allow_damaged: bool = False
) -> tuple[Path, int, int]:
    """Write ``tables/``, ``figures/`` and ``report.md`` under ``out_dir`` (default: the study folder).

    Everything is built in a staging folder first and moved into place only when all of it is written.

    Args:
        study_dir: the study folder (only read).
        out_dir: where the outputs go; another folder for a study on a read-only mount.
        allow_damaged: build over the undamaged trials (the report lists the damaged ones by table).

    Returns:
        (report path, number of failed trials, number of pending trials).
    """
    out_dir = out_dir or study_dir
    study = common.load_study(study_dir, allow_damaged)
    study.store_dir = out_dir
    status = study.status
    lines = [
        f"# Study `{study.name}`",
        "",
        study.manifest.get("description", "").strip(),
        "",
        f"Trials: {status.total} in the spec; {status.done} done, {status.failed} failed, "
        f"{status.pending} pending.",
        "",
    ]
    # Gaps come first, so a table is never read without knowing what it leaves out.
    if status.damage:
        lines += [
            f"**{len(status.damaged)} done trials have damaged files and are left out of every table "
            f"(built with --allow-damaged; `privstudy sweep` reruns them):**",
            "",
        ]
        lines += [
            f"- `{d.trial_id}`: missing from table `{d.table or '(all)'}`: {d.problem}" for d in status.damage
        ]
        lines.append("")
    if status.failed or status.pending:
        lines += ["**Incomplete study: the tables below cover the done trials only.**", ""]
        for f in status.failures:
            lines.append(f"- failed `{f['trial_id']}` ({f['kind']}): {f['error']}")
        if status.pending:
            lines.append(f"- {status.pending} trials have no result yet (`privstudy sweep` resumes them)")
        lines.append("")
    with common.study_output(study_dir, out_dir, "aggregate") as stage:
        for kind in sorted(study.expected["kind"].unique()):
            builder = builder_for(kind)
            if builder is None:
                lines += [f"(no tables are defined for kind `{kind}`)", ""]
                continue
            lines += builder(study, stage) + [""]
        results.write_text_atomic(stage / "report.md", "\n".join(lines).rstrip() + "\n")
    return out_dir / "report.md", status.failed, status.pending


def main(argv: list[str] | None = None) -> int:
    """Aggregate one study folder, or every study folder under a results root."""
    parser = argparse.ArgumentParser(
        prog="aggregate.py",
        description="Turn a study's Parquet shards into tables (DIR/tables/*.md, "
        "*.csv), figures (DIR/figures/*.png) and DIR/report.md. Reads only; never imports TensorFlow.",
    )
    parser.add_argument("study_dir", metavar="DIR", help="results/<study>, or a results root of several")
    add_output_options(parser)
    args = parser.parse_args(argv)
    root = Path(args.study_dir)
    if (root / results.MANIFEST).is_file():
        dirs = [root]
    else:
        dirs = sorted(p.parent for p in root.glob(f"*/{results.MANIFEST}")) if root.is_dir() else []
    if not dirs:
        print(
            f"error: {root}: no study folder here (no {results.MANIFEST}); pass results/<study name> "
            f"as written by `privstudy sweep`",
            file=sys.stderr,
        )
        return 2
    for d in dirs:
        out = d if args.out is None else (Path(args.out) if len(dirs) == 1 else Path(args.out) / d.name)
        try:
            report, n_failed, n_pending = aggregate_study(d, out, args.allow_damaged)
        except (common.AnalysisError, results.ResultsError, LockHeld) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except OSError as err:
            print(f"error: {output_error(out, err)}", file=sys.stderr)
            return 2
        print(f"{d}: tables in {out / 'tables'}, figures in {out / 'figures'}, report {report}")
        if n_failed or n_pending:
            print(
                f"warning: {d}: {n_failed} failed and {n_pending} pending trials are not in the tables",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
