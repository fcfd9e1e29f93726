"""Reading a task's rows from where its `DataSource` says they live: a mirror's files or the Hugging Face hub.

Both give rows in the hub's schema, so one preprocessor serves both. Which files, which configuration and which
split specs (a carve-out where a mirror lacks a split) the source settles once (`spot_core.tasks.source`); the
specs are applied here, the same way for both: `name`, `name[a:b]` with integers (negative counts from the end) or
percentages (`[:50%]`, boundaries rounded to the nearest row), and `+` to join splits. A task that shares a
dataset with others (`Task.row_filter`: MRQA's subsets) has its rows picked from each split before it is sliced.

Data is checked, not guessed: every row read is checked against the fields its task reads (`Task.reads`) before
the preprocessor sees it, and a row that is not JSON, lacks a field, holds a value of another kind, or a label
outside the task's label set is a TaskDataError naming the task, the file, the line (1-based; blank lines are
skipped) and the field. `check_data` reads every row of a mirror's splits this way before any model loads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import datasets
import numpy as np

from spot_core.tasks.base import Example, FieldError, Task, TaskDataError, members, split_file
from spot_core.tasks.rows import RowError, Rows, check_row
from spot_core.tasks.source import DataSource

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


def read_split(source: DataSource, name: str, role: str | None = None) -> Rows:
    """The rows of one split name (not a role) of `source`: its file, or the hub's split; `role`: the role that
    reads it, as a missing file's message names it."""
    task = source.task
    if not source.from_hub:
        path = source.file(name)
        if not path.is_file():
            raise source.missing(role or name, path)
        try:
            return Rows.from_file(path)
        except RowError as e:
            raise TaskDataError(f"task {task.name!r}: {e}. {fix(task, e.place)}") from None
        except OSError as e:
            raise TaskDataError(f"task {task.name!r}: cannot read {path}: {e.strerror or e}") from e
    if task.manual_download:
        raise TaskDataError(f"task {task.name!r} needs a manual download: {task.manual_download}")
    if not task.on_hub:
        raise TaskDataError(
            f"task {task.name!r} has no Hugging Face copy; it reads only from a mirror. Put its {name!r} split at "
            f"{DataSource.at(task, '<data_dir>', task.hub_config).file(name)} and set data_dir. {task.notes}"
        )
    return _hub_split(task, name)


def _hub_split(task: Task, name: str) -> Rows:
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


def read_rows(source: DataSource, role: str) -> Rows:
    """The raw rows (hub schema) of one role's split, each with its place."""
    if role not in source.splits:
        raise TaskDataError(f"task {source.task.name!r} has no {role!r} split (it declares {sorted(source.splits)})")
    spec = source.splits[role]
    parts = [
        slice_rows(picked(source, read_split(source, name, role)), part)
        for part, name in zip(spec.split("+"), split_file(spec), strict=True)
    ]
    return Rows.concat(parts)


def picked(source: DataSource, rows: Rows) -> Rows:
    """The rows of one split name that the task reads: those its `row_filter` picks (MRQA's `subset`), else all."""
    task = source.task
    if not task.row_filter:
        return rows
    try:
        kept = rows.where(task.row_filter)
    except RowError as e:
        raise TaskDataError(f"task {task.name!r}: {e}. {fix(task, e.place)}") from None
    if len(rows) and not len(kept):
        raise TaskDataError(
            f"task {task.name!r}: none of the {len(rows):,} rows of {rows.parts[0].source} holds "
            + ", ".join(f"{name} {value!r}" for name, value in task.row_filter.items())
        )
    return kept


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


def sample_rows(rows: R, limit: int | None) -> R:
    """`limit` rows drawn with a fixed seed, kept in file order (all rows if `limit` is None or not smaller).
    Not the first rows: some files are sorted by label (CR's test split starts with 1,000 negatives)."""
    if limit is None or limit >= len(rows):
        return rows
    keep = np.sort(np.random.default_rng(SAMPLE_SEED).permutation(len(rows))[:limit])
    return rows.select(keep.tolist())


def read_examples(source: DataSource, role: str, limit: int | None = None) -> list[Example]:
    """Preprocessed examples of one role's split (train / validation / test), from a fixed-seed sample of
    `limit` rows when given. Only the rows used are parsed and checked (`check_data` checks them all)."""
    return preprocess_rows(source.task, sample_rows(read_rows(source, role), limit), role)


def load_examples(task: Task, role: str, data_dir: str | Path | None, limit: int | None = None) -> list[Example]:
    """`read_examples` of the task's data in `data_dir` (None: the hub), for a caller that reads one split."""
    return read_examples(DataSource.of(task, data_dir), role, limit)


_CHECKED: set[tuple] = set()  # mirror splits found good in this process, by their files' path, size and mtime


def _stamp(source: DataSource, role: str) -> tuple:
    files = [path for path in source.role_files(role) if path.is_file()]
    return (source.task.name, role, *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def check_downloads(names: Sequence[str], data_dir: str | Path | None) -> None:
    """Each task of `names` (a mixture: each member) that the hub cannot serve without a manual download
    (`Task.manual_download`) has its files in `data_dir`; else TaskDataError in one line, the download's how-to,
    before any task is read (a mixture's other members would download first)."""
    for task in (task for name in names for task in members(name)):
        if task.manual_download:
            source = DataSource.of(task, data_dir)
            if source.from_hub or source.availability == "missing":
                raise TaskDataError(f"task {task.name!r} needs a manual download: {task.manual_download}")


def check_data(name: str, data_dir: str | Path | None, roles: Sequence[str] = ("train", "validation")) -> None:
    """The check that runs before any model loads: every row of the `roles` splits of a task (or of each task of a
    mixture) in a mirror is parsed, checked and preprocessed; from the hub, whose schema is fixed, one row.
    Missing or empty data, or a bad row, raises TaskDataError. A mirror split already found good in this process,
    unchanged since, is not read again (an entry point checks before `prepare` does; a worker runs many cells)."""
    check_downloads([name], data_dir)
    for task in members(name):
        source = DataSource.of(task, data_dir)
        for role in roles:
            stamp = None if source.from_hub else _stamp(source, role)
            if stamp in _CHECKED:
                continue
            rows = read_rows(source, role)
            if len(rows) == 0:
                raise TaskDataError(
                    f"task {task.name!r}: no rows in its {role} split ({source.describe(role)}). Point data_dir at a "
                    "mirror that has them, or rebuild it (make data)"
                )
            for _ in examples(task, sample_rows(rows, 1) if source.from_hub else rows, role):
                pass
            if stamp is not None:
                _CHECKED.add(stamp)
