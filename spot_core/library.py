"""A portable prompt library: the source prompts of a study (or of any finished runs) in one folder that another
machine opens with no tracking store.

    <library>/index.json                                what the entries are, with every file's sha256
    <library>/prompts/<id>/best_prompt.safetensors      the source prompt (SPoT: the best checkpoint)
                          /task_embedding.safetensors   the prompt after `embedding_step` steps
                          /initial_prompt.safetensors   the prompt before training (for displacement embeddings)
                          /neurons.safetensors          its activated-neuron mask, when the study recorded one

index.json is `{"format": "spot-prompt-library", "version": 1, "entries": [...]}`, an entry's fields those of
`Entry` (`Entry.to_json`). An entry's id is the first 16 hex digits of the sha256 over its three prompt files'
sha256s: the same prompts always get the same id, so a re-export or a merge keeps one copy of each. A neuron mask
is not in the id: it may be recorded after a first export, and the entry then gains it under the same id.

Every write is atomic and follows the umask; index.json is written last. An export killed midway leaves the
library it started from, plus an entry folder index.json does not list (`verify` names it; the next export of
that run replaces it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from spot_core.analysis.similarity import TaskEmbedding, task_embedding
from spot_core.config import parse_choice
from spot_core.errors import SpotError
from spot_core.neurons import load_neurons
from spot_core.prompt_files import load_prompt
from spot_core.run_dir import RunDir, follow_umask, write_atomic, write_json

FORMAT = "spot-prompt-library"
VERSION = 1
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
        initial = self.initial_prompt().numpy() if kind is TaskEmbedding.DISPLACEMENT else None
        return task_embedding(self.checkpoint().numpy(), initial, kind)

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


class Library:
    """A prompt library folder: its entries (`entries`, in the index's order: model, task, seed, id)."""

    INDEX = "index.json"
    PROMPTS = "prompts"  # an entry's files: prompts/<id>/<RunDir name>

    def __init__(self, root: str | Path, entries: Sequence[Entry] = ()):
        self.root = Path(root)
        self.entries = list(entries)

    def __repr__(self) -> str:
        return f"Library({str(self.root)!r}, {len(self.entries)} entries)"

    @property
    def index(self) -> Path:
        return self.root / self.INDEX

    def entry(self, id: str) -> Entry:
        found = [e for e in self.entries if e.id == id]
        if not found:
            raise LibraryError(f"no entry {id!r} in the library {self.root}")
        return found[0]

    @classmethod
    def open(cls, path: str | Path, verify: bool = True, create: bool = False) -> Library:
        """The library at `path`, its files checked against their sha256s (`verify`). `create`: a folder that does
        not exist yet, or is empty, is a new empty library (written by the first `add`).

        Raises:
            LibraryError: no library there, a malformed index.json (naming the field), or (`verify`) a missing,
                changed or unlisted file.
        """
        root = Path(path)
        index = root / cls.INDEX
        if not index.is_file():
            if create and (not root.exists() or (root.is_dir() and not any(root.iterdir()))):
                return cls(root)
            if not root.exists():
                raise LibraryError(f"no prompt library at {root}: the folder does not exist")
            what = f"holds files but no {cls.INDEX}" if root.is_dir() else "is a file"
            raise LibraryError(f"{root} {what}: not a prompt library (a new library needs a new or empty folder)")
        data = _read_index(index)
        library = cls(root, [Entry.from_json(e, root, f"{index}: entries[{i}]") for i, e in enumerate(data["entries"])])
        ids = [e.id for e in library.entries]
        if len(set(ids)) != len(ids):
            twice = next(i for i in ids if ids.count(i) > 1)
            raise LibraryError(f"{index}: entries: the id {twice!r} is listed twice")
        if verify:
            library.verify()
        return library

    def verify(self) -> int:
        """Recomputes every file's sha256; returns how many files were checked.

        Raises:
            LibraryError: a file index.json lists is missing or changed, or a file it does not list is there.
        """
        problems, listed = [], {self.index}
        for i, entry in enumerate(self.entries):
            for name, ref in entry.files.items():
                path, field_name = self.root / ref.path, f"entries[{i}].files.{name}"
                listed.add(path)
                if not path.is_file():
                    problems.append(f"{path} is missing ({self.INDEX}: {field_name})")
                elif sha256(path) != ref.sha256:
                    problems.append(f"{path} has changed: its sha256 is not {self.INDEX}'s {field_name}.sha256")
        found = sorted(p for p in self.root.rglob("*") if p.is_file()) if self.root.is_dir() else []
        problems += [f"{p} is not listed in {self.INDEX}" for p in found if p not in listed]
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise LibraryError(
                f"library {self.root} fails verification: {problems[0]}{more}: restore the file, or export again"
            )
        return sum(len(e.files) for e in self.entries)

    def add(self, runs: Iterable[SourceRun], definition: Definition = no_definition) -> list[tuple[Entry, Change]]:
        """Adds finished runs (their prompts checked first, all of them, before anything is written); a run already
        in the library is kept as it is, or gains the files it lacked. `definition(task)`: the task's definition
        for a user-written task, else None. Returns each run's entry and what happened to it."""
        exported_at = datetime.now(UTC).isoformat(timespec="seconds")
        items = [(self._fields(run, definition, exported_at), dict(run.files)) for run in runs]
        return self._commit([self._put(entry_fields, files) for entry_fields, files in items])

    @staticmethod
    def _fields(run: SourceRun, definition: Definition, exported_at: str) -> dict[str, Any]:
        shapes = {name: tuple(load_prompt(run.files[name])[0].shape) for name in PROMPT_FILES}
        if len(set(shapes.values())) != 1:
            raise LibraryError(f"run of {run.task}: its prompt files differ in shape: {shapes}")
        length, hidden = shapes[RunDir.BEST_PROMPT]
        provenance = {**run.provenance, "exported_at": exported_at, "spot_version": spot_version()}
        return {
            "task": run.task,
            "model": run.model,
            "prompt_length": length,
            "hidden": hidden,
            "steps": run.steps,
            "embedding_step": run.embedding_step,
            "score": run.score,
            "metrics": dict(run.metrics),
            "seed": run.seed,
            "init": run.init,
            "task_embedding": run.task_embedding.value,
            "provenance": provenance,
            "task_definition": definition(run.task),
        }

    def _put(self, entry_fields: dict[str, Any], sources: dict[str, Path]) -> tuple[Entry, Change]:
        """One entry's files into the library (the index is written by `_commit`)."""
        hashes = {name: sha256(path) for name, path in sources.items()}
        id = entry_id(hashes)
        at = next((i for i, e in enumerate(self.entries) if e.id == id), None)
        if at is not None:
            entry = self.entries[at]
            new = [name for name in sources if name not in entry.files]
            if not new:
                return entry, Change.KEPT
            folder = self.root / PurePosixPath(entry.files[RunDir.BEST_PROMPT].path).parent
            for name in new:
                write_atomic(folder / name, lambda tmp, name=name: shutil.copyfile(sources[name], tmp))
            refs = entry.files | {name: FileRef(self._relative(folder / name), hashes[name]) for name in new}
            self.entries[at] = replace(entry, files=refs)
            return self.entries[at], Change.COMPLETED
        folder = self.root / self.PROMPTS / id
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{id}.", dir=folder.parent))
        try:
            for name, path in sources.items():
                shutil.copyfile(path, staging / name)
            follow_umask(staging)
            if folder.exists():  # an export killed before it wrote the index left this copy
                shutil.rmtree(folder)
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        refs = {name: FileRef(self._relative(folder / name), hashes[name]) for name in sources}
        self.entries.append(Entry(id=id, files=refs, root=self.root, **entry_fields))
        return self.entries[-1], Change.ADDED

    def _commit(self, changes: list[tuple[Entry, Change]]) -> list[tuple[Entry, Change]]:
        """Writes index.json, last and atomically, when anything changed."""
        if any(change is not Change.KEPT for _, change in changes):
            self.entries.sort(key=lambda e: (e.model, e.task, e.seed, e.id))
            entries = [e.to_json() for e in self.entries]
            write_json(self.index, {"format": FORMAT, "version": VERSION, "entries": entries})
        return changes

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _read_index(index: Path) -> dict[str, Any]:
    try:
        data = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LibraryError(f"{index}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise LibraryError(f"{index}: expected a JSON object with format {FORMAT!r}, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise LibraryError(f"{index}: format is {data.get('format')!r}, expected {FORMAT!r}: not a prompt library")
    version = data.get("version")
    if version != VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > VERSION
        hint = ": a newer spot wrote it, upgrade spot" if newer else ""
        raise LibraryError(f"{index}: version is {version!r}; this spot reads version {VERSION}{hint}")
    if not isinstance(data.get("entries"), list):
        raise LibraryError(f"{index}: entries must be a list, got {json.dumps(data.get('entries'))[:60]}")
    return data


def write(
    path: str | Path, runs: Iterable[SourceRun], definition: Definition = no_definition
) -> tuple[Library, list[tuple[Entry, Change]]]:
    """Adds runs to the library at `path` (created if new; an existing one is verified first)."""
    library = Library.open(path, create=True)
    return library, library.add(runs, definition)


def merge(libraries: Sequence[str | Path], out: str | Path) -> tuple[Library, list[tuple[Entry, Change]]]:
    """The union of libraries (each verified first) by id, into `out` (a new folder, or a library it adds to): an id
    in several is the same prompts, kept once (with the neuron mask of any of them). Entries of different models
    may share a library; retrieval filters by model. The result is verified."""
    if not libraries:
        raise LibraryError("merge needs at least one library")
    sources = [Library.open(path) for path in libraries]
    target = Library.open(out, create=True)
    items = [(e.fields(), {name: e.path(name) for name in e.files}) for lib in sources for e in lib.entries]
    changes = target._commit([target._put(entry_fields, files) for entry_fields, files in items])
    target.verify()
    return target, changes
