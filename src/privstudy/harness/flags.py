"""The published command lines (``python -m privstudy.runner``, ``... .linprog_runner``) as studies."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional


def sweep_from_flags(
    raw: dict[str, Any], origin: str, results_root: Path, executor: str, workers: Optional[int] = None
) -> int:
    """Validate the one-experiment study a command line describes, then sweep it.

    The study's ``spec.yaml`` copy records the equivalent spec, so `privstudy sweep` can rerun it.

    Args:
        raw: the spec as a mapping (name, kind, fixed, grid, seeds, resources).
        origin: what the command line was, e.g. ``linprog_runner``; names the spec in messages.
        results_root: the study goes to ``results_root/<name>``.
        executor: ``inline``, ``local``, ``slurm`` or ``auto``.
        workers: local pool size (None: the default).

    Returns:
        The sweep's exit code; 2 (one line on stderr, nothing written) when the flags are invalid.
    """
    import yaml

    from privstudy.harness.spec import SpecError, parse_study
    from privstudy.harness.sweep import EXIT_USAGE, run_sweep

    text = f"# Generated from a {origin} command line.\n" + yaml.safe_dump(raw, sort_keys=False)
    try:
        study = parse_study(raw, Path(f"<{origin} flags>"), text)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return run_sweep(study, results_root, executor, workers, retry_failed=False, dry_run=False)
