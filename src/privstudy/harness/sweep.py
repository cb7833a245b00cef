"""Sweeps: validate a study, record its manifest, run the trials not yet done, report what happened."""
from __future__ import annotations

import collections
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Optional, TextIO

from privstudy.harness import executors, results
from privstudy.harness.spec import Study
from privstudy.harness.worker import TrialTask, code_version

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
LOST_MARK = "SlurmTaskLost: "  # the last line of the record of a trial whose Slurm task vanished


@dataclasses.dataclass
class StudyStatus:
    """Counts of a study's trials by state, and the failures with their last error line."""

    done: int
    failed: int
    pending: int
    failures: list[dict[str, Any]]  # {trial_id, kind, error}
    unknown_records: int  # records of trials no longer in the manifest (spec changed)

    def as_json(self) -> dict[str, Any]:
        """The machine-readable form printed by ``privstudy status --json``."""
        return {"done": self.done, "failed": self.failed, "pending": self.pending,
                "failures": self.failures}


def study_dir_for(study: Study, results_root: Path) -> Path:
    """Where a study's results live: ``<results root>/<study name>``."""
    return results_root / study.name


def write_manifest(study: Study, study_dir: Path) -> None:
    """Record the study's expanded trials and spec, so `status` and analysis need no spec file."""
    manifest = {"study": study.name, "description": study.description, "spec_path": str(study.path),
                "smoke": study.smoke, "code_version": code_version(),
                "trials": [t.manifest_entry() for t in study.trials]}
    results.write_text_atomic(study_dir / results.MANIFEST, json.dumps(manifest, indent=1) + "\n")
    results.write_text_atomic(study_dir / results.SPEC_COPY, study.text)


def study_status(study_dir: Path) -> StudyStatus:
    """Count a study's trials by state from its manifest and records."""
    manifest = results.read_manifest(study_dir)
    expected = {t["trial_id"]: t["kind"] for t in manifest["trials"]}
    records = results.read_records(study_dir, ["trial_id", "status", "error"])
    known = records[records["trial_id"].isin(expected.keys())]
    done = int((known["status"] == "done").sum())
    failed_rows = known[known["status"] == "failed"]
    failures = [{"trial_id": r.trial_id, "kind": expected[r.trial_id],
                 "error": (r.error or "").strip().splitlines()[-1] if r.error else ""}
                for r in failed_rows.itertuples()]
    return StudyStatus(done=done, failed=len(failed_rows), pending=len(expected) - len(known),
                       failures=failures, unknown_records=int(len(records) - len(known)))


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
    return [TrialTask(study=study.name, study_dir=str(study_dir), kind=t.kind, config=t.config.to_dict(),
                      trial_id=t.trial_id, code_version=version, cpus=t.resources.cpus) for t in trials]


def describe_plan(study: Study, todo: list, skipped: dict[str, int], out: TextIO) -> None:
    """Print what a sweep would do: trials per kind, resources, what is already done."""
    by_kind = collections.Counter(t.kind for t in study.trials)
    print(f"study {study.name}: {len(study.trials)} trials "
          f"({', '.join(f'{k}: {n}' for k, n in by_kind.items())})", file=out)
    for kind in study.kinds():
        res = next(t.resources for t in study.trials if t.kind == kind)
        print(f"  {kind}: cpus={res.cpus} mem_gb={res.mem_gb:g} gpus={res.gpus} "
              f"timeout_min={res.timeout_min} partition={res.partition or '(default)'}", file=out)
    print(f"  to run: {len(todo)}; already done: {skipped.get('done', 0)}; "
          f"failed before (not retried): {skipped.get('failed', 0)}", file=out)


def resolve_executor(executor: str, out: TextIO) -> str:
    """``auto`` becomes ``slurm`` where a Slurm controller answers, else ``local``; says which."""
    if executor != "auto":
        return executor
    from privstudy.harness.slurm import slurm_reachable

    ok, why = slurm_reachable()
    chosen = "slurm" if ok else "local"
    print(f"executor auto: {chosen} ({why})", file=out)
    return chosen


