"""A library entry: one source prompt's files and what the index says of it (`Entry`), how it is checked when read,
and a finished run to add (`SourceRun`). The folder format is described in spot_core.library."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from spot_core.config import parse_choice
from spot_core.errors import SpotError
from spot_core.neurons import load_neurons
from spot_core.prompt_files import load_prompt
from spot_core.run_dir import RunDir
from spot_core.similarity import TaskEmbedding

PROMPT_FILES = (RunDir.BEST_PROMPT, RunDir.TASK_EMBEDDING, RunDir.INITIAL_PROMPT)  # every entry's; its id hashes them
FILES = (*PROMPT_FILES, RunDir.NEURONS)
ID_LENGTH = 16
NOT_FIELDS = ("id", "files", "root")  # what Entry.fields() leaves out
Definition = Callable[[str], dict[str, Any] | None]  # a task name -> its user-written definition, or None


class LibraryError(SpotError, ValueError):
    """A library is missing, malformed or changed; the message names the file and the field."""


class Change(StrEnum):
    """What adding a run or an entry did to a library."""

    ADDED = "added"
    KEPT = "kept"  # already there with the same files: nothing written
    COMPLETED = "completed"  # already there; it gained files it lacked (a neuron mask recorded since)


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_id(hashes: Mapping[str, str]) -> str:
    """An entry's id from its prompt files' sha256s (name -> hex digest; other files are left out)."""
    text = "".join(f"{name} {hashes[name]}\n" for name in PROMPT_FILES)
    return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


def no_definition(task: str) -> dict[str, Any] | None:
    """The default `definition`: a built-in task, defined by its name and version."""
    return None


def spot_version() -> str:
    try:
        return importlib.metadata.version("spot")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class FileRef:
    path: str  # relative to the library, with "/"
    sha256: str


@dataclass(frozen=True)
class Entry:
    """One source prompt of a library, its files under `root` (the library folder)."""

    id: str
    task: str  # the versioned task name (rte_v1) or a mixture's
    model: str
    prompt_length: int
    hidden: int
    steps: int  # trained steps
    embedding_step: int  # the step of the task-embedding checkpoint
    score: float  # best/val_score
    metrics: dict[str, float]  # the validation metrics at the best step (val/accuracy, ...)
    seed: int
    init: str  # how the prompt started (prompt.init)
    task_embedding: str  # the kind the study retrieved with: a TaskEmbedding value
    provenance: dict[str, Any]  # study, cell key, run id, tracking URI, stage, trainer, data, exported_at, ...
    files: dict[str, FileRef]
    task_definition: dict[str, Any] | None  # a user-written task's definition; None for a built-in task
    root: Path = field(compare=False, repr=False)

    def path(self, name: str) -> Path:
        if name not in self.files:
            raise LibraryError(f"library entry {self.id} ({self.task}) has no {name}; it holds {', '.join(self.files)}")
        return self.root / self.files[name].path

    @property
    def best_prompt_path(self) -> Path:
        return self.path(RunDir.BEST_PROMPT)

    def best_prompt(self) -> torch.Tensor:
        """The source prompt [L, H] float32."""
        return load_prompt(self.best_prompt_path)[0]

    def initial_prompt(self) -> torch.Tensor:
        """The prompt before training [L, H] float32."""
        return load_prompt(self.path(RunDir.INITIAL_PROMPT))[0]

    def checkpoint(self) -> torch.Tensor:
        """The prompt after `embedding_step` steps [L, H] float32."""
        return load_prompt(self.path(RunDir.TASK_EMBEDDING))[0]

    def embedding(self, kind: TaskEmbedding | str | None = None) -> np.ndarray:
        """The task embedding [L, H] (numpy float32): the checkpoint, or its displacement from the initial prompt;
        `kind` None: the kind the study used."""
        kind = parse_choice(TaskEmbedding, self.task_embedding if kind is None else kind, "kind")
        if kind is TaskEmbedding.DISPLACEMENT:
            self.path(RunDir.INITIAL_PROMPT)  # a LibraryError naming the file the entry lacks
        return RunDir(self.path(RunDir.TASK_EMBEDDING).parent).embedding(kind)  # its files keep their run names

    def neurons(self) -> np.ndarray | None:
        """The activated-neuron mask (bool [layers, L, I]) of the task-embedding prompt, or None if not recorded."""
        return load_neurons(self.path(RunDir.NEURONS)).numpy() if RunDir.NEURONS in self.files else None

    def fields(self) -> dict[str, Any]:
        """What the index says of the entry besides its id and files."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in NOT_FIELDS}

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "root"}
        return out | {"files": {name: asdict(ref) for name, ref in self.files.items()}}

    @classmethod
    def from_json(cls, data: Any, root: Path, where: str) -> Entry:
        """An entry of index.json, checked field by field (`where`: "<index>: entries[i]", for the messages)."""
        if not isinstance(data, dict):
            raise LibraryError(f"{where}: expected an object, got {type(data).__name__}")
        values = {name: _field(data, name, kinds, where) for name, kinds in ENTRY_KINDS.items()}
        parse_choice(TaskEmbedding, values["task_embedding"], f"{where}.task_embedding")
        files = {name: _file_ref(name, ref, f"{where}.files.{name}") for name, ref in values["files"].items()}
        missing = [name for name in PROMPT_FILES if name not in files]
        if missing:
            raise LibraryError(f"{where}.files: no {', '.join(missing)} (every entry holds {', '.join(PROMPT_FILES)})")
        expected = entry_id({name: ref.sha256 for name, ref in files.items()})
        if values["id"] != expected:
            raise LibraryError(f"{where}.id is {values['id']!r}, but its prompt files' sha256s give {expected!r}")
        return cls(**{**values, "files": files}, root=root)


