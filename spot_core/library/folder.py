"""A prompt library folder (`Library`): open and verify it, add runs to it, `write` and `merge` libraries."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from spot_core.library.entry import (
    PROMPT_FILES,
    Change,
    Definition,
    Entry,
    FileRef,
    LibraryError,
    SourceRun,
    entry_id,
    no_definition,
    sha256,
    spot_version,
)
from spot_core.prompt_files import load_prompt
from spot_core.run_dir import RunDir, follow_umask, write_atomic, write_json

FORMAT = "spot-prompt-library"  # index.json's `format`
VERSION = 1  # and `version`: a newer one is refused with a hint


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
                raise LibraryError(
                    f"no prompt library at {root}: the folder does not exist: check the path, or export a study's "
                    f"source prompts there first (make library ARGS='study=NAME library={root}')"
                )
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


# what to do about a damaged index.json
RESTORE = (
    "restore it from a copy, or export the library again into a new folder (make library ARGS='study=NAME library=NEW')"
)


def _read_index(index: Path) -> dict[str, Any]:
    try:
        data = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LibraryError(f"{index}: not valid JSON ({e}): {RESTORE}") from None
    if not isinstance(data, dict):
        raise LibraryError(
            f"{index}: expected a JSON object with format {FORMAT!r}, got {type(data).__name__}: {RESTORE}"
        )
    if data.get("format") != FORMAT:
        raise LibraryError(f"{index}: format is {data.get('format')!r}, expected {FORMAT!r}: not a prompt library")
    version = data.get("version")
    if version != VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > VERSION
        hint = ": a newer spot wrote it, upgrade spot" if newer else ""
        raise LibraryError(f"{index}: version is {version!r}; this spot reads version {VERSION}{hint}")
    if not isinstance(data.get("entries"), list):
        raise LibraryError(f"{index}: entries must be a list, got {json.dumps(data.get('entries'))[:60]}: {RESTORE}")
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
