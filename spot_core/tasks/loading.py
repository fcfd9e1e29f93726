"""Reading a task's split from an offline mirror directory or from the Hugging Face hub.

Both sources give rows in the hub's schema, so one preprocessor serves both. Split specs are applied
here, the same way for both sources: `name`, `name[a:b]` with integers (negative counts from the end) or
percentages (`[:50%]`, boundaries rounded to the nearest row), and `+` to join splits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import datasets
import numpy as np

from spot_core.tasks.base import Example, Task, TaskDataError, members, split_file

SAMPLE_SEED = 0
_SLICE = re.compile(r"^\s*([\w.\-]+)\s*(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?\s*$")


def _bound(value: str | None, n: int) -> int | None:
    if value is None:
        return None
    if value.endswith("%"):
        return round(n * int(value[:-1]) / 100)
    return int(value)


def slice_rows(rows: datasets.Dataset, spec_part: str) -> datasets.Dataset:
    """Applies one `name[a:b]` slice (the name is ignored here) to a split's rows."""
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


def availability(task: Task, data_dir: str | Path) -> str:
    """Whether a mirror can serve a task's train and validation: "official splits", "carve-out", or "missing"."""
    splits = resolve_splits(task, data_dir)
    needed = [name for role in ("train", "validation") for name in split_file(splits[role])]
    if not all(task.mirror_path(data_dir, name).is_file() for name in needed):
        return "missing"
    return "official splits" if splits == dict(task.splits) else "carve-out"


def _missing(task: Task, role: str, data_dir: str | Path, path: Path) -> TaskDataError:
    absent = "" if Path(data_dir).is_dir() else f" (the data directory {data_dir} does not exist)"
    return TaskDataError(
        f"task {task.name!r}: no data for its {role!r} split at {path}{absent}. Either point the data directory "
        "(data_dir=..., or $SPOT_DATA_DIR) at a mirror that has it, e.g. one written by `make data`, "
        "or read the task from the Hugging Face hub (data_dir unset, with internet access)."
    )


def _read_split(task: Task, name: str, data_dir: str | Path | None, role: str) -> datasets.Dataset:
    if data_dir is not None:
        path = task.mirror_path(data_dir, name)
        if not path.is_file():
            raise _missing(task, role, data_dir, path)
        return datasets.load_dataset("json", data_files={name: str(path)}, split=name)
    if not task.on_hub:
        raise TaskDataError(
            f"task {task.name!r} has no Hugging Face copy; it reads only from a mirror. Put its {name!r} split at "
            f"{task.mirror_path('<data_dir>', name)} and set data_dir. {task.notes}"
        )
    try:
        if name in task.hub_data_files:
            files = {name: task.hub_data_files[name]}
            return datasets.load_dataset(task.hub_id, data_files=files, split=name, revision=task.revision)
        return datasets.load_dataset(task.hub_id, task.hub_config, split=name, revision=task.revision)
    except Exception as e:  # offline, unknown revision, gated dataset ...: one message with the remedies
        raise TaskDataError(
            f"task {task.name!r}: could not load {task.hub_id} ({task.hub_config}) split {name!r} from the "
            f"Hugging Face hub: {type(e).__name__}: {e}. Without internet, set data_dir to an offline mirror "
            "(`make data` writes one)."
        ) from e


def load_rows(task: Task, role: str, data_dir: str | Path | None, splits: Mapping[str, str] | None = None):
    """The raw rows (hub schema) of one role's split; `data_dir` None reads from the hub."""
    splits = splits or resolve_splits(task, data_dir)
    if role not in splits:
        raise TaskDataError(f"task {task.name!r} has no {role!r} split (it declares {sorted(splits)})")
    parts = [
        slice_rows(_read_split(task, name, data_dir, role), part)
        for part, name in zip(splits[role].split("+"), split_file(splits[role]), strict=True)
    ]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def preprocess_rows(task: Task, rows, role: str, where: str) -> list[Example]:
    """Preprocessed examples; a missing field, a bad value or a label outside the label set is a TaskDataError
    naming the task, `where` the rows came from and the row."""
    out = []
    for i, row in enumerate(rows):
        try:
            ex = task.preprocess(row)
            if ex is None:  # a row the task drops by design (SNLI's no-consensus pairs, empty documents)
                continue
        except KeyError as e:
            raise TaskDataError(f"task {task.name!r}: row {i} of {where} lacks field {e}") from e
        except (ValueError, TypeError, IndexError) as e:
            raise TaskDataError(f"task {task.name!r}: row {i} of {where}: {e}") from e
        if task.label_words is not None and ex["targets"] not in task.label_words:
            raise TaskDataError(
                f"task {task.name!r}: row {i} of {where} has target {ex['targets']!r}, "
                f"outside its label set {list(task.label_words)}"
            )
        out.extend(task.train_filter(ex) if role == "train" and task.train_filter else [ex])
    return out


def describe_source(task: Task, role: str, data_dir: str | Path | None, splits: Mapping[str, str]) -> str:
    spec = splits[role]
    if data_dir is None:
        return f"{spec!r} of hub {task.hub_id} ({task.hub_config}) at {task.revision or 'main'}"
    return f"{spec!r} of " + " + ".join(str(task.mirror_path(data_dir, name)) for name in split_file(spec))


def sample_rows(rows: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    """`limit` rows drawn with a fixed seed, kept in file order (all rows if `limit` is None or not smaller).
    Not the first rows: some files are sorted by label (CR's test split starts with 1,000 negatives)."""
    if limit is None or limit >= len(rows):
        return rows
    keep = np.sort(np.random.default_rng(SAMPLE_SEED).permutation(len(rows))[:limit])
    return rows.select(keep.tolist())


def load_examples(task: Task, role: str, data_dir: str | Path | None, limit: int | None = None) -> list[Example]:
    """Preprocessed examples of one role's split (train / validation / test), from a fixed-seed sample of
    `limit` rows when given."""
    splits = resolve_splits(task, data_dir)
    rows = sample_rows(load_rows(task, role, data_dir, splits), limit)
    return preprocess_rows(task, rows, role, f"{role} split {describe_source(task, role, data_dir, splits)}")


def check_data(name: str, data_dir: str | Path | None) -> None:
    """Reads one row of the train and validation splits of a task (or of each task of a mixture): the cheap
    check that runs before any model loads. Missing data or a bad row raises TaskDataError."""
    for task in members(name):
        for role in ("train", "validation"):
            load_examples(task, role, data_dir, limit=1)
