"""What every benchmark script shares: writing its result as JSON (file and stdout)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def write_result(result: dict, out: str) -> None:
    """Write the result to ``out`` (creating its folder) and echo it on stdout."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    json.dump(result, sys.stdout, indent=1)
    print()
