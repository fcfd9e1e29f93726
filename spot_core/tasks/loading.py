"""Reading a task's split from an offline mirror directory or from the Hugging Face hub.

Both sources give rows in the hub's schema, so one preprocessor serves both. Split specs are applied
here, the same way for both sources: `name`, `name[a:b]` with integers (negative counts from the end) or
percentages (`[:50%]`, boundaries rounded to the nearest row), and `+` to join splits. A mirror without a task's
configuration folder serves it from a fallback configuration where the task names one (`data_config`), and a
mirror without a split serves it through the task's carve-out where it has one (`resolve_splits`).

Data is checked, not guessed: every row read is checked against the fields its task reads (`Task.reads`) before
the preprocessor sees it, and a row that is not JSON, lacks a field, holds a value of another kind, or a label
outside the task's label set is a TaskDataError naming the task, the file, the line (1-based; blank lines are
skipped) and the field. `check_data` reads every row of a mirror's splits this way before any model loads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import datasets
import numpy as np

from spot_core.tasks.base import Example, FieldError, Task, TaskDataError, members, split_file
from spot_core.tasks.rows import RowError, Rows, check_row

R = TypeVar("R", Rows, datasets.Dataset)
SAMPLE_SEED = 0
FIX = {  # what mends a bad row: of a mirror file (its places are lines), of a hub split
    "line": "Fix or delete that line, or rebuild the mirror (make data)",
    "row": "The hub's copy is not what the task reads: read the task from a mirror (data_dir=...)",
}
_SLICE = re.compile(r"^\s*([\w.\-]+)\s*(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?\s*$")


def _bound(value: str | None, n: int) -> int | None:
    if value is None:
        return None
    if value.endswith("%"):
        return round(n * int(value[:-1]) / 100)
    return int(value)


def slice_rows(rows: R, spec_part: str) -> R:
    """Applies one `name[a:b]` slice (the name is ignored here) to a split's rows (Rows, or a Dataset)."""
    match = _SLICE.match(spec_part)
    if match is None:
        raise ValueError(f"bad split spec {spec_part!r}: expected name, name[a:b], name[a%:b%]")
    start, stop = _bound(match.group(2), len(rows)), _bound(match.group(3), len(rows))
    return rows.select(range(len(rows))[slice(start, stop)])


def resolve_splits(task: Task, data_dir: str | Path | None) -> dict[str, str]:
    """Role -> split spec for the data at hand: the task's own splits, or its carve-out where a mirror lacks
    a split the carve-out replaces (the hub has every official split)."""
    splits = dict(task.splits)
    if data_dir is None or not task.fallback_splits:
        return splits
    replaced = [task.splits[role] for role in task.fallback_splits if role in task.splits]
    if all(task.mirror_path(data_dir, name).is_file() for spec in replaced for name in split_file(spec)):
        return splits
    return {**splits, **task.fallback_splits}


def data_config(task: Task, data_dir: str | Path | None) -> str | None:
    """The configuration a task's rows are read from: from the hub (`data_dir` None) always its own `hub_config`;
    from a mirror the one whose folder it reads (`Task.mirror_config`: its own, or where the mirror lacks that
    folder, the first of its `fallback_configs` the mirror has)."""
    return task.hub_config if data_dir is None else task.mirror_config(data_dir)


def availability(task: Task, data_dir: str | Path) -> str:
    """Whether a mirror can serve a task's train and validation: "official splits", "carve-out", or "missing"."""
    splits = resolve_splits(task, data_dir)
    needed = [name for role in ("train", "validation") for name in split_file(splits[role])]
    if not all(task.mirror_path(data_dir, name).is_file() for name in needed):
        return "missing"
    return "official splits" if splits == dict(task.splits) else "carve-out"


def _missing(task: Task, role: str, data_dir: str | Path, path: Path) -> TaskDataError:
    absent = "" if Path(data_dir).is_dir() else f" (the data directory {data_dir} does not exist)"
    if task.fallback_configs and data_config(task, data_dir) == task.hub_config:
        absent += f" (nor a folder of its fallback configurations {', '.join(task.fallback_configs)} beside it)"
    return TaskDataError(
        f"task {task.name!r}: no data for its {role!r} split at {path}{absent}. Either point the data directory "
        "(data_dir=..., or $SPOT_DATA_DIR) at a mirror that has it, e.g. one written by `make data`, "
        "or read the task from the Hugging Face hub (data_dir unset, with internet access)."
    )


def _read_split(task: Task, name: str, data_dir: str | Path | None, role: str) -> Rows:
    if data_dir is not None or name in task.files:
        path = task.mirror_path(data_dir, name)
        if not path.is_file():
            raise _missing(task, role, data_dir, path)
        try:
            return Rows.from_file(path)
        except RowError as e:
            raise TaskDataError(f"task {task.name!r}: {e}. {fix(task, e.place)}") from None
        except OSError as e:
            raise TaskDataError(f"task {task.name!r}: cannot read {path}: {e.strerror or e}") from e
    if not task.on_hub:
        raise TaskDataError(
            f"task {task.name!r} has no Hugging Face copy; it reads only from a mirror. Put its {name!r} split at "
            f"{task.mirror_path('<data_dir>', name)} and set data_dir. {task.notes}"
        )
    try:
        if name in task.hub_data_files:
            files = {name: task.hub_data_files[name]}
            rows = datasets.load_dataset(task.hub_id, data_files=files, split=name, revision=task.revision)
        else:
            rows = datasets.load_dataset(task.hub_id, task.hub_config, split=name, revision=task.revision)
    except Exception as e:  # offline, unknown revision, gated dataset ...: one message with the remedies
        raise TaskDataError(
            f"task {task.name!r}: could not load {task.hub_id} ({task.hub_config}) split {name!r} from the "
            f"Hugging Face hub: {type(e).__name__}: {e}. Without internet, set data_dir to an offline mirror "
            "(`make data` writes one)."
        ) from e
    return Rows.from_dataset(rows, f"hub {task.hub_id} ({task.hub_config}) split {name!r}")


