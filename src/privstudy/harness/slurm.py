"""The Slurm executor: trials packed into submitit job arrays, watched until every task has ended.

Each sweep gets a fresh submitit folder, ``<study>/slurm/<run>/`` (job ids restart with a cluster,
and a reused folder would hand back stale results), holding the sbatch scripts, the pickled
chunks, the task logs ``<job>_<task>_0_log.{out,err}`` and ``jobs.json``, the map from array
tasks to trials that `privstudy status` reads.

Faults: a trial that raises is a failed record written by the task itself, and the task carries on.
A task stopped by its time limit or by preemption is requeued by submitit's checkpointing (the
same chunk again; finished trials are skipped on arrival). A task that ends without a result
(``scancel``, node failure, killed process, requeues used up) is noticed at the next poll of
``sacct``, and each of its unfinished trials gets a failed record of type ``SlurmTaskLost``,
which the next sweep retries without being asked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from privstudy.harness import results
from privstudy.harness.executors import Executor, ExecutorError
from privstudy.harness.spec import Resources
from privstudy.harness.status import LOST_MARK
from privstudy.harness.worker import TrialOutcome, TrialTask, execute_chunk, write_lost_record

SLURM_DIR = "slurm"
JOBS_FILE = "jobs.json"
LOST = LOST_MARK.rstrip(": ")
# Seconds between two looks at sacct and at the records; tests make it short.
POLL_S = float(os.environ.get("PRIVSTUDY_SLURM_POLL_S", "15"))
LIVE_STATES = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "RESIZING",
    "SUSPENDED",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "PREEMPTED",
}


class SlurmError(RuntimeError):
    """Slurm refused a submission or cannot be reached; the message says what to do."""


def slurm_reachable(timeout_s: float = 15.0) -> tuple[bool, str]:
    """Whether a Slurm controller answers here, and why (or why not)."""
    if shutil.which("sbatch") is None:
        return False, "sbatch is not on PATH"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"sinfo did not answer ({err.__class__.__name__})"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"sinfo failed: {last}"
    partitions = " ".join(proc.stdout.split())
    return True, f"sinfo lists partitions: {partitions or '(none)'}"


def chunks_for(tasks: Sequence[TrialTask], resources: dict[str, Resources]) -> list[tuple[Resources, list]]:
    """Group tasks by their experiment's resources, then pack each group into array-task chunks."""
    groups: dict[Resources, list[TrialTask]] = {}
    for task in tasks:
        groups.setdefault(resources[task.trial_id], []).append(task)
    out = []
    for res, group in groups.items():
        size = res.chunk_size()
        out.append((res, [group[i : i + size] for i in range(0, len(group), size)]))
    return out


def sbatch_parameters(res: Resources, job_name: str) -> dict[str, Any]:
    """submitit's AutoExecutor parameters for one group of array tasks."""
    params: dict[str, Any] = {
        "name": job_name,
        "timeout_min": res.timeout_min,
        "cpus_per_task": res.cpus,
        "mem_gb": res.mem_gb,
        "nodes": 1,
        "tasks_per_node": 1,
        "slurm_array_parallelism": res.array_parallelism,
    }
    if res.gpus:
        params["gpus_per_node"] = res.gpus
    for key in ("partition", "qos", "account", "constraint"):
        value = getattr(res, key)
        if value is not None:
            params[f"slurm_{key}"] = value
    extra: dict[str, Any] = {}
    for flag in res.sbatch:
        name, eq, value = flag[2:].partition("=")
        extra[name] = value if eq else True
    if extra:
        params["slurm_additional_parameters"] = extra
    return params


def sbatch_script(res: Resources, job_name: str, folder: str, n_tasks: int) -> str:
    """The sbatch script submitit would submit for a group (what the golden test pins)."""
    from submitit.slurm.slurm import _convert_mem, _make_sbatch_string

    p = sbatch_parameters(res, job_name)
    kwargs: dict[str, Any] = {
        "job_name": p["name"],
        "time": p["timeout_min"],
        "cpus_per_task": p["cpus_per_task"],
        "mem": _convert_mem(p["mem_gb"]),
        "nodes": 1,
        "ntasks_per_node": 1,
        "array_parallelism": p["slurm_array_parallelism"],
        "map_count": n_tasks,
        "gpus_per_node": p.get("gpus_per_node"),
        "partition": p.get("slurm_partition"),
        "qos": p.get("slurm_qos"),
        "account": p.get("slurm_account"),
        "constraint": p.get("slurm_constraint"),
        "additional_parameters": p.get("slurm_additional_parameters"),
    }
    return _make_sbatch_string(
        command="python -u -m submitit.core._submit '%j'",
        folder=folder,
        **{k: v for k, v in kwargs.items() if v is not None},
    )


