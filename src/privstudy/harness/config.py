"""Typed, documented and validated trial configurations, and their stable ids."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from typing import Any, Literal, Mapping


class ConfigError(ValueError):
    """A configuration value is wrong; ``key`` names the parameter at fault."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def param(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    """A documented config field: every trial parameter carries its help text."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple default for sequence parameters (configs are frozen)")
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class TrialConfig:
    """Base of every trial kind's config: a frozen dataclass whose fields are its parameters."""

    seed: int = param(0, "Seed of every random generator in the trial.")

    def __post_init__(self) -> None:
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values (tuples become lists)."""
        return json.loads(canonical_json(self))


def check(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless condition holds."""
    if not condition:
        raise ConfigError(key, message)


def canonical_json(cfg: TrialConfig) -> str:
    """The config as canonical JSON: sorted keys, no spaces, every field present."""
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True, separators=(",", ":"), allow_nan=False)


def trial_id(kind: str, cfg: TrialConfig) -> str:
    """Stable 16-hex-digit id of a trial: a hash of its kind and canonical config."""
    digest = hashlib.sha256(f"{kind}\n{canonical_json(cfg)}".encode()).hexdigest()
    return digest[:16]


def setting_id(kind: str, cfg: TrialConfig) -> str:
    """Id of the trial's setting: the hash of its config without the seed."""
    values = dataclasses.asdict(cfg)
    values.pop("seed")
    payload = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{kind}\n{payload}".encode()).hexdigest()[:16]


def field_help(cls: type) -> dict[str, str]:
    """Map each field of a config class to its help text."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def type_name(tp: Any) -> str:
    """Human name of a field type, as used in error messages and `privstudy kinds`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(c) for c in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def coerce(tp: Any, value: Any, key: str) -> Any:
    """Check a raw (YAML or CLI) value against a field type and return the typed value.

    Args:
        tp: the field's resolved type annotation.
        value: the raw value.
        key: the parameter's path, for error messages.

    Returns:
        The value, converted where the conversion is lossless (int -> float, list -> tuple).
    """
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ConfigError(key, f"got {value!r}; valid choices: {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(key, f"expected {type_name(tp)}, got {_describe(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected {type_name(tp)}, got {_describe(value)}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer() and not isinstance(value, bool):
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            hint = ""
            if isinstance(value, str):
                hint = " (write whole numbers without exponent, e.g. 1000000 not 1e6)"
            raise ConfigError(key, f"expected int, got {_describe(value)}{hint}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) else ""
            raise ConfigError(key, f"expected float, got {_describe(value)}{hint}")
        if not math.isfinite(value):
            raise ConfigError(key, f"must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected str, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported config field type {tp!r} for {key}")


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type annotations of a config dataclass, by field name."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_mapping(cls: type, values: Mapping[str, Any], where: str = "") -> TrialConfig:
    """Build a config from raw values, rejecting unknown keys and wrong types.

    Args:
        cls: the config dataclass.
        values: parameter name -> raw value; missing ones take their defaults.
        where: a prefix for error keys (e.g. ``experiments[0]``).

    Raises:
        ConfigError: naming the key, the problem and the valid choices.
    """
    types_ = field_types(cls)
    prefix = f"{where}." if where else ""
    typed = {}
    for name, raw in values.items():
        if name not in types_:
            raise ConfigError(f"{prefix}{name}", f"unknown parameter; valid: {', '.join(sorted(types_))}")
        typed[name] = coerce(types_[name], raw, f"{prefix}{name}")
    try:
        return cls(**typed)
    except ConfigError as err:
        raise ConfigError(f"{prefix}{err.key}", err.message) from None
