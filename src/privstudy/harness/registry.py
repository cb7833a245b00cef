"""The registry of trial kinds: a kind name maps to its config class, its run function and its tables."""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Mapping

import pandas as pd
import pyarrow as pa

from privstudy.harness.config import TrialConfig

TrialResult = Mapping[str, pd.DataFrame]
"""What a trial returns: table name -> rows (columns exactly those of the table's schema)."""


@dataclasses.dataclass(frozen=True)
class TrialKind:
    """A trial kind: a frozen config dataclass plus a pure function returning rows for named tables."""

    name: str  # the `kind:` of study specs
    description: str  # one line, shown by `privstudy kinds`
    config_cls: type  # a TrialConfig subclass, validated in __post_init__
    run: Callable[[TrialConfig], TrialResult]  # pure: config in, rows out; no file writing
    tables: Mapping[str, pa.Schema]  # table name -> the kind's own columns (provenance is added)
    uses_tensorflow: bool = False  # True: the worker sizes TensorFlow's thread pools first


# Kinds are named by module path so that listing or validating them imports no heavy code:
# each module keeps TensorFlow imports inside the functions that train.
_KIND_MODULES: dict[str, str] = {
    "linprog": "privstudy.linprog_runner",
}


def kind_names() -> list[str]:
    """The registered kind names, sorted."""
    return sorted(_KIND_MODULES)


def get_kind(name: str) -> TrialKind:
    """The TrialKind registered under ``name``.

    Raises:
        KeyError: with the valid names, when ``name`` is not registered.
    """
    if name not in _KIND_MODULES:
        raise KeyError(f"unknown kind {name!r}; valid: {', '.join(kind_names())}")
    kind = importlib.import_module(_KIND_MODULES[name]).KIND
    if kind.name != name:
        raise RuntimeError(f"module {_KIND_MODULES[name]} registers kind {kind.name!r}, not {name!r}")
    return kind
