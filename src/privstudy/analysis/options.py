"""Command-line options and messages shared by `analysis/aggregate.py` and `privstudy attack` (light:
imported by the CLI at start-up, so no pandas here)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """--out and --allow-damaged, shared by aggregate and `privstudy attack`."""
    parser.add_argument(
        "--out",
        default=None,
        metavar="OUT",
        help="write tables/, figures/ and report.md here instead of into the study folder (e.g. for a "
        "study on a read-only mount; with a results root: OUT/<study>)",
    )
    parser.add_argument(
        "--allow-damaged",
        action="store_true",
        help="build the tables over the undamaged trials when some done trials' files are damaged "
        "(the report lists what is left out); default: refuse",
    )


def output_error(out: Path, err: OSError) -> str:
    """One line for a failure to write the outputs, with the fix."""
    from privstudy.harness.results import os_error_reason

    reason, _ = os_error_reason(err)
    return (
        f"cannot write the outputs to {out}: {reason}; nothing was changed there. Free space or pass "
        f"--out DIR to write them elsewhere"
    )
