"""The `privstudy` command: sweep a study, show its status, list trial kinds, aggregate results."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from privstudy import __version__
from privstudy.analysis.options import add_output_options
from privstudy.data.images import IMAGE_DATASETS
from privstudy.data.tabular import TABULAR_DATASETS
from privstudy.harness.executors import EXECUTOR_CHOICES
from privstudy.mia.attacks import ATTACKS

DATASETS = IMAGE_DATASETS + ("imdb", "mtsamples") + TABULAR_DATASETS
BUILT_IN = {"digits": "built in (scikit-learn)", "digits_binary": "built in (scikit-learn digits, binarised)"}

EPILOG = """\
examples:
  privstudy sweep jobs/demo.yaml --executor local        run a study on this machine
  privstudy sweep jobs/linprog.yaml --smoke --dry-run    show what the smoke variant would run
  privstudy status results/linprog --json                counts of done / failed / pending trials
  privstudy verify results/linprog                       check every done trial's files
  privstudy kinds linprog                                the parameters of a trial kind
  python analysis/aggregate.py results/linprog           tables, figures and a report

exit codes: 0 all trials done, 1 some trials failed or are pending, 2 bad input (nothing written),
130 interrupted (rerun the same command to resume).
"""


def add_executor_options(parser: argparse.ArgumentParser, what: str) -> None:
    """--executor and --workers, shared by `sweep` and `attack` (``what``: the unit of work, for the help)."""
    parser.add_argument(
        "--executor",
        choices=EXECUTOR_CHOICES,
        default="local",
        help=f"inline: one {what} after another in this process (debuggable); local: a "
        "process pool (default); slurm: job arrays through submitit; auto: slurm "
        "where a Slurm controller answers, else local",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local pool size (default: SLURM_CPUS_PER_TASK, else the core count)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="privstudy",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"privstudy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sweep = sub.add_parser(
        "sweep",
        help="run the trials of a study spec that are not done yet",
        description="Validate a study spec (jobs/*.yaml), then run every trial not "
        "yet done; finished trials are skipped, so rerunning resumes.",
    )
    sweep.add_argument("spec", metavar="JOBS.yaml", help="the study spec")
    add_executor_options(sweep, "trial")
    sweep.add_argument(
        "--results",
        default="results",
        metavar="DIR",
        help="results root; the study goes to DIR/<name> (default: results)",
    )
    sweep.add_argument(
        "--smoke",
        action="store_true",
        help="apply the spec's `smoke` overrides; results go to DIR/<name>_smoke",
    )
    sweep.add_argument("--retry-failed", action="store_true", help="rerun trials recorded as failed")
    sweep.add_argument(
        "--extend",
        action="store_true",
        help="the results folder holds this study with other trials: add the new ones to it (without "
        "this, a changed spec is refused)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="validate and show the plan; write nothing")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.add_argument(
        "--no-wait",
        action="store_true",
        help="slurm: submit the arrays and exit; `privstudy status` follows the study",
    )

    status = sub.add_parser(
        "status",
        help="count a study's done / failed / pending trials",
        description="Count a study's trials by state from its results folder.",
    )
    status.add_argument("study_dir", metavar="DIR", help="the study's results folder (results/<name>)")
    status.add_argument(
        "--json",
        action="store_true",
        help='print {"done": N, "failed": N, "pending": N, "failures": [...], "slurm_tasks": {state: N}}',
    )

    kinds = sub.add_parser(
        "kinds",
        help="list trial kinds, or the parameters of one",
        description="List the registered trial kinds, or document one kind's parameters.",
    )
    kinds.add_argument("kind", nargs="?", help="a kind name")

    attack = sub.add_parser(
        "attack",
        help="run the membership-inference attacks on a study's recorded scores",
        description="Run every attack on every target model of a study's mia_train "
        "trials, as (setting, attack, target) units stored under DIR/attacks (units already stored "
        "are not recomputed, so rerunning resumes); write tables/mia_*.{csv,md} and figures/mia_*.png.",
    )
    attack.add_argument("study_dir", metavar="DIR", help="the study's results folder (results/<name>)")
    attack.add_argument(
        "--attacks",
        default=None,
        metavar="A,B",
        help="a comma-separated subset of: " + ", ".join(ATTACKS) + " (default: all)",
    )
    attack.add_argument(
        "--max-targets",
        type=int,
        default=None,
        metavar="N",
        help="attack only the first N models as targets (default: every model)",
    )
    add_executor_options(attack, "chunk of attack units")
    attack.add_argument(
        "--targets-per-task",
        type=int,
        default=None,
        metavar="N",
        help="targets per chunk of work (one Slurm array task; each chunk reads its setting's scores once); "
        "default: the targets shared out over the workers (local), 16 (slurm)",
    )
    attack.add_argument("--no-progress", action="store_true", help="no progress bar")
    attack.add_argument(
        "--timeout-min",
        type=int,
        default=120,
        help="slurm: wall-clock limit of one array task, in minutes (default 120)",
    )

    data = sub.add_parser(
        "data",
        help="find or download datasets",
        description="`data check` lists where each dataset is found (or where it was looked "
        "for); `data fetch NAME` downloads it into Keras' cache (needs internet).",
    )
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = data_sub.add_parser("check", help="list what is found where")
    check.add_argument("--data-dir", default=None, help="also look in this folder (as a trial's data_dir)")
    fetch = data_sub.add_parser("fetch", help="download a dataset into Keras' cache")
    fetch.add_argument("name", help=", ".join(d for d in DATASETS if d not in BUILT_IN))

    agg = sub.add_parser(
        "aggregate",
        help="build tables, figures and a report from a study's shards",
        description="The same as `python analysis/aggregate.py DIR`.",
    )
    agg.add_argument("study_dir", metavar="DIR", help="a study folder, or a results root of several")
    add_output_options(agg)
    add_output_options(attack)

    verify = sub.add_parser(
        "verify",
        help="check that every done trial's files are whole",
        description="Check, from Parquet metadata, that every done trial's shards exist, are readable, "
        "hold the rows its record names and have their table's columns; and that every record is "
        "readable. Exit 0 when all is whole, 1 when some trial is damaged (`privstudy sweep` reruns "
        "it), 2 when the folder is not a study.",
    )
    verify.add_argument("study_dir", metavar="DIR", help="the study's results folder (results/<name>)")
    return parser


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def cmd_sweep(args: argparse.Namespace) -> int:
    """`privstudy sweep`."""
    from privstudy.harness.spec import SpecError, load_study
    from privstudy.harness.sweep import run_sweep

    if args.workers is not None and args.workers < 1:
        return _fail(f"--workers must be >= 1, got {args.workers}")
    try:
        study = load_study(args.spec, smoke=args.smoke)
    except SpecError as err:
        return _fail(str(err))
    return run_sweep(
        study,
        Path(args.results),
        args.executor,
        args.workers,
        args.retry_failed,
        args.dry_run,
        show_progress=not args.no_progress,
        no_wait=args.no_wait,
        extend=args.extend,
    )


def cmd_status(args: argparse.Namespace) -> int:
    """`privstudy status`."""
    from privstudy.harness import results
    from privstudy.harness.status import study_status

    study_dir = Path(args.study_dir)
    try:
        status = study_status(study_dir)
    except results.ResultsError as err:
        return _fail(str(err))
    live: dict[str, int] = {}
    if (study_dir / "slurm").is_dir():  # submitted with the slurm executor: what is still queued/running
        from privstudy.harness.slurm import live_tasks

        for state in live_tasks(study_dir).values():
            live[state.lower()] = live.get(state.lower(), 0) + 1
    if args.json:
        print(json.dumps({**status.as_json(), "slurm_tasks": live}))
    else:
        print(
            f"{study_dir}: {status.total} trials: {status.done} done, {status.failed} failed, "
            f"{status.pending} pending"
        )
        for f in status.failures:
            print(f"  failed {f['trial_id']} ({f['kind']}): {f['error']}")
        for d in status.damage:
            print(f"  damaged (pending: `privstudy sweep` reruns it) {d.line()}")
        if live:
            print(f"  slurm array tasks: {', '.join(f'{n} {s}' for s, n in sorted(live.items()))}")
        if status.unknown_records:
            print(f"  ({status.unknown_records} records of trials no longer in the spec are ignored)")
    return 0


def cmd_kinds(args: argparse.Namespace) -> int:
    """`privstudy kinds`."""
    import dataclasses

    from privstudy.harness.config import field_help, field_types, type_name
    from privstudy.harness.registry import get_kind, kind_names

    if args.kind is None:
        for name in kind_names():
            print(f"{name:18s} {get_kind(name).description}")
        return 0
    if args.kind not in kind_names():
        return _fail(f"unknown kind {args.kind!r}; valid: {', '.join(kind_names())}")
    kind = get_kind(args.kind)
    print(f"{kind.name}: {kind.description}\n\nparameters (fixed: / grid: in a study spec):")
    helps, types_ = field_help(kind.config_cls), field_types(kind.config_cls)
    for f in dataclasses.fields(kind.config_cls):
        default = f.default if not isinstance(f.default, tuple) else list(f.default)
        print(f"  {f.name} ({type_name(types_[f.name])}, default {default!r})\n      {helps[f.name]}")
    print(f"\ntables: {', '.join(kind.tables)}")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    """`privstudy attack`: compute the attack units not stored yet (through an executor), then the tables."""
    from privstudy.analysis import common, mia_train
    from privstudy.harness.executors import ExecutorError, WorkersDied, resolve

    attacks = None
    if args.attacks:
        attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
        unknown = [a for a in attacks if a not in ATTACKS]
        if unknown:
            return _fail(f"unknown attack(s) {', '.join(unknown)}; valid: {', '.join(ATTACKS)}")
    for flag, value in (
        ("--max-targets", args.max_targets),
        ("--workers", args.workers),
        ("--targets-per-task", args.targets_per_task),
        ("--timeout-min", args.timeout_min),
    ):
        if value is not None and value < 1:
            return _fail(f"{flag} must be >= 1, got {value}")
    from privstudy.analysis.options import output_error
    from privstudy.harness import results
    from privstudy.harness.attack_stage import AttackStageError
    from privstudy.harness.lock import LockHeld

    study_dir = Path(args.study_dir)
    out = Path(args.out) if args.out else study_dir
    executor = resolve(args.executor, sys.stdout)
    per_task = args.targets_per_task or (16 if executor == "slurm" else None)
    try:
        study = common.load_study(study_dir, args.allow_damaged)
        study.store_dir = out
        with common.study_output(study_dir, out, "privstudy attack") as stage:
            ensured = mia_train.ensure_units(
                study,
                attacks,
                args.max_targets,
                executor=executor,
                workers=args.workers,
                targets_per_task=per_task,
                timeout_min=args.timeout_min,
                show_progress=not args.no_progress,
            )
            _, total, computed = ensured
            print(f"attack units: {total}; computed now: {computed}; stored before: {total - computed}")
            lines = mia_train.build(study, stage, attacks, args.max_targets, ensured=ensured)
    except (common.AnalysisError, results.ResultsError, LockHeld, AttackStageError, ExecutorError) as err:
        return _fail(str(err))
    except WorkersDied as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished attack units are stored; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    except OSError as err:
        return _fail(output_error(out, err))
    print("\n".join(lines))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """`privstudy data check|fetch`."""
    from privstudy.data import clinical, images, tabular, text

    if args.data_command == "check":
        for name in DATASETS:
            if name in BUILT_IN:
                print(f"{name:14s} {BUILT_IN[name]}")
                continue
            module = (
                text
                if name == "imdb"
                else clinical
                if name == "mtsamples"
                else tabular
                if name in TABULAR_DATASETS
                else images
            )
            found = module.find(name, args.data_dir)
            where = (
                found
                if found
                else "not found; looked in "
                + ", ".join(str(p) for p in module.search_dirs(name, args.data_dir))
            )
            print(f"{name:14s} {where}")
        return 0
    if args.name == "mtsamples":
        return _fail(f"mtsamples has no download in privstudy: {clinical.HOW_TO_GET}")
    if args.name in TABULAR_DATASETS:
        return _fail(f"{args.name} has no download in privstudy: {tabular.how_to_get(args.name)}")
    try:
        print(text.fetch("imdb") if args.name == "imdb" else images.fetch(args.name))
    except ValueError as err:
        return _fail(str(err))
    except Exception as err:  # noqa: BLE001 - no internet, proxy, disk: say it in one line
        first = str(err).splitlines()[0] if str(err) else ""
        return _fail(
            f"could not download {args.name} ({err.__class__.__name__}: {first}); "
            f"on a machine without internet, copy the files into a folder and pass it as data_dir"
        )
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    """`privstudy aggregate`."""
    from privstudy.analysis.aggregate import main as aggregate_main

    extra = (["--out", args.out] if args.out else []) + (["--allow-damaged"] if args.allow_damaged else [])
    return aggregate_main([args.study_dir, *extra])


def cmd_verify(args: argparse.Namespace) -> int:
    """`privstudy verify`."""
    from privstudy.harness import results
    from privstudy.harness.status import study_status

    study_dir = Path(args.study_dir)
    try:
        status = study_status(study_dir)
    except results.ResultsError as err:
        return _fail(str(err))
    if not status.damage:
        print(f"{study_dir}: {status.done} done trials verified, no damage")
        return 0
    print(f"{study_dir}: {len(status.damaged)} of {status.done + len(status.damaged)} done trials damaged:")
    for d in status.damage:
        print(f"  {d.line()}")
    print(f"`privstudy sweep` with the study's spec moves their files to {study_dir}/damaged/, reruns them")
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run the `privstudy` command; returns its exit code."""
    args = build_parser().parse_args(argv)
    handlers = {
        "sweep": cmd_sweep,
        "status": cmd_status,
        "kinds": cmd_kinds,
        "aggregate": cmd_aggregate,
        "attack": cmd_attack,
        "data": cmd_data,
        "verify": cmd_verify,
    }
    try:
        return handlers[args.command](args)
    except BrokenPipeError:
        # the reader went away (``privstudy sweep --dry-run | head``): stop quietly, as a shell tool
        # killed by SIGPIPE would, and keep Python from reporting the pipe again when it flushes stdout
        # at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    raise SystemExit(main())
