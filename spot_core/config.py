"""What spot's config dataclasses share: they validate themselves in `__post_init__`, choices are `str` enums, and
a wrong value raises ConfigError naming the setting as the user writes it (`trainer.lr`) and the allowed values.

A config that is part of another one (a study's `source_trainer`) is built with `nested`, so that its errors name
the setting where the user wrote it (`study.source_trainer.lr`, not `trainer.lr`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Collection, Mapping
from enum import Enum
from typing import Any, TypeVar

from spot_core.errors import ConfigError

E = TypeVar("E", bound=Enum)
C = TypeVar("C")


def parse_choice(enum: type[E], value: Any, field_name: str) -> E:
    """`value` (a member of `enum` or its value) as a member of `enum`.

    Raises:
        ConfigError: naming `field_name` and the allowed values.
    """
    try:
        return enum(value.value if isinstance(value, Enum) else value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise ConfigError(f"{field_name} must be one of: {allowed}; got {value!r}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(value: Any, setting: str, low: int = 1, hint: str = "") -> None:
    """Raises ConfigError unless `value` is an integer >= `low`."""
    if not (_is_number(value) and math.isfinite(value) and value == int(value) and value >= low):
        raise ConfigError(f"{setting} must be an integer >= {low}, got {value!r}{hint}")


def check_number(value: Any, setting: str, *, positive: bool = False, hint: str = "") -> None:
    """Raises ConfigError unless `value` is a finite number, > 0 (`positive`) or >= 0. NaN and infinities are
    refused too (a NaN compares false with everything, so `not x > 0` is what catches it)."""
    ok = _is_number(value) and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{setting} must be a finite number {bound}, got {value!r}{hint}")


def nested(cls: type[C], value: C | Mapping[str, Any], where: str) -> C:
    """`value` (a mapping from the config, or an instance) as a `cls`, whose errors name its settings under
    `where` instead of `cls.SETTING`: TrainerConfig's `trainer.lr` is `study.source_trainer.lr` in a study.

    Raises:
        ConfigError: a bad value (renamed), or a key `cls` has no field for (with the closest field).
    """
    if not isinstance(value, Mapping):
        return value
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in value if k not in names]
    if unknown:
        raise no_such_setting(f"{where}.{unknown[0]}", setting_names(cls, where))
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where} needs {', '.join(f'{where}.{m}' for m in missing)}")
    try:
        return cls(**value)
    except ConfigError as e:
        raise ConfigError(rename(str(e), cls.SETTING, where)) from None


def field_config(cls: type, name: str) -> type | None:
    """The config dataclass that field `name` of `cls` holds (`TrainerConfig | None` -> TrainerConfig), or None."""
    hint = typing.get_type_hints(cls).get(name)
    return next((t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)), None)


def setting_names(cls: type, where: str) -> list[str]:
    """Every setting of config dataclass `cls` as the user writes it under `where`, nested configs' too:
    `setting_names(StudyConfig, "study")` holds `study.seeds` and `study.source_trainer.lr`."""
    out = []
    for f in dataclasses.fields(cls):
        out.append(f"{where}.{f.name}")
        inner = field_config(cls, f.name)
        if inner is not None:
            out += setting_names(inner, f"{where}.{f.name}")
    return out


def no_such_setting(key: str, known: Collection[str]) -> ConfigError:
    """The error for a setting `key` (dotted: `trainer.lrr`) that is not among the `known` ones (dotted:
    `trainer.lr`; the levels above a setting are known too). It names the closest setting beside the first
    unknown part of `key` (`did you mean trainer.lr?`), or else lists the settings there."""
    levels = {".".join(k.split(".")[:n]) for k in known for n in range(1, k.count(".") + 2)}
    parts = key.split(".")
    depth = next((i for i in range(len(parts)) if ".".join(parts[: i + 1]) not in levels), len(parts) - 1)
    parent = ".".join(parts[:depth])
    inside = [k for k in known if k.startswith(f"{parent}.")] if parent else list(known)
    beside = list(dict.fromkeys(k.split(".")[depth] for k in inside))
    close = difflib.get_close_matches(parts[depth], beside, n=1)
    if close:
        guess = ".".join([*parts[:depth], close[0], *parts[depth + 1 :]])
        return ConfigError(f"{key}: no such setting; did you mean {guess}?")
    where = f"the settings of {parent}" if parent else "the top-level settings"
    return ConfigError(f"{key}: no such setting; {where} are: {', '.join(beside)}")


def rename(message: str, own: str, where: str) -> str:
    """`message` with the settings named `own.x` named `where.x` (`own` followed by a dot or `=`)."""
    return re.sub(rf"(?<!\w)(?<!\w\.){re.escape(own)}(?=[.=])", where, message)


def plain_values(config: dict[str, Any]) -> dict[str, Any]:
    """A config's fields with enum members as their values (what trackers log)."""
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in config.items()}
