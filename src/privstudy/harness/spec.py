"""Study specs (jobs/*.yaml): loaded, expanded into trials and validated before anything runs.

A spec names a study and lists experiments; each experiment is a trial kind with fixed parameters,
a grid (cartesian product), seeds and resources. A `smoke` block overrides any of these for a
laptop-sized run. The shorthand of a single experiment puts its keys at the top level::

    name: linprog
    kind: linprog
    fixed: {train_size: 10}
    grid: {objective: [slack, max_margin]}
    seeds: 100                      # seeds 0..99; or a list; or {start: 1, count: 100}
    resources: {cpus: 1, mem_gb: 2, timeout_min: 10}
    smoke: {fixed: {test_size: 10000}, seeds: 3}
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any, Optional

import yaml

from privstudy.harness.config import (
    ConfigError,
    TrialConfig,
    check,
    coerce,
    field_types,
    from_mapping,
    param,
    setting_id,
    trial_id,
)
from privstudy.harness.registry import get_kind, kind_names


class SpecError(ValueError):
    """A study spec is wrong. The message is one line naming the file, the key and the fix."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """What an experiment's trials need from a machine; the Slurm executor turns it into sbatch flags.

    On Slurm, one array task runs ``trials_per_task`` trials in one process (one TensorFlow import);
    ``timeout_min`` is the limit of that task. A task stopped by its time limit or by preemption is
    requeued (up to ``requeues`` times) and carries on with the trials it had not finished.
    """

    cpus: int = param(1, "CPU cores per trial / per Slurm array task (also sizes TensorFlow's thread pools).")
    mem_gb: float = param(4.0, "Memory per trial / per Slurm array task, in GiB.")
    gpus: int = param(0, "GPUs per node for each Slurm array task (sbatch --gpus-per-node).")
    timeout_min: int = param(60, "Wall-clock limit of one Slurm array task, in minutes.")
    partition: Optional[str] = param(None, "Slurm partition; null means the cluster's default.")
    qos: Optional[str] = param(None, "Slurm quality of service (sbatch --qos); null: none.")
    account: Optional[str] = param(None, "Slurm account to charge (sbatch --account); null: the default.")
    constraint: Optional[str] = param(None, "Slurm node features (sbatch --constraint), e.g. 'a100|v100'.")
    sbatch: tuple[str, ...] = param(
        (), "Extra sbatch flags, each '--name=value' or '--flag', e.g. ['--exclusive', '--reservation=ml']."
    )
    trials_per_task: Optional[int] = param(
        None,
        "Trials packed into one Slurm array task; null: derived "
        "from timeout_min and trial_min (1 without trial_min).",
    )
    trial_min: Optional[float] = param(
        None,
        "Expected minutes per trial, used to pack trials into "
        "array tasks so that a task fills 80% of timeout_min.",
    )
    array_parallelism: int = param(256, "Most array tasks of one job running at once (sbatch --array=%N).")
    requeues: int = param(3, "Times a Slurm task stopped by its time limit or preemption is requeued.")

    def __post_init__(self) -> None:
        check(self.cpus >= 1, "cpus", f"must be >= 1, got {self.cpus}")
        check(self.mem_gb > 0, "mem_gb", f"must be > 0, got {self.mem_gb}")
        check(self.gpus >= 0, "gpus", f"must be >= 0, got {self.gpus}")
        check(self.timeout_min >= 1, "timeout_min", f"must be >= 1, got {self.timeout_min}")
        check(
            self.trials_per_task is None or self.trials_per_task >= 1,
            "trials_per_task",
            f"must be >= 1, got {self.trials_per_task}",
        )
        check(self.trial_min is None or self.trial_min > 0, "trial_min", f"must be > 0, got {self.trial_min}")
        check(self.array_parallelism >= 1, "array_parallelism", f"must be >= 1, got {self.array_parallelism}")
        check(self.requeues >= 0, "requeues", f"must be >= 0, got {self.requeues}")
        for i, flag in enumerate(self.sbatch):
            check(
                bool(re.match(r"^--[A-Za-z][A-Za-z0-9_-]*(=.*)?$", flag)),
                f"sbatch[{i}]",
                f"expected '--name=value' or '--flag', got {flag!r}",
            )

    def chunk_size(self) -> int:
        """Trials per Slurm array task."""
        if self.trials_per_task is not None:
            return self.trials_per_task
        if self.trial_min is not None:
            return max(1, int(0.8 * self.timeout_min // self.trial_min))
        return 1


@dataclasses.dataclass(frozen=True)
class Trial:
    """One expanded trial of a study."""

    trial_id: str  # stable hash of kind and canonical config
    setting_id: str  # hash of kind and config without the seed
    kind: str  # registered kind name
    config: TrialConfig  # the validated config
    resources: Resources  # what it needs

    def manifest_entry(self) -> dict[str, Any]:
        """The trial as plain JSON for the study manifest."""
        return {
            "trial_id": self.trial_id,
            "setting_id": self.setting_id,
            "kind": self.kind,
            "config": self.config.to_dict(),
            "resources": dataclasses.asdict(self.resources),
        }


@dataclasses.dataclass(frozen=True)
class Study:
    """A study spec, expanded and validated."""

    name: str  # folder name under the results root
    description: str  # free text
    path: Path  # the spec file
    text: str  # the spec file's text, kept with the results
    trials: tuple[Trial, ...]  # every trial, in expansion order, no duplicates
    smoke: bool  # whether the smoke override was applied

    def kinds(self) -> list[str]:
        """The kinds this study runs, in first-use order."""
        return list(dict.fromkeys(t.kind for t in self.trials))


_TOP_KEYS = {"name", "description", "experiments", "smoke", "kind", "fixed", "grid", "seeds", "resources"}
_EXPERIMENT_KEYS = {"kind", "fixed", "grid", "seeds", "resources", "smoke"}
_SMOKE_KEYS = {"fixed", "grid", "seeds", "resources"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def load_study(path: str | Path, smoke: bool = False) -> Study:
    """Load, expand and validate a study spec; raise SpecError on the first problem.

    Args:
        path: the YAML file.
        smoke: apply the spec's `smoke` overrides and name the study ``<name>_smoke``.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file; the studies shipped are in jobs/")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.object[err.start : err.start + 1]!r}); "
            f"save the spec as UTF-8"
        ) from None
    except OSError as err:
        raise SpecError(f"{path}: cannot read the spec ({err.strerror})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as err:
        raise SpecError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None
    return parse_study(raw, path, text, smoke)


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (PyYAML silently keeps the last).

    Keys brought in by a merge (``<<: *base``) may be overridden: that is what merges are for.
    """

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # reported by PyYAML itself
            if key in seen:
                raise _DuplicateKey(
                    f"line {key_node.start_mark.line + 1}: key {key!r} given twice in one mapping "
                    f"(first on line {seen[key] + 1}); keep one"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def parse_study(raw: Any, source: Path, text: str, smoke: bool = False) -> Study:
    """Expand and validate an already-parsed spec; ``source`` names it in error messages."""
    try:
        return _expand(raw, source, text, smoke)
    except ConfigError as err:
        raise SpecError(f"{source}: {err.key}: {err.message}") from None


def _mapping(value: Any, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
    return value


def _unknown(mapping: dict, valid: set[str], key: str) -> None:
    for k in mapping:
        if k not in valid:
            where = f"{key}.{k}" if key else str(k)
            raise ConfigError(where, f"unknown key; valid: {', '.join(sorted(valid))}")


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _seeds(value: Any, key: str) -> list[int]:
    if isinstance(value, bool):
        raise ConfigError(key, "expected a count, a list of seeds or {start, count}")
    if isinstance(value, int):
        check(value >= 1, key, f"must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, list):
        check(len(value) >= 1, key, "must list at least one seed")
        seeds = [coerce(int, v, f"{key}[{i}]") for i, v in enumerate(value)]
        check(all(s >= 0 for s in seeds), key, "seeds must be >= 0")
        check(len(set(seeds)) == len(seeds), key, "seeds must be distinct")
        return seeds
    if isinstance(value, dict):
        _unknown(value, {"start", "count"}, key)
        start = coerce(int, value.get("start", 0), f"{key}.start")
        count = coerce(int, value.get("count", 1), f"{key}.count")
        check(start >= 0 and count >= 1, key, "needs start >= 0 and count >= 1")
        return list(range(start, start + count))
    raise ConfigError(key, f"expected a count, a list of seeds or {{start, count}}, got {value!r}")


def _expand(raw: Any, path: Path, text: str, smoke: bool) -> Study:
    if not isinstance(raw, dict):
        raise ConfigError("(top)", "a spec is a mapping with at least `name` and `experiments` (or `kind`)")
    _unknown(raw, _TOP_KEYS, "")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError("name", f"needs a folder-safe name (letters, digits, _ . -), got {name!r}")
    description = raw.get("description", "") or ""
    if "experiments" in raw:
        for k in ("kind", "fixed", "grid", "seeds", "resources"):
            if k in raw:
                raise ConfigError(k, "goes inside an experiment when `experiments` is given")
        experiments = raw["experiments"]
        if not isinstance(experiments, list) or not experiments:
            raise ConfigError("experiments", "expected a non-empty list of experiments")
    elif "kind" in raw:
        experiments = [{k: raw[k] for k in ("kind", "fixed", "grid", "seeds", "resources") if k in raw}]
    else:
        raise ConfigError("experiments", "missing; list experiments, or give `kind` for a single one")
    top_smoke = _mapping(raw.get("smoke"), "smoke")
    _unknown(top_smoke, _SMOKE_KEYS, "smoke")

    trials: list[Trial] = []
    seen: dict[str, str] = {}
    for i, exp in enumerate(experiments):
        where = f"experiments[{i}]" if "experiments" in raw else ""
        exp = _mapping(exp, where or "(top)")
        _unknown(exp, _EXPERIMENT_KEYS, where)
        if smoke:
            own_smoke = _mapping(exp.get("smoke"), f"{where}.smoke" if where else "smoke")
            _unknown(own_smoke, _SMOKE_KEYS, f"{where}.smoke" if where else "smoke")
            exp = _merge(_merge(exp, top_smoke), own_smoke)
        for trial in _expand_experiment(exp, where):
            if trial.trial_id in seen:
                raise ConfigError(
                    where or "grid",
                    f"trial {trial.trial_id} is listed twice (also in "
                    f"{seen[trial.trial_id] or 'the spec'}); remove the duplicate",
                )
            seen[trial.trial_id] = where
            trials.append(trial)
    study_name = f"{name}_smoke" if smoke else name
    return Study(study_name, str(description), path, text, tuple(trials), smoke)


def _expand_experiment(exp: dict, where: str) -> list[Trial]:
    prefix = f"{where}." if where else ""
    kind_name = exp.get("kind")
    if kind_name not in kind_names():
        raise ConfigError(f"{prefix}kind", f"unknown kind {kind_name!r}; valid: {', '.join(kind_names())}")
    kind = get_kind(kind_name)
    types_ = field_types(kind.config_cls)
    fixed = _mapping(exp.get("fixed"), f"{prefix}fixed")
    grid = _mapping(exp.get("grid"), f"{prefix}grid")
    for section, values in (("fixed", fixed), ("grid", grid)):
        for key in values:
            if key == "seed":
                raise ConfigError(f"{prefix}{section}.seed", "set seeds with `seeds:` (a count or a list)")
            if key not in types_:
                raise ConfigError(
                    f"{prefix}{section}.{key}",
                    f"unknown parameter for kind {kind_name}; "
                    f"valid: {', '.join(sorted(k for k in types_ if k != 'seed'))}",
                )
    for key in set(fixed) & set(grid):
        raise ConfigError(f"{prefix}grid.{key}", "is also in `fixed`; keep it in one of the two")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{prefix}grid.{key}", "expected a non-empty list of values")
    seeds = _seeds(exp.get("seeds", 1), f"{prefix}seeds")
    res_raw = _mapping(exp.get("resources"), f"{prefix}resources")
    resources = from_mapping(Resources, res_raw, f"{prefix}resources")

    trials = []
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, combo))
        values = {**fixed, **point}
        for seed in seeds:
            cfg = _build(kind.config_cls, {**values, "seed": seed}, prefix, fixed, point)
            trials.append(
                Trial(trial_id(kind_name, cfg), setting_id(kind_name, cfg), kind_name, cfg, resources)
            )
    return trials


def _build(cls: type, values: dict, prefix: str, fixed: dict, point: dict) -> TrialConfig:
    try:
        return from_mapping(cls, values)
    except ConfigError as err:
        section = (
            "grid"
            if err.key.split(".")[0].split("[")[0] in point
            else ("fixed" if err.key.split(".")[0].split("[")[0] in fixed else "config")
        )
        shown = f" (grid point {point})" if point and section != "grid" else ""
        raise ConfigError(f"{prefix}{section}.{err.key}", f"{err.message}{shown}") from None
