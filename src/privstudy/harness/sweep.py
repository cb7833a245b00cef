"""Sweeps: validate a study, record its manifest, run the trials not yet done, report what happened."""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path
from typing import Optional, TextIO

from privstudy.harness import executors, results
from privstudy.harness.spec import Study
from privstudy.harness.status import LOST_MARK, study_status
from privstudy.harness.worker import TrialTask, code_version

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def study_dir_for(study: Study, results_root: Path) -> Path:
    """Where a study's results live: ``<results root>/<study name>``."""
    return results_root / study.name


def write_manifest(study: Study, study_dir: Path) -> None:
    """Record the study's expanded trials and spec, so `status` and analysis need no spec file."""
    manifest = {
        "study": study.name,
        "description": study.description,
        "spec_path": str(study.path),
        "smoke": study.smoke,
        "code_version": code_version(),
        "trials": [t.manifest_entry() for t in study.trials],
    }
    results.write_text_atomic(study_dir / results.MANIFEST, json.dumps(manifest, indent=1) + "\n")
    results.write_text_atomic(study_dir / results.SPEC_COPY, study.text)


def plan(study: Study, study_dir: Path, retry_failed: bool) -> tuple[list, dict[str, int]]:
    """The trials to run now and the counts of those skipped as done or as failed."""
    status: dict[str, str] = {}
    if (study_dir / results.TRIALS_DIR).is_dir():
        records = results.read_records(study_dir, ["trial_id", "status", "error"])
        status = dict(zip(records["trial_id"], records["status"]))
        # Trials lost with their Slurm task (cancelled, node failure) did not fail: run them again.
        lost = {t for t, e in zip(records["trial_id"], records["error"]) if e and LOST_MARK in e}
        status = {t: ("lost" if t in lost else s) for t, s in status.items()}
    todo, skipped = [], collections.Counter()
    for trial in study.trials:
        state = status.get(trial.trial_id)
        if state == "done" or (state == "failed" and not retry_failed):
            skipped[state] += 1
        else:
            todo.append(trial)
    return todo, dict(skipped)


def tasks_for(study: Study, study_dir: Path, trials: list) -> list[TrialTask]:
    """Picklable tasks for the workers."""
    version = code_version()
    return [
        TrialTask(
            study=study.name,
            study_dir=str(study_dir),
            kind=t.kind,
            config=t.config.to_dict(),
            trial_id=t.trial_id,
            code_version=version,
            cpus=t.resources.cpus,
        )
        for t in trials
    ]


def describe_plan(study: Study, todo: list, skipped: dict[str, int], out: TextIO) -> None:
    """Print what a sweep would do: trials per kind, resources, what is already done."""
    by_kind = collections.Counter(t.kind for t in study.trials)
    print(
        f"study {study.name}: {len(study.trials)} trials "
        f"({', '.join(f'{k}: {n}' for k, n in by_kind.items())})",
        file=out,
    )
    for kind in study.kinds():
        res = next(t.resources for t in study.trials if t.kind == kind)
        print(
            f"  {kind}: cpus={res.cpus} mem_gb={res.mem_gb:g} gpus={res.gpus} "
            f"timeout_min={res.timeout_min} partition={res.partition or '(default)'}",
            file=out,
        )
    print(
        f"  to run: {len(todo)}; already done: {skipped.get('done', 0)}; "
        f"failed before (not retried): {skipped.get('failed', 0)}",
        file=out,
    )


def run_sweep(
    study: Study,
    results_root: Path,
    executor: str,
    workers: Optional[int],
    retry_failed: bool,
    dry_run: bool,
    show_progress: bool = True,
    out: Optional[TextIO] = None,
    err: Optional[TextIO] = None,
    no_wait: bool = False,
) -> int:
    """Run a validated study; returns the process exit code (0 all done, 1 some failed, 130 interrupted)."""
    out, err = out or sys.stdout, err or sys.stderr
    study_dir = study_dir_for(study, results_root)
    name = executors.resolve(executor, out)
    if no_wait and name != "slurm":
        print(f"error: --no-wait needs the slurm executor (this sweep uses {name})", file=err)
        return EXIT_USAGE
    runner = executors.make_executor(name, workers, no_wait)
    todo, skipped = plan(study, study_dir, retry_failed)
    describe_plan(study, todo, skipped, out)
    resources = {t.trial_id: t.resources for t in study.trials}
    if dry_run:
        for line in runner.plan(tasks_for(study, study_dir, todo), resources):
            print(line, file=out)
        print(f"dry run: nothing written; results would go to {study_dir}", file=out)
        return EXIT_OK
    try:
        runner.check(study_dir)
    except executors.ExecutorError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    study_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(study, study_dir)
    # This process owns the folder for the run (no task of an earlier sweep is alive): temp files
    # here were left by killed writers.
    results.remove_stale_temp_files(study_dir)
    tasks = tasks_for(study, study_dir, todo)
    counts: collections.Counter = collections.Counter()
    try:
        for outcome in runner.run(tasks, resources, study_dir, show_progress, out, err):
            counts[outcome.status] += 1
            if outcome.status == "failed" and LOST_MARK not in (outcome.error or ""):
                print(f"trial {outcome.trial_id} failed: {outcome.error}", file=err)
    except KeyboardInterrupt:
        # The workers are stopped by now; a write they were in the middle of left only a temp file.
        runner.interrupted(counts["done"], err)
        results.remove_stale_temp_files(study_dir)
        return EXIT_INTERRUPTED
    except executors.ExecutorError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except executors.WorkersDied as died:
        print(f"error: {died}", file=err)
        return EXIT_FAILED
    if runner.detached:
        return EXIT_OK
    return report(study_dir, out, err)


def report(study_dir: Path, out: TextIO, err: TextIO) -> int:
    """Print the study's final status; 1 when any trial failed or is missing."""
    status = study_status(study_dir)
    print(f"{study_dir}: {status.done} done, {status.failed} failed, {status.pending} pending", file=out)
    if status.failed - status.lost:
        print(
            f"{status.failed - status.lost} trials failed; see `privstudy status {study_dir}`, then rerun "
            f"with "
            f"--retry-failed",
            file=err,
        )
    if status.lost:
        print(
            f"{status.lost} trials were lost with their Slurm task; rerun the same command to run them again",
            file=err,
        )
    return EXIT_OK if status.failed == 0 and status.pending == 0 else EXIT_FAILED