KIND_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object", type(None): "null"}


def _kinds(hint: Any) -> tuple[type, ...]:
    """The types an annotation of Entry names (`dict[str, Any] | None`: dict, NoneType)."""
    parts = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return tuple(typing.get_origin(part) or part for part in parts)


ENTRY_KINDS = {name: _kinds(hint) for name, hint in typing.get_type_hints(Entry).items() if name != "root"}


def _field(data: dict, name: str, kinds: tuple[type, ...], where: str) -> Any:
    """An index field, checked against the type of Entry's field (a float may be written as an integer)."""
    if name not in data:
        raise LibraryError(f"{where}.{name} is missing")
    value = data[name]
    if not isinstance(value, kinds + ((int,) if float in kinds else ())) or isinstance(value, bool):
        wanted = " or ".join(KIND_NAMES[kind] for kind in kinds)
        raise LibraryError(f"{where}.{name} must be {wanted}, got {json.dumps(value)[:60]}")
    return value


def _file_ref(name: str, ref: Any, where: str) -> FileRef:
    if name not in FILES:
        raise LibraryError(f"{where}: unknown file (an entry holds {', '.join(FILES)})")
    if not isinstance(ref, dict) or not isinstance(ref.get("path"), str) or not isinstance(ref.get("sha256"), str):
        raise LibraryError(f"{where} must be an object with a string path and sha256, got {json.dumps(ref)[:80]}")
    path = PurePosixPath(ref["path"])
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise LibraryError(f"{where}.path {ref['path']!r} must be a path inside the library, relative to it")
    if len(ref["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in ref["sha256"]):
        raise LibraryError(f"{where}.sha256 must be 64 lower-case hex digits, got {ref['sha256'][:80]!r}")
    return FileRef(ref["path"], ref["sha256"])


@dataclass(frozen=True)
class SourceRun:
    """A finished prompt-tuning run to add to a library: its prompt files (a run folder's, or its files fetched from
    a tracking store; name -> path, RunDir's names) and what the index says of it."""

    files: Mapping[str, Path]
    task: str
    model: str
    seed: int
    init: str
    steps: int
    embedding_step: int
    score: float
    metrics: Mapping[str, float]
    task_embedding: TaskEmbedding | str = TaskEmbedding.PROMPT
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "task_embedding", parse_choice(TaskEmbedding, self.task_embedding, "task_embedding"))
        unknown = [name for name in self.files if name not in FILES]
        if unknown:
            raise LibraryError(f"run of {self.task}: unknown files {unknown} (an entry holds {', '.join(FILES)})")
        for name in dict.fromkeys([*PROMPT_FILES, *self.files]):
            path = self.files.get(name)
            if path is None or not Path(path).is_file():
                hint = " (a run saves it only with trainer.embedding_step set)" if name == RunDir.TASK_EMBEDDING else ""
                raise LibraryError(f"run of {self.task}: {path or name} does not exist{hint}")

    @classmethod
    def from_run_dir(
        cls,
        path: str | Path,
        *,
        task_embedding: TaskEmbedding | str = TaskEmbedding.PROMPT,
        provenance: Mapping[str, Any] | None = None,
        neurons: str | Path | None = None,
    ) -> SourceRun:
        """A finished run folder (RunDir), described by its prompt files' metadata, result.json and metrics.json;
        `neurons`: the mask a neurons run recorded of its task-embedding prompt."""
        run = RunDir(path)
        if not run.finished():
            raise LibraryError(f"{run.result_file} does not exist: the run in {run.path} has not finished")
        for file in (run.best_prompt, run.task_embedding):
            if not file.is_file():
                raise LibraryError(f"{file} does not exist: {run.path} is not a tuning run with a task embedding")
        result, meta = run.result(), load_prompt(run.best_prompt)[1]
        history = json.loads(run.metrics.read_text()) if run.metrics.is_file() else []
        best = [r for r in history if r.get("step") == result["best/step"]]
        files = {name: run.path / name for name in PROMPT_FILES} | ({RunDir.NEURONS: Path(neurons)} if neurons else {})
        return cls(
            files=files,
            task=meta["task"],
            model=meta["model"],
            seed=int(meta["seed"]),
            init=str(meta.get("prompt.init", "")),
            steps=int(result["final/step"]),
            embedding_step=int(load_prompt(run.task_embedding)[1]["step"]),
            score=float(result["best/val_score"]),
            metrics={k: v for k, v in (best[-1] if best else {}).items() if k.startswith("val/")},
            task_embedding=task_embedding,
            provenance={"run_dir": str(run.path.resolve()), **(provenance or {})},
        )
