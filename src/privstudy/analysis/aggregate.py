"""Aggregate a study's shards into tables (Markdown and CSV), figures (PNG) and a report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from privstudy.analysis import cnn, common, linprog, mia
from privstudy.harness import results

# Kind name -> the module building its tables; analysis never imports the trial code itself.
BUILDERS = {linprog.KIND: linprog.build, cnn.KIND: cnn.build, mia.KIND: mia.build}


def aggregate_study(study_dir: Path) -> tuple[Path, int, int]:
    """Write ``tables/``, ``figures/`` and ``report.md`` under a study folder.

    Returns:
        (report path, number of failed trials, number of pending trials).
    """
    study = common.load_study(study_dir)
    n_expected = len(study.expected)
    done = int((study.records["status"] == "done").sum())
    failed = study.records[study.records["status"] == "failed"]
    pending = n_expected - len(study.records)
    lines = [f"# Study `{study.name}`", "", study.manifest.get("description", "").strip(), "",
             f"Trials: {n_expected} in the spec; {done} done, {len(failed)} failed, {pending} pending.", ""]
    # Gaps come first, so a table is never read without knowing what it leaves out.
    if len(failed) or pending:
        lines += ["**Incomplete study: the tables below cover the done trials only.**", ""]
        for r in failed.sort_values("trial_id").itertuples():
            last = (r.error or "").strip().splitlines()[-1] if r.error else ""
            lines.append(f"- failed `{r.trial_id}` ({r.kind}): {last}")
        if pending:
            lines.append(f"- {pending} trials have no result yet (`privstudy sweep` resumes them)")
        lines.append("")
    for kind in sorted(study.expected["kind"].unique()):
        builder = BUILDERS.get(kind)
        if builder is None:
            lines += [f"(no tables are defined for kind `{kind}`)", ""]
            continue
        lines += builder(study, study_dir) + [""]
    report = study_dir / "report.md"
    results.write_text_atomic(report, "\n".join(lines).rstrip() + "\n")
    return report, len(failed), pending


def main(argv: list[str] | None = None) -> int:
    """Aggregate one study folder, or every study folder under a results root."""
    parser = argparse.ArgumentParser(
        prog="aggregate.py", description="Turn a study's Parquet shards into tables (DIR/tables/*.md, "
        "*.csv), figures (DIR/figures/*.png) and DIR/report.md. Reads only; never imports TensorFlow.")
    parser.add_argument("study_dir", metavar="DIR", help="results/<study>, or a results root of several")
    args = parser.parse_args(argv)
    root = Path(args.study_dir)
    if (root / results.MANIFEST).is_file():
        dirs = [root]
    else:
        dirs = sorted(p.parent for p in root.glob(f"*/{results.MANIFEST}")) if root.is_dir() else []
    if not dirs:
        print(f"error: {root}: no study folder here (no {results.MANIFEST}); pass results/<study name> "
              f"as written by `privstudy sweep`", file=sys.stderr)
        return 2
    for d in dirs:
        try:
            report, n_failed, n_pending = aggregate_study(d)
        except common.AnalysisError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{d}: tables in {d / 'tables'}, figures in {d / 'figures'}, report {report}")
        if n_failed or n_pending:
            print(f"warning: {d}: {n_failed} failed and {n_pending} pending trials are not in the tables",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
