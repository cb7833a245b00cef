"""Shared fixtures: a small LP spec writer, the repository root, and the plugin test kinds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def test_kinds(monkeypatch):
    """Register the kinds of tests/kinds_for_tests.py, also for spawned worker processes."""
    monkeypatch.setenv("PRIVSTUDY_KINDS", "echo=kinds_for_tests")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(TESTS))


@pytest.fixture
def write_spec(tmp_path):
    """Write a spec mapping to a YAML file and return its path."""

    def _write(spec: dict, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return _write


def small_lp_spec(name: str = "lp", seeds: int = 3, **fixed) -> dict:
    """A fast LP study: 81 x 81 grid, both objectives."""
    base = {"train_size": 8, "test_size": 6561, "grid_size": 80.0, "percent": 5.0}
    base.update(fixed)
    return {
        "name": name,
        "kind": "linprog",
        "fixed": base,
        "grid": {"objective": ["slack", "max_margin"]},
        "seeds": seeds,
    }


def run_cli(*args: str) -> int:
    """Run `privstudy ...` in this process and return its exit code."""
    from privstudy.cli import main

    return main(list(args))


sys.path.insert(0, str(TESTS))
