"""A task's model input from a row of its fields, with no label: what prediction reads.

A task's preprocessor (`Task.preprocess`) makes `inputs` and `targets` from one row, and reads the label fields
too. A row to predict has none. `task_inputs` finds out, row by row, whether the fields a row lacks feed the input:
it fills them with stand-in values of their declared kinds (`Task.reads`), twice with different ones, and keeps
the input only when both give the same text. A missing field that changes the input is the row's error, named as
the loader names a bad row's field. No task has to declare its label fields, and a task file's task works as a
built-in one does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from spot_core.tasks.base import FieldError, Task
from spot_core.tasks.rows import RowError, check_row

# Stand-in values per field kind (tasks.base.KINDS), tried in this order until two pass the preprocessor's checks
# (a label inside the label set): labels are small integers, a number in a range, a letter or a short text.
STAND_INS: dict[str, tuple[Any, ...]] = {
    "text": ("0", "1", "2", "A", "B", "a"),
    "integer": (0, 1, 2, 3, 4, 5),
    "number": (0, 1, 2.5, 3, 4, 5),
    "value": ("0", "1", 2, "A", "B", "a"),
    "texts": (["0"], ["1"], ["A"], ["B"], ["a"], ["b"]),
    "integers": ([0], [1], [2], [3], [4], [5]),
}
TRIES = 6  # stand-ins per kind


def _has(row: Any, path: list[str]) -> bool:
    for key in path:
        if not isinstance(row, dict) or key not in row:
            return False
        row = row[key]
    return True


def _filled(row: dict, missing: Mapping[str, str], choice: int) -> dict:
    """A copy of `row` with each missing field (`a.b`: b of the record a) set to its kind's stand-in `choice`."""
    out = copy.deepcopy(row)
    for name, kind in missing.items():
        *parents, last = name.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = copy.deepcopy(STAND_INS[kind][choice])
    return out


def _inputs(task: Task, row: dict) -> str | None:
    """The preprocessed input of a complete row; None where the preprocessor refuses its (stand-in) values."""
    try:
        example = task.preprocess(row)
    except (FieldError, KeyError, ValueError, TypeError, IndexError, AttributeError):
        return None
    return None if example is None else example["inputs"]


def task_inputs(task: Task, row: dict, place: str) -> str:
    """The model input the task makes of `row` (its fields, labels not needed).

    Raises:
        RowError: `row` lacks a field the input is made from, or holds a field of another kind (naming the
            field), or the task cannot make an input of it.
    """
    present = {name: kind for name, kind in task.reads.items() if _has(row, name.split("."))}
    check_row(row, present, place)  # the fields it has, of their kinds
    missing = {name: kind for name, kind in task.reads.items() if name not in present}
    if not missing:
        try:
            example = task.preprocess(row)
        except FieldError as e:
            raise RowError(place, f": field {e.field!r} {e.problem}", e.field) from e
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
            raise RowError(place, f": task {task.name!r} cannot read it ({e})") from e
        if example is None:
            raise RowError(place, f": task {task.name!r} drops such a row (a label it does not predict)")
        return example["inputs"]
    seen: list[str] = []
    for choice in range(TRIES):
        text = _inputs(task, _filled(row, missing, choice))
        seen += [] if text is None else [text]
        if len(seen) == 2 or len(set(seen)) > 1:
            break
    if len(seen) >= 2 and len(set(seen)) == 1:
        return seen[0]  # the missing fields are the label's: the input is the same whatever they hold
    needed = [name for name in missing if _feeds_input(task, row, missing, name)] or list(missing)
    fields = ", ".join(repr(n) for n in needed)
    has = ", ".join(row) or "nothing"
    raise RowError(place, f" lacks field {fields}, which task {task.name!r} reads (the row has: {has})", needed[0])


def _feeds_input(task: Task, row: dict, missing: Mapping[str, str], name: str) -> bool:
    """Whether the missing field `name` changes the input, the other missing fields held at their first stand-in."""
    others = {n: k for n, k in missing.items() if n != name}
    base = _filled(row, others, 0)
    seen = {_inputs(task, _filled(base, {name: missing[name]}, choice)) for choice in range(TRIES)} - {None}
    return len(seen) != 1
