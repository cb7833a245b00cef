"""Sweeps: validate a study, record its manifest, run the trials not yet done, report what happened."""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional, TextIO

from privstudy.harness import executors, results
from privstudy.harness.integrity import damaged_trials, quarantine, verify
from privstudy.harness.lock import LockHeld, StudyLock
from privstudy.harness.spec import Study
from privstudy.harness.status import LOST_MARK, study_status
from privstudy.harness.worker import InfrastructureError, TrialTask, code_version, infra_message

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def study_dir_for(study: Study, results_root: Path) -> Path:
    """Where a study's results live: ``<results root>/<study name>``."""
    return results_root / study.name


class SpecChanged(RuntimeError):
    """The study folder holds a study of the same name with other trials; the message says what changed."""


def _values(trials: list[dict]) -> dict[str, set]:
    out: dict[str, set] = collections.defaultdict(set)
    for t in trials:
        out["kind"].add(t["kind"])
        for k, v in t["config"].items():
            out[k].add(json.dumps(v, sort_keys=True))
    return out


def spec_diff(old: list[dict], new: list[dict]) -> str:
    """One line: how many trials the new spec adds and drops, and which parameters' values changed."""
    old_ids, new_ids = {t["trial_id"] for t in old}, {t["trial_id"] for t in new}
    a, b = _values(old), _values(new)
    changed = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, set()) != b.get(k, set()):
            gone = sorted(a.get(k, set()) - b.get(k, set()))[:3]
            came = sorted(b.get(k, set()) - a.get(k, set()))[:3]
            changed.append(f"{k}: {', '.join(gone) or '-'} -> {', '.join(came) or '-'}")
    what = "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else "")
    added, dropped = len(new_ids - old_ids), len(old_ids - new_ids)
    return f"{added} trials added, {dropped} dropped ({what or 'same values'})"


def write_manifest(study: Study, study_dir: Path, extend: bool = False) -> Optional[str]:
    """Record the study's expanded trials and spec, so `status` and analysis need no spec file.

    A study folder that already holds other trials is not replaced: SpecChanged says what differs,
    unless ``extend`` (the new trials are added; the earlier ones stay in the manifest, visible to
    status and analysis; the earlier spec is kept as ``spec.<time>.yaml``). Nothing is written when
    nothing changed (a finished study can be re-swept on a read-only mount). A damaged manifest is moved
    to ``damaged/`` and rewritten. Returns a line to print, or None.
    """
    new_trials = [t.manifest_entry() for t in study.trials]
    path, note = study_dir / results.MANIFEST, None
    old = None
    if path.exists():
        try:
            old = results.read_manifest(study_dir)
        except results.ResultsError:
            aside = study_dir / "damaged" / f"{results.MANIFEST}.{time.strftime('%Y%m%dT%H%M%S')}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, aside)
            note = f"{path} was damaged: moved to {aside} and rewritten from the spec"
    trials = new_trials
    if old is not None:
        old_ids = [t["trial_id"] for t in old["trials"]]
        if set(old_ids) != {t["trial_id"] for t in new_trials}:
            if not extend:
                raise SpecChanged(
                    f"{study_dir} holds study {old.get('study')!r} with other trials: "
                    f"{spec_diff(old['trials'], new_trials)}; rerun with --extend to add the new trials to "
                    f"this study (earlier records stay), or give the study another name or --results"
                )
            known = set(old_ids)
            trials = old["trials"] + [t for t in new_trials if t["trial_id"] not in known]
            note = f"study extended: {spec_diff(old['trials'], new_trials)}"
            spec_copy = study_dir / results.SPEC_COPY
            if spec_copy.exists():
                os.replace(spec_copy, study_dir / f"spec.{time.strftime('%Y%m%dT%H%M%S')}.yaml")
        elif extend:
            note = "nothing to extend: the spec has the same trials"
    manifest = {
        "study": study.name,
        "description": study.description,
        "spec_path": str(study.path),
        "smoke": study.smoke,
        "code_version": code_version(),
        "trials": trials,
    }
    trials = json.loads(json.dumps(trials))  # as it reads back (tuples become lists)
    if old is None or old.get("trials") != trials or old.get("description") != study.description:
        results.write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")
    spec_copy = study_dir / results.SPEC_COPY
    if not spec_copy.exists() or spec_copy.read_text(encoding="utf-8", errors="replace") != study.text:
        results.write_text_atomic(spec_copy, study.text)
    return note


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
    extend: bool = False,
) -> int:
    """Run a validated study; returns the process exit code (0 all done, 1 some failed or pending,
    2 bad input or an unusable results folder, 130 interrupted)."""
    out, err = out or sys.stdout, err or sys.stderr
    study_dir = study_dir_for(study, results_root)
    name = executors.resolve(executor, out)
    if no_wait and name != "slurm":
        print(f"error: --no-wait needs the slurm executor (this sweep uses {name})", file=err)
        return EXIT_USAGE
    problem = _unusable_root(results_root)
    if problem:
        print(f"error: {problem}", file=err)
        return EXIT_USAGE
    runner = executors.make_executor(name, workers, no_wait)
    if dry_run:
        return _dry_run(study, study_dir, runner, retry_failed, out)
    try:
        runner.check(study_dir)
    except executors.ExecutorError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
        lock = StudyLock(study_dir, f"privstudy sweep {study.name}").acquire()
    except LockHeld as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: {infra_message(study_dir, exc)}", file=err)
        return EXIT_USAGE
    try:
        return _locked_sweep(study, study_dir, runner, retry_failed, show_progress, out, err, extend)
    except OSError as exc:  # the results folder itself: full, read-only, vanished
        print(f"error: {infra_message(study_dir, exc)}", file=err)
        return EXIT_FAILED
    finally:
        lock.release()


