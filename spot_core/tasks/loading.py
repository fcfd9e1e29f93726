"""Reading a task's split from an offline mirror directory or from the Hugging Face hub."""

from __future__ import annotations

from pathlib import Path

import datasets

from spot_core.tasks.base import Example, Task, TaskDataError


def load_rows(task: Task, split: str, data_dir: str | Path | None) -> datasets.Dataset:
    """The raw rows (hub schema) of one split; `data_dir` None reads from the hub."""
    if split not in task.splits:
        raise TaskDataError(f"task {task.name!r} has no {split!r} split (it declares {sorted(task.splits)})")
    if data_dir is None:
        return datasets.load_dataset(task.hub_id, task.hub_config, split=task.splits[split])
    path = task.mirror_path(data_dir, split)
    if not path.is_file():
        raise TaskDataError(
            f"task {task.name!r}: no data for split {split!r} at {path}. Either set the data directory to a "
            "mirror that has it (or run `make data`), or load from the Hugging Face hub (data_dir unset)."
        )
    return datasets.load_dataset("json", data_files={split: str(path)}, split=split)


def load_examples(task: Task, split: str, data_dir: str | Path | None, limit: int | None = None) -> list[Example]:
    """Preprocessed {"inputs", "targets"} examples of one split, the first `limit` rows if given."""
    rows = load_rows(task, split, data_dir)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    out = []
    for i, row in enumerate(rows):
        try:
            ex = task.preprocess(row)
        except KeyError as e:
            raise TaskDataError(f"task {task.name!r}: row {i} of split {split!r} lacks field {e}") from e
        except ValueError as e:
            raise TaskDataError(f"task {task.name!r}: row {i} of split {split!r}: {e}") from e
        if task.label_words is not None and ex["targets"] not in task.label_words:
            raise TaskDataError(
                f"task {task.name!r}: row {i} of split {split!r} has target {ex['targets']!r}, "
                f"outside its label set {list(task.label_words)}"
            )
        out.append(ex)
    return out
