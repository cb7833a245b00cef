"""Executors: one interface, a string picks the backend (`inline` loop, `local` process pool, `slurm`).

A sweep hands an executor the trials not yet done; the executor runs them and yields one
``TrialOutcome`` per trial as it ends. The Slurm executor lives in ``privstudy.harness.slurm``.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence, TextIO

from tqdm import tqdm

from privstudy.harness.worker import TrialOutcome, TrialTask, execute_trial, record_status

if TYPE_CHECKING:
    from privstudy.harness.spec import Resources

EXECUTOR_CHOICES = ("inline", "local", "slurm", "auto")
"""What `--executor` accepts; ``auto`` becomes ``slurm`` where a Slurm controller answers, else ``local``."""
MAX_POOL_RESTARTS = 3


class ExecutorError(RuntimeError):
    """The executor cannot run the study here or now; the message says what to do instead."""


class WorkersDied(RuntimeError):
    """Worker processes were killed more often than the pool is restarted."""


class Executor(abc.ABC):
    """Runs trial tasks somewhere and reports each one's outcome as it ends."""

    name: str = ""
    detached: bool = False  # set by run() when it returned before the trials ended (slurm --no-wait)

    def check(self, study_dir: Path) -> None:
        """Raise ExecutorError when this executor cannot run the study now (nothing is written yet)."""
        return None  # the inline and local executors can always run

    def plan(self, tasks: Sequence[TrialTask], resources: dict[str, "Resources"]) -> list[str]:
        """Lines describing how the tasks would run (printed by ``--dry-run``)."""
        return []

    @abc.abstractmethod
    def run(
        self,
        tasks: Sequence[TrialTask],
        resources: dict[str, "Resources"],
        study_dir: Path,
        show_progress: bool,
        out: TextIO,
        err: TextIO,
    ) -> Iterator[TrialOutcome]:
        """Run the tasks; yield each trial's outcome as it ends."""

    def interrupted(self, finished: int, err: TextIO) -> None:
        """Clean up after Ctrl-C stopped ``run`` (its workers are stopped by then) and say how to resume."""
        print(
            f"\ninterrupted: {finished} trials finished this run; rerun the same command to resume "
            f"(finished trials are skipped)",
            file=err,
        )


class InlineExecutor(Executor):
    """One trial after the other in this process (debuggable: breakpoints work)."""

    name = "inline"

    def run(self, tasks, resources, study_dir, show_progress, out, err):
        return run_inline(tasks, show_progress)


class LocalExecutor(Executor):
    """A pool of spawned worker processes on this machine; a killed worker restarts the pool."""

    name = "local"

    def __init__(self, workers: Optional[int] = None):
        self.workers = workers or default_workers()

    def run(self, tasks, resources, study_dir, show_progress, out, err):
        print(f"executor local: {min(self.workers, max(1, len(tasks)))} worker processes", file=out)

        def on_restart(n: int, left: int) -> None:
            print(
                f"a worker died; restarting the pool ({n}/{MAX_POOL_RESTARTS}), {left} trials left", file=err
            )

        return run_local(tasks, self.workers, show_progress, on_restart=on_restart)


def make_executor(name: str, workers: Optional[int] = None, no_wait: bool = False) -> Executor:
    """The executor called ``name`` (``inline``, ``local`` or ``slurm``; resolve ``auto`` first)."""
    if name == "inline":
        return InlineExecutor()
    if name == "local":
        return LocalExecutor(workers)
    if name == "slurm":
        from privstudy.harness.slurm import SlurmExecutor

        return SlurmExecutor(no_wait=no_wait)
    raise ValueError(f"unknown executor {name!r}; valid: {', '.join(EXECUTOR_CHOICES)}")


def resolve(name: str, out: TextIO) -> str:
    """``auto`` becomes ``slurm`` where a Slurm controller answers, else ``local``, and says which."""
    if name != "auto":
        return name
    from privstudy.harness.slurm import slurm_reachable

    ok, why = slurm_reachable()
    chosen = "slurm" if ok else "local"
    print(f"executor auto: {chosen} ({why})", file=out)
    return chosen


def default_workers() -> int:
    """``SLURM_CPUS_PER_TASK`` where set (inside an allocation), else the machine's core count."""
    env = os.environ.get("SLURM_CPUS_PER_TASK")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 1


THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _thread_env(workers: int) -> dict[str, str]:
    """BLAS/OpenMP thread counts for pool workers: the cores shared out, unless the user set them.

    Without this, each worker's numpy/scipy spawns a thread per core and the workers fight over
    the cores (measured on the LP benchmark: 0.91 s CPU per trial instead of 0.53 s).
    """
    per_worker = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    return {k: os.environ.get(k, per_worker) for k in THREAD_ENV}


def progress_bar(total: int, desc: str) -> tqdm:
    """A tqdm bar on stderr (redrawn every 10 s when stderr is not a terminal)."""
    return tqdm(
        total=total,
        desc=desc,
        unit="trial",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
    )


def run_inline(tasks: Sequence[TrialTask], show_progress: bool = True) -> Iterator[TrialOutcome]:
    """Run trials one after the other in this process (debuggable: breakpoints work)."""
    with progress_bar(len(tasks), "trials") if show_progress else NullBar() as bar:
        for task in tasks:
            outcome = execute_trial(task)
            bar.update(1)
            yield outcome


def _ignore_sigint() -> None:
    # The driver handles Ctrl-C and stops the workers itself; a worker interrupted mid-trial
    # would only print a second traceback. Atomic writes mean no partial shard either way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_local(
    tasks: Sequence[TrialTask],
    workers: int,
    show_progress: bool = True,
    on_restart: Callable[[int, int], None] | None = None,
) -> Iterator[TrialOutcome]:
    """Run trials in a pool of spawned processes, restarting the pool if a worker is killed.

    Args:
        tasks: the trials to run.
        workers: pool size.
        show_progress: draw a progress bar with ETA on stderr.
        on_restart: called with (restart number, trials left) when a dead pool is replaced.

    Raises:
        WorkersDied: when workers die more than MAX_POOL_RESTARTS times.
    """
    pending = list(tasks)
    ctx = mp.get_context("spawn")
    # Spawned children copy os.environ when they start: set the thread counts for them.
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update(_thread_env(workers))
    try:
        yield from _run_pool(pending, workers, ctx, show_progress, on_restart)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_pool(
    pending: list[TrialTask],
    workers: int,
    ctx,
    show_progress: bool,
    on_restart: Callable[[int, int], None] | None,
) -> Iterator[TrialOutcome]:
    restarts = 0
    with progress_bar(len(pending), f"trials ({workers} workers)") if show_progress else NullBar() as bar:
        while pending:
            pool = cf.ProcessPoolExecutor(
                max_workers=min(workers, len(pending)), mp_context=ctx, initializer=_ignore_sigint
            )
            futures = {pool.submit(execute_trial, t): t for t in pending}
            finished: set[str] = set()
            try:
                for fut in cf.as_completed(futures):
                    try:
                        outcome = fut.result()
                    except cf.process.BrokenProcessPool:
                        break
                    finished.add(outcome.trial_id)
                    bar.update(1)
                    yield outcome
            except BaseException:
                _terminate(pool)
                raise
            broken = len(finished) < len(futures)
            if not broken:
                pool.shutdown(wait=True)
                return
            _terminate(pool)
            study_dirs = {t.trial_id: Path(t.study_dir) for t in pending}
            left = []
            for t in pending:
                if t.trial_id in finished:
                    continue
                status = record_status(study_dirs[t.trial_id], t.trial_id)
                if status is not None:
                    # Finished just before the pool broke: report it from its record.
                    bar.update(1)
                    yield TrialOutcome(t.trial_id, status, None, 0.0)
                else:
                    left.append(t)
            pending = left
            restarts += 1
            if restarts > MAX_POOL_RESTARTS:
                raise WorkersDied(
                    f"worker processes died {restarts} times (out of memory?); "
                    f"{len(pending)} trials not run; rerun with --workers 1 to isolate"
                )
            if on_restart is not None and pending:
                on_restart(restarts, len(pending))


def _terminate(pool: cf.ProcessPoolExecutor) -> None:
    processes = list(getattr(pool, "_processes", {}).values())  # private, stable since 3.8
    for p in processes:
        if p.is_alive():
            p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        p.join(timeout=5)


class NullBar:
    """A progress bar that draws nothing."""

    def __enter__(self) -> "NullBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None