def load_rows(task: Task, role: str, data_dir: str | Path | None, splits: Mapping[str, str] | None = None) -> Rows:
    """The raw rows (hub schema) of one role's split, each with its place; `data_dir` None reads from the hub."""
    splits = splits or resolve_splits(task, data_dir)
    if role not in splits:
        raise TaskDataError(f"task {task.name!r} has no {role!r} split (it declares {sorted(splits)})")
    parts = [
        slice_rows(_read_split(task, name, data_dir, role), part)
        for part, name in zip(splits[role].split("+"), split_file(splits[role]), strict=True)
    ]
    return Rows.concat(parts)


def examples(task: Task, rows: Rows, role: str) -> Iterator[Example]:
    """The preprocessed examples of `rows`, each row checked first against the fields the task reads.

    Raises:
        TaskDataError: a row that is not JSON, lacks a field, holds a value of another kind or one the task
            cannot use (a label outside its label set), naming the task, the place (file and line) and the field.
    """
    try:
        for place, row in rows.located():
            check_row(row, task.reads, place)
            try:
                ex = task.preprocess(row)
            except FieldError as e:
                raise RowError(place, f": field {e.field!r} {e.problem}", e.field) from e
            except KeyError as e:
                raise RowError(place, f" lacks field {e} (the row has: {', '.join(row) or 'nothing'})") from e
            except (ValueError, TypeError, IndexError, AttributeError) as e:
                raise RowError(place, f": {e}") from e
            if ex is None:  # a row the task drops by design (SNLI's no-consensus pairs, empty documents)
                continue
            if task.label_words is not None and ex["targets"] not in task.label_words:
                raise RowError(
                    place, f" has target {ex['targets']!r}, outside the task's label set {list(task.label_words)}"
                )
            yield from task.train_filter(ex) if role == "train" and task.train_filter else [ex]
    except RowError as e:
        raise TaskDataError(f"task {task.name!r}: {e}. {fix(task, e.place)}") from None


def fix(task: Task, place: str) -> str:
    """What mends a bad row at `place`: a task's own data file is not a mirror that `make data` rebuilds."""
    return "Fix or delete that line of the task's data file" if task.files else FIX[place.split()[0]]


def preprocess_rows(task: Task, rows: Rows, role: str) -> list[Example]:
    """Preprocessed examples (`examples`)."""
    return list(examples(task, rows, role))


def describe_source(task: Task, role: str, data_dir: str | Path | None, splits: Mapping[str, str]) -> str:
    spec = splits[role]
    if data_dir is None and not task.files:
        return f"{spec!r} of hub {task.hub_id} ({task.hub_config}) at {task.revision or 'main'}"
    return f"{spec!r} of " + " + ".join(str(task.mirror_path(data_dir, name)) for name in split_file(spec))


def sample_rows(rows: R, limit: int | None) -> R:
    """`limit` rows drawn with a fixed seed, kept in file order (all rows if `limit` is None or not smaller).
    Not the first rows: some files are sorted by label (CR's test split starts with 1,000 negatives)."""
    if limit is None or limit >= len(rows):
        return rows
    keep = np.sort(np.random.default_rng(SAMPLE_SEED).permutation(len(rows))[:limit])
    return rows.select(keep.tolist())


def load_examples(task: Task, role: str, data_dir: str | Path | None, limit: int | None = None) -> list[Example]:
    """Preprocessed examples of one role's split (train / validation / test), from a fixed-seed sample of
    `limit` rows when given. Only the rows used are parsed and checked (`check_data` checks them all)."""
    return preprocess_rows(task, sample_rows(load_rows(task, role, data_dir), limit), role)


_CHECKED: set[tuple] = set()  # mirror splits found good in this process, by their files' path, size and mtime


def _mirror_identity(task: Task, role: str, data_dir: str | Path, splits: Mapping[str, str]) -> tuple:
    files = [task.mirror_path(data_dir, name) for name in split_file(splits[role])]
    return (task.name, role, *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()))


def check_data(name: str, data_dir: str | Path | None, roles: Sequence[str] = ("train", "validation")) -> None:
    """The check that runs before any model loads: every row of the `roles` splits of a task (or of each task of a
    mixture) in a mirror is parsed, checked and preprocessed; from the hub, whose schema is fixed, one row.
    Missing or empty data, or a bad row, raises TaskDataError. A mirror split already found good in this process,
    unchanged since, is not read again (an entry point checks before `prepare` does; a worker runs many cells)."""
    for task in members(name):
        splits = resolve_splits(task, data_dir)
        for role in roles:
            from_files = data_dir is not None or bool(task.files)
            identity = _mirror_identity(task, role, data_dir, splits) if from_files else None
            if identity in _CHECKED:
                continue
            rows = load_rows(task, role, data_dir, splits)
            if len(rows) == 0:
                where = describe_source(task, role, data_dir, splits)
                raise TaskDataError(
                    f"task {task.name!r}: no rows in its {role} split ({where}). Point data_dir at a mirror that has "
                    "them, or rebuild it (make data)"
                )
            for _ in examples(task, rows if from_files else sample_rows(rows, 1), role):
                pass
            if identity is not None:
                _CHECKED.add(identity)