def run_sweep(study: Study, results_root: Path, executor: str, workers: Optional[int],
              retry_failed: bool, dry_run: bool, show_progress: bool = True,
              out: Optional[TextIO] = None, err: Optional[TextIO] = None, no_wait: bool = False) -> int:
    """Run a validated study; returns the process exit code (0 all done, 1 some failed, 130 interrupted)."""
    out, err = out or sys.stdout, err or sys.stderr
    study_dir = study_dir_for(study, results_root)
    executor = resolve_executor(executor, out)
    if no_wait and executor != "slurm":
        print(f"error: --no-wait needs the slurm executor (this sweep uses {executor})", file=err)
        return EXIT_USAGE
    todo, skipped = plan(study, study_dir, retry_failed)
    describe_plan(study, todo, skipped, out)
    if dry_run:
        if executor == "slurm":
            from privstudy.harness.slurm import chunks_for
            by_id = {t.trial_id: t.resources for t in study.trials}
            for res, chunks in chunks_for(tasks_for(study, study_dir, todo), by_id):
                print(f"  slurm: {len(chunks)} array tasks of up to {res.chunk_size()} "
                      f"{chunks[0][0].kind} trials", file=out)
        print(f"dry run: nothing written; results would go to {study_dir}", file=out)
        return EXIT_OK
    if executor == "slurm":
        from privstudy.harness.slurm import live_tasks, slurm_reachable
        ok, why = slurm_reachable()
        if not ok:
            print(f"error: Slurm is not reachable here ({why}); run on a cluster's login node, or use "
                  f"--executor local (or auto)", file=err)
            return EXIT_USAGE
        live = live_tasks(study_dir)
        if live:
            arrays = sorted({t.split("_")[0] for t in live})
            print(f"error: {len(live)} array tasks of an earlier sweep of this study are still queued or "
                  f"running (jobs {', '.join(arrays)}); wait for them (`privstudy status {study_dir}`) or "
                  f"`scancel {' '.join(arrays)}`, then rerun", file=err)
            return EXIT_USAGE
    study_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(study, study_dir)
    # This process owns the folder for the run (no task of an earlier sweep is alive): temp files
    # here were left by killed writers.
    results.remove_stale_temp_files(study_dir)
    tasks = tasks_for(study, study_dir, todo)
    if executor == "slurm":
        return _run_slurm(study, study_dir, tasks, show_progress, no_wait, out, err)
    n_workers = workers or executors.default_workers()
    if executor == "local":
        print(f"executor local: {min(n_workers, max(1, len(tasks)))} worker processes", file=out)
    counts: collections.Counter = collections.Counter()
    try:
        if executor == "inline":
            outcomes = executors.run_inline(tasks, show_progress)
        elif executor == "local":
            outcomes = executors.run_local(
                tasks, n_workers, show_progress,
                on_restart=lambda n, left: print(f"a worker died; restarting the pool ({n}/"
                                                 f"{executors.MAX_POOL_RESTARTS}), {left} trials left",
                                                 file=err))
        else:
            raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(executors.EXECUTORS)}")
        for outcome in outcomes:
            counts[outcome.status] += 1
            if outcome.status == "failed":
                print(f"trial {outcome.trial_id} failed: {outcome.error}", file=err)
    except KeyboardInterrupt:
        # The workers are stopped by now; a write they were in the middle of left only a temp file.
        results.remove_stale_temp_files(study_dir)
        print(f"\ninterrupted: {counts['done']} trials finished this run; rerun the same command to "
              f"resume (finished trials are skipped)", file=err)
        return EXIT_INTERRUPTED
    except executors.WorkersDied as died:
        print(f"error: {died}", file=err)
        return EXIT_FAILED
    return report(study_dir, out, err)


def _run_slurm(study: Study, study_dir: Path, tasks: list[TrialTask], show_progress: bool,
               no_wait: bool, out: TextIO, err: TextIO) -> int:
    import signal

    from privstudy.harness import slurm

    if not tasks:
        return report(study_dir, out, err)
    resources = {t.trial_id: t.resources for t in study.trials}
    try:
        folder, jobs = slurm.submit(tasks, resources, study.name, study_dir, out)
    except slurm.SlurmError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    print(f"slurm logs and scripts: {folder}", file=out)
    if no_wait:
        print(f"not waiting: watch with `privstudy status {study_dir}`; rerun the same command after the "
              f"jobs end to pick up anything lost", file=out)
        return EXIT_OK

    def on_term(signum, frame):  # the driver's own job was cancelled or hit its time limit
        raise SystemExit(f"driver stopped by signal {signum}; the array jobs carry on: watch with "
                         f"`privstudy status {study_dir}`, rerun the same command after they end")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        outcomes = slurm.wait(jobs, tasks, study_dir, show_progress, err)
    except KeyboardInterrupt:
        slurm.cancel(jobs, err)
        results.remove_stale_temp_files(study_dir)
        print("\ninterrupted: array jobs cancelled; rerun the same command to resume (finished trials are "
              "skipped)", file=err)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    for outcome in outcomes:
        if outcome.status == "failed" and LOST_MARK not in (outcome.error or ""):
            print(f"trial {outcome.trial_id} failed: {outcome.error}", file=err)
    return report(study_dir, out, err)


def report(study_dir: Path, out: TextIO, err: TextIO) -> int:
    """Print the study's final status; 1 when any trial failed or is missing."""
    status = study_status(study_dir)
    print(f"{study_dir}: {status.done} done, {status.failed} failed, {status.pending} pending", file=out)
    lost = sum(1 for f in status.failures if f["error"].startswith(LOST_MARK))
    if status.failed - lost:
        print(f"{status.failed - lost} trials failed; see `privstudy status {study_dir}`, then rerun with "
              f"--retry-failed", file=err)
    if lost:
        print(f"{lost} trials were lost with their Slurm task; rerun the same command to run them again",
              file=err)
    return EXIT_OK if status.failed == 0 and status.pending == 0 else EXIT_FAILED
