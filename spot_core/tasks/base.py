"""Tasks: a data source, a text-to-text preprocessor, label words and metrics (seqio-like).

This is the minimal interface the engine needs; benchmark families register tasks in their own
modules (`glue.py`, ...).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spot_core.metrics import task_score

Example = dict[str, str]
Metric = Callable[[Sequence[str], Sequence[str]], dict[str, float]]


class TaskDataError(FileNotFoundError):
    """Task data is missing or malformed; the message names the task, the path and the remedies."""


@dataclass(frozen=True)
class Task:
    """One text-to-text task.

    Attributes:
        name: versioned name (`sst2_v1`); a format change gets a new version.
        hub_id, hub_config: the Hugging Face dataset.
        splits: role (train/validation/test) -> split name in the data.
        preprocess: hub row -> {"inputs", "targets"}.
        metrics: metric functions; the task score is the mean of all their values.
        label_words: the closed label set (rank classification), or None (greedy generation).
    """

    name: str
    hub_id: str
    hub_config: str | None
    splits: dict[str, str]
    preprocess: Callable[[dict], Example]
    metrics: tuple[Metric, ...]
    label_words: tuple[str, ...] | None = None
    max_target_tokens: int = 16
    notes: str = field(default="", compare=False)

    def score(self, targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
        """All metric values plus `score`, their mean (0-100)."""
        values: dict[str, float] = {}
        for metric in self.metrics:
            values.update(metric(targets, predictions))
        return {**values, "score": task_score(values)}

    def mirror_path(self, data_dir: str | Path, split: str) -> Path:
        config = self.hub_config or "default"
        return Path(data_dir) / self.hub_id.replace("/", "__") / config / f"{self.splits.get(split, split)}.jsonl"


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in _REGISTRY:
        raise ValueError(f"task {task.name!r} is already registered")
    _REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task; an unknown name raises KeyError listing the closest names."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown task {name!r}.{hint} Registered tasks: {', '.join(sorted(_REGISTRY))}")


def task_names() -> list[str]:
    return sorted(_REGISTRY)
