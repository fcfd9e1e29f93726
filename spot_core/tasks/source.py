"""Where a task's rows live: a data directory resolved, once, into everything a reader of the task asks of it.

A data directory holds a mirror in the layout `<data_dir>/<hub id, / as __>/<config>/<split>.jsonl` (`make data`
writes one); without one, rows come from the Hugging Face hub. `DataSource.of(task, data_dir)` settles:

- the configuration read: the task's own `hub_config`, or, where a mirror lacks that folder, the first of its
  `fallback_configs` the mirror has (WinoGrande L for XL); from the hub always its own;
- the split specs: the task's own, or its documented carve-out (`fallback_splits`) where a mirror lacks a split
  the carve-out replaces (HellaSwag: train and validation from halves of the validation file);
- the mirror folder read, hence the file of each split name (a task defined by a file of its own reads its own
  files, whatever the data directory);
- the data's identity: what the tokenised cache's key includes (`identity`) and what a run records and a study
  cell's key includes (`fallback_configs_read`).

The readers (`loading`, hence `check_data`), the cache, the mirror's export, the task files' first-row check and
the coverage table all ask this object; none re-derives a path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spot_core.tasks.base import Task, TaskDataError, members, split_file

PARQUET_EXPORT = "refs/convert/parquet"  # the hub's parquet copy of a dataset, beside its main branch
EXPORT_NOTE = (
    "Read from the hub's parquet export of {hub} (revision refs/convert/parquet): its main branch is a loading "
    "script, which datasets >= 3 cannot run."
)


def parquet_export(config: str, splits: Iterable[str]) -> dict[str, str]:
    """Split name -> its files in the hub's parquet export (`<config>/<split>/NNNN.parquet`), for
    `Task.hub_data_files` with `revision=PARQUET_EXPORT`; a script dataset without named configurations has one,
    `default`."""
    return {split: f"{config}/{split}/*.parquet" for split in splits}


@dataclass(frozen=True)
class DataSource:
    """One task's data in one data directory, resolved (`of`, `at`).

    Attributes:
        task: the task read.
        data_dir: the data directory; None: the Hugging Face hub (a task with files of its own still reads them).
        config: the configuration read.
        folder: the mirror folder read, `<data_dir>/<hub id, / as __>/<config>`; None from the hub, and for a task
            that reads files of its own.
        splits: role -> split spec read: the task's own, or its carve-out where a mirror lacks a split.
    """

    task: Task
    data_dir: Path | None
    config: str | None
    folder: Path | None
    splits: Mapping[str, str]

    @classmethod
    def of(cls, task: Task, data_dir: str | Path | None) -> DataSource:
        """What a run reads: the hub (`data_dir` None) serves the task's own configuration; a mirror the first of
        its own and its `fallback_configs` whose folder it has, else its own (whose files are then missing)."""
        if data_dir is None:
            return cls.at(task, None, task.hub_config)
        root = Path(data_dir)
        present = [c for c in (task.hub_config, *task.fallback_configs) if _folder(root, task, c).is_dir()]
        return cls.at(task, root, present[0] if present else task.hub_config)

    @classmethod
    def at(cls, task: Task, data_dir: str | Path | None, config: str | None) -> DataSource:
        """The task's data in `data_dir`'s folder of `config`, present or not: where `of` reads once it has picked
        the configuration, and where the mirror's export writes the configuration its source serves."""
        root = None if data_dir is None else Path(data_dir)
        folder = None if root is None or task.files else _folder(root, task, config)
        own = cls(task, root, config, folder, dict(task.splits))
        return replace(own, splits={**task.splits, **task.fallback_splits}) if own._lacks_replaced_split() else own

    @property
    def from_hub(self) -> bool:
        """Rows come from the Hugging Face hub: no data directory, and no files of the task's own."""
        return self.folder is None and not self.task.files

    def file(self, split: str) -> Path:
        """The file of a split name (not a role): the task's own where it names one, else the mirror folder's."""
        if split in self.task.files:
            return Path(self.task.files[split])
        if self.folder is None:
            raise ValueError(f"task {self.task.name!r}: split {split!r} is read from the hub, not from a file")
        return self.folder / f"{split}.jsonl"

    def _lacks_replaced_split(self) -> bool:
        """A mirror lacks a split of the task's own that its carve-out replaces (the hub has every official split):
        then the carve-out is read."""
        if self.folder is None:
            return False
        specs = [self.task.splits[role] for role in self.task.fallback_splits if role in self.task.splits]
        return not all(self.file(name).is_file() for spec in specs for name in split_file(spec))

    @property
    def reads_fallback(self) -> bool:
        """The configuration read is not the task's own: its results are not comparable with the task's own."""
        return self.config != self.task.hub_config

    def role_files(self, role: str) -> list[Path]:
        """The files a role's split spec reads, one per split it joins (not from the hub)."""
        return [self.file(name) for name in split_file(self.splits[role])]

    @property
    def availability(self) -> str:
        """Whether a data directory serves the task's train and validation: "official splits", "carve-out" (its
        documented substitute), or "missing"."""
        if not all(path.is_file() for role in ("train", "validation") for path in self.role_files(role)):
            return "missing"
        return "official splits" if self.splits == dict(self.task.splits) else "carve-out"

    def identity(self, role: str) -> dict[str, Any]:
        """What identifies the rows of a role, for the tokenised cache's key: the contents of the files read (a
        fallback configuration's differ from the task's own), or the hub's id, configuration, revision and files."""
        task = self.task
        if self.from_hub:
            return {
                "hub": task.hub_id,
                "config": task.hub_config,
                "revision": task.revision,
                "data_files": dict(task.hub_data_files),
            }
        files = {name: self.file(name) for name in split_file(self.splits[role])}
        return {name: _digest(path) for name, path in files.items() if path.is_file()}

    def describe(self, role: str) -> str:
        """A role's split spec and where its rows are read, as a message names them."""
        spec, task = self.splits[role], self.task
        if self.from_hub:
            return f"{spec!r} of hub {task.hub_id} ({task.hub_config}) at {task.revision or 'main'}"
        return f"{spec!r} of " + " + ".join(str(path) for path in self.role_files(role))

    def missing(self, role: str, path: Path) -> TaskDataError:
        """The error for a split file that is not there, with the remedies."""
        absent = ""
        if self.data_dir is not None and not self.data_dir.is_dir():
            absent = f" (the data directory {self.data_dir} does not exist)"
        fallbacks = ", ".join(self.task.fallback_configs)
        if fallbacks and not self.reads_fallback:
            absent += f" (nor a folder of its fallback configurations {fallbacks} beside it)"
        return TaskDataError(
            f"task {self.task.name!r}: no data for its {role!r} split at {path}{absent}. Either point the data "
            "directory (data_dir=..., or $SPOT_DATA_DIR) at a mirror that has it, e.g. one written by `make data`, "
            "or read the task from the Hugging Face hub (data_dir unset, with internet access)."
        )


def fallback_configs_read(name: str, data_dir: str | Path | None) -> dict[str, str | None]:
    """Each task of `name` (a mixture: each member) that `data_dir` serves from a configuration other than its own
    -> the configuration read (WinoGrande L for XL). A run records it and a study cell's key includes it, since it
    changes the result; empty where every task reads its own (always, from the hub), so those keys stay as they
    were."""
    sources = [DataSource.of(task, data_dir) for task in members(name)]
    return {source.task.name: source.config for source in sources if source.reads_fallback}


def split_names(task: Task) -> list[str]:
    """Every data split name a task may read: its own splits' and its carve-outs'."""
    specs = [*task.splits.values(), *task.fallback_splits.values()]
    return list(dict.fromkeys(name for spec in specs for name in split_file(spec)))


def _folder(root: Path, task: Task, config: str | None) -> Path:
    return root / task.hub_id.replace("/", "__") / (config or "default")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