def _unusable_root(results_root: Path) -> Optional[str]:
    if results_root.exists() and not results_root.is_dir():
        return f"--results {results_root} is a file, not a folder; pass a folder (default: results)"
    return None


def _dry_run(study: Study, study_dir: Path, runner, retry_failed: bool, out: TextIO) -> int:
    todo, skipped = plan(study, study_dir, retry_failed)
    describe_plan(study, todo, skipped, out)
    resources = {t.trial_id: t.resources for t in study.trials}
    for line in runner.plan(tasks_for(study, study_dir, todo), resources):
        print(line, file=out)
    print(f"dry run: nothing written; results would go to {study_dir}", file=out)
    return EXIT_OK


def _locked_sweep(study, study_dir, runner, retry_failed, show_progress, out, err, extend) -> int:
    try:
        note = write_manifest(study, study_dir, extend)
    except SpecChanged as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    if note:
        print(note, file=out)
    damage = verify(study_dir)
    if damage:
        dest = quarantine(study_dir, damage)
        print(
            f"{len(damaged_trials(damage))} done trials had damaged files; moved to {dest} and run again:",
            file=err,
        )
        for d in damage:
            print(f"  {d.line()}", file=err)
    # We hold the study's lock: temp files whose writer is gone were left by killed writers.
    results.remove_stale_temp_files(study_dir)
    todo, skipped = plan(study, study_dir, retry_failed)
    describe_plan(study, todo, skipped, out)
    resources = {t.trial_id: t.resources for t in study.trials}
    tasks = tasks_for(study, study_dir, todo)
    counts: collections.Counter = collections.Counter()
    try:
        with _sigterm_as_interrupt():
            for outcome in runner.run(tasks, resources, study_dir, show_progress, out, err):
                counts[outcome.status] += 1
                if outcome.status == "failed" and LOST_MARK not in (outcome.error or ""):
                    print(f"trial {outcome.trial_id} failed: {outcome.error}", file=err)
    except KeyboardInterrupt:
        # The workers are stopped by now; a write they were in the middle of left only a temp file.
        runner.interrupted(counts["done"], err)
        results.remove_stale_temp_files(study_dir)
        return EXIT_INTERRUPTED
    except InfrastructureError as exc:
        print(f"error: {exc}", file=err)
        print(f"{counts['done']} trials finished before; rerun the same command to continue", file=err)
        return EXIT_FAILED
    except executors.ExecutorError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except executors.WorkersDied as died:
        print(f"error: {died}", file=err)
        return EXIT_FAILED
    if runner.detached:
        return EXIT_OK
    return report(study_dir, out, err)


class _sigterm_as_interrupt:
    """In the driver, SIGTERM (Slurm's time limit, scancel, kill) stops the sweep as Ctrl-C does: the
    pool and its workers are stopped, finished trials kept."""

    def __enter__(self):
        self._old = None
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    @staticmethod
    def _handle(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


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
