"""What spot's config dataclasses share: they validate themselves in `__post_init__`, choices are `str` enums, and
a wrong value raises ValueError naming the field and the allowed values."""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

E = TypeVar("E", bound=Enum)


def parse_choice(enum: type[E], value: Any, field_name: str) -> E:
    """`value` (a member of `enum` or its value) as a member of `enum`.

    Raises:
        ValueError: naming `field_name` and the allowed values.
    """
    try:
        return enum(value.value if isinstance(value, Enum) else value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise ValueError(f"{field_name} must be one of: {allowed}; got {value!r}") from None


def plain_values(config: dict[str, Any]) -> dict[str, Any]:
    """A config's fields with enum members as their values (what trackers log)."""
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in config.items()}