@contextlib.contextmanager
def _job_free_env():
    """Hide the driver's own job settings (SLURM_*, SUBMITIT_*) from sbatch; keep SLURM_CONF.

    A job submitted from inside a job inherits e.g. SLURM_CPUS_PER_TASK and SLURM_MEM_PER_NODE,
    which override the array's own requests. submitit's clean_env also hides SLURM_CONF, the
    path to the cluster's configuration, which sbatch needs on clusters that set it.
    """
    keep = {"SLURM_CONF"}
    hidden = {
        k: os.environ.pop(k)
        for k in list(os.environ)
        if (k.startswith("SLURM_") or k.startswith("SUBMITIT_")) and k not in keep
    }
    try:
        yield
    finally:
        os.environ.update(hidden)


def _make_runner():
    import submitit

    class ChunkRunner(submitit.helpers.Checkpointable):
        """Runs one chunk; on timeout or preemption submitit requeues it with the same chunk."""

        def __call__(self, tasks: list[TrialTask]) -> list[TrialOutcome]:
            return execute_chunk(tasks)

    return ChunkRunner()


def _run_folder(study_dir: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = study_dir / SLURM_DIR / f"{stamp}-{socket.gethostname()}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def _squeue_states(job_ids: Sequence[str]) -> dict[str, str]:
    """States of the listed array jobs' tasks still known to squeue: {"<array>_<task>": state}."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    try:
        proc = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def submitted_runs(study_dir: Path) -> list[dict[str, Any]]:
    """Every Slurm submission of the study, oldest first (the contents of each run's jobs.json)."""
    runs = []
    for path in sorted((study_dir / SLURM_DIR).glob(f"*/{JOBS_FILE}")):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return runs


def live_tasks(study_dir: Path) -> dict[str, str]:
    """Array tasks of earlier submissions of this study that Slurm still runs or queues."""
    job_ids = sorted({j["array_job_id"] for run in submitted_runs(study_dir) for j in run["jobs"]})
    return {task: state for task, state in _squeue_states(job_ids).items() if state.split()[0] in LIVE_STATES}


def submit(
    tasks: Sequence[TrialTask], resources: dict[str, Resources], study: str, study_dir: Path, out: TextIO
) -> tuple[Path, list]:
    """Submit the tasks as job arrays; return the run folder and the submitit jobs, one per chunk."""
    import submitit

    folder = _run_folder(study_dir)
    jobs: list = []
    entries: list[dict[str, Any]] = []
    for res, chunks in chunks_for(tasks, resources):
        kind = chunks[0][0].kind
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=res.requeues)
        executor.update_parameters(**sbatch_parameters(res, f"privstudy-{study}-{kind}"))
        try:
            # A driver inside an sbatch job must not leak its own SLURM_* settings into the arrays.
            with _job_free_env():
                group_jobs = executor.map_array(_make_runner(), chunks)
        except Exception as err:  # noqa: BLE001 - sbatch's own message is the useful part
            if not jobs:
                shutil.rmtree(folder, ignore_errors=True)
            text = str(err).strip().splitlines()
            raise SlurmError(f"sbatch refused the {kind} array: {text[-1] if text else err}") from None
        array_id = group_jobs[0].job_id.split("_")[0]
        print(
            f"submitted array job {array_id}: {len(chunks)} tasks x up to {res.chunk_size()} {kind} "
            f"trials (cpus={res.cpus} mem_gb={res.mem_gb:g} gpus={res.gpus} timeout_min={res.timeout_min}"
            f"{' partition=' + res.partition if res.partition else ''})",
            file=out,
        )
        for job, chunk in zip(group_jobs, chunks):
            entries.append(
                {
                    "job_id": job.job_id,
                    "array_job_id": array_id,
                    "kind": kind,
                    "trial_ids": [t.trial_id for t in chunk],
                }
            )
        jobs.extend(group_jobs)
    manifest = {
        "submitted_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "folder": str(folder),
        "jobs": entries,
    }
    results.write_text_atomic(folder / JOBS_FILE, json.dumps(manifest, indent=1) + "\n")
    return folder, jobs


def _count_records(study_dir: Path, trial_ids: set[str]) -> int:
    trials = study_dir / results.TRIALS_DIR
    if not trials.is_dir():
        return 0
    return sum(1 for p in trials.glob("*.parquet") if p.stem in trial_ids)


def wait(
    jobs: list,
    tasks: Sequence[TrialTask],
    study_dir: Path,
    show_progress: bool,
    err: TextIO,
    poll_s: Optional[float] = None,
) -> list[TrialOutcome]:
    """Wait until every array task has ended; record the trials of tasks that ended without a result.

    Returns the outcomes of every submitted trial (the tasks' own, plus lost ones).
    """
    from submitit.core.utils import UncompletedJobError

    from privstudy.harness.executors import NullBar, progress_bar

    poll = POLL_S if poll_s is None else poll_s
    by_job = {job.job_id: job for job in jobs}
    chunk_of = {job.job_id: list(job.submission().args[0]) for job in jobs}
    pending = set(by_job)
    ids = {t.trial_id for t in tasks}
    outcomes: list[TrialOutcome] = []
    with progress_bar(len(tasks), "trials (slurm)") if show_progress else NullBar() as bar:
        seen = 0
        while pending:
            # One sacct call updates the states of every job of the run.
            finished = [jid for jid in sorted(pending) if by_job[jid].done(force_check=True)]
            for jid in finished:
                pending.discard(jid)
                job = by_job[jid]
                try:
                    outcomes.extend(job.result())
                except UncompletedJobError as exc:  # ended without a result (or raised outside a trial)
                    outcomes.extend(_record_lost(job, chunk_of[jid], study_dir, exc, err))
            done_now = _count_records(study_dir, ids)
            bar.update(done_now - seen)
            seen = done_now
            if pending:
                time.sleep(poll)
    return outcomes


def _record_lost(
    job, chunk: list[TrialTask], study_dir: Path, exc: Exception, err: TextIO
) -> list[TrialOutcome]:
    from privstudy.harness.worker import record_status

    state = job.state
    log = job.paths.stderr
    lost = [t for t in chunk if record_status(study_dir, t.trial_id) is None]
    detail = str(exc).strip().splitlines()
    reason = (
        f"{LOST_MARK}Slurm array task {job.job_id} ended {state} before finishing this trial (log: {log})"
    )
    for task in lost:
        write_lost_record(task, reason, "\n".join(detail[:60]), job.job_id)
    print(
        f"array task {job.job_id} ended {state} without a result: {len(lost)} of its {len(chunk)} trials "
        f"recorded as failed ({LOST}; the next sweep retries them); log {log}",
        file=err,
    )
    return [TrialOutcome(t.trial_id, "failed", reason, 0.0) for t in lost]


def cancel(jobs: list, err: TextIO) -> None:
    """Cancel the run's array jobs (the driver was interrupted)."""
    arrays = sorted({job.job_id.split("_")[0] for job in jobs})
    if arrays and shutil.which("scancel"):
        subprocess.run(["scancel", *arrays], capture_output=True, timeout=60)
        print(f"cancelled array jobs {', '.join(arrays)}", file=err)


class SlurmExecutor(Executor):
    """Job arrays through submitit, watched until every array task has ended (see the module doc)."""

    name = "slurm"

    def __init__(self, no_wait: bool = False):
        self.no_wait = no_wait  # submit and return; `privstudy status` follows the study
        self._jobs: list = []

    def check(self, study_dir: Path) -> None:
        ok, why = slurm_reachable()
        if not ok:
            raise ExecutorError(
                f"Slurm is not reachable here ({why}); run on a cluster's login node, or use "
                f"--executor local (or auto)"
            )
        live = live_tasks(study_dir)
        if live:
            arrays = sorted({t.split("_")[0] for t in live})
            raise ExecutorError(
                f"{len(live)} array tasks of an earlier sweep of this study are still queued or "
                f"running (jobs {', '.join(arrays)}); wait for them (`privstudy status "
                f"{study_dir}`) or `scancel {' '.join(arrays)}`, then rerun"
            )

    def plan(self, tasks, resources):
        return [
            f"  slurm: {len(chunks)} array tasks of up to {res.chunk_size()} {chunks[0][0].kind} trials"
            for res, chunks in chunks_for(tasks, resources)
        ]

    def run(self, tasks, resources, study_dir, show_progress, out, err):
        import signal

        if not tasks:
            return
        try:
            folder, self._jobs = submit(tasks, resources, tasks[0].study, study_dir, out)
        except SlurmError as exc:
            raise ExecutorError(str(exc)) from None
        print(f"slurm logs and scripts: {folder}", file=out)
        if self.no_wait:
            self.detached = True
            print(
                f"not waiting: watch with `privstudy status {study_dir}`; rerun the same command after the "
                f"jobs end to pick up anything lost",
                file=out,
            )
            return

        def on_term(signum, frame):  # the driver's own job was cancelled or hit its time limit
            raise SystemExit(
                f"driver stopped by signal {signum}; the array jobs carry on: watch with "
                f"`privstudy status {study_dir}`, rerun the same command after they end"
            )

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            yield from wait(self._jobs, tasks, study_dir, show_progress, err)
        finally:
            signal.signal(signal.SIGTERM, previous)

    def interrupted(self, finished: int, err: TextIO) -> None:
        cancel(self._jobs, err)
        print(
            "\ninterrupted: array jobs cancelled; rerun the same command to resume (finished trials are "
            "skipped)",
            file=err,
        )
