"""The registry of trial kinds: a kind name maps to its config class, its run function and its tables."""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from functools import lru_cache
from typing import Any, Callable, Mapping

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
    smoke: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Parameters of a run of a few seconds on built-in data: what the conformance test runs."""


KIND_MODULE_SUFFIX = "runner"
"""A module of the ``privstudy`` package named ``runner`` or ``<something>_runner`` is a trial kind:
it defines ``KIND``, a TrialKind. Adding a kind is adding such a module (and, for its tables, a module
``privstudy.analysis.<kind name>``); nothing else is edited. Kind modules keep heavy imports
(TensorFlow) inside the functions that train, so that listing kinds stays fast."""


@lru_cache(maxsize=1)
def _builtin_modules() -> dict[str, str]:
    import privstudy

    modules = {}
    for info in pkgutil.iter_modules(privstudy.__path__):
        if info.ispkg or not (
            info.name == KIND_MODULE_SUFFIX or info.name.endswith("_" + KIND_MODULE_SUFFIX)
        ):
            continue
        path = f"privstudy.{info.name}"
        kind = importlib.import_module(path).KIND
        if kind.name in modules:
            raise RuntimeError(f"kind {kind.name!r} is defined by both {modules[kind.name]} and {path}")
        modules[kind.name] = path
    return modules


PLUGIN_ENV = "PRIVSTUDY_KINDS"
"""Extra kinds as ``name=module[,name=module...]``; each module defines ``KIND``. Worker processes
inherit the variable, so plugin kinds run under every executor."""


def _modules() -> dict[str, str]:
    modules = dict(_builtin_modules())
    for item in filter(None, (p.strip() for p in os.environ.get(PLUGIN_ENV, "").split(","))):
        name, sep, module = item.partition("=")
        if not sep or not name.strip() or not module.strip():
            raise ValueError(f"{PLUGIN_ENV}: expected name=module entries, got {item!r}")
        modules[name.strip()] = module.strip()
    return modules


def kind_names() -> list[str]:
    """The registered kind names (built-in and from PRIVSTUDY_KINDS), sorted."""
    return sorted(_modules())


def get_kind(name: str) -> TrialKind:
    """The TrialKind registered under ``name``.

    Raises:
        KeyError: with the valid names, when ``name`` is not registered.
    """
    modules = _modules()
    if name not in modules:
        raise KeyError(f"unknown kind {name!r}; valid: {', '.join(sorted(modules))}")
    kind = importlib.import_module(modules[name]).KIND
    if kind.name != name:
        raise RuntimeError(f"module {modules[name]} registers kind {kind.name!r}, not {name!r}")
    return kind
