"""Writing registered tasks' data into a mirror, so offline machines read it with `data_dir` (`make data`).

From the hub, each split the task may read is downloaded and written as JSON lines with the hub's fields. From
another mirror directory (such as `../shared/data`), files are linked (or copied), not rewritten. Either way the
files land where a `DataSource` of the output looks for them, and `MANIFEST.json` in the output lists every file
with its rows, sha256 and where it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from spot_core.run_dir import follow_umask, write_json
from spot_core.tasks.base import Task
from spot_core.tasks.loading import read_split
from spot_core.tasks.source import DataSource, split_names

MANIFEST = "MANIFEST.json"


@dataclass(frozen=True)
class ExportedFile:
    path: str  # relative to the output directory
    task: str
    hub_id: str
    config: str | None
    split: str
    rows: int
    sha256: str
    source: str
    completeness: str


def _digest_and_rows(path: Path) -> tuple[str, int]:
    h, rows = hashlib.sha256(), 0
    with path.open("rb") as f:
        for line in f:
            h.update(line)
            rows += bool(line.strip())
    return h.hexdigest(), rows


def _source_manifest(source_dir: Path) -> dict[str, dict]:
    manifest = source_dir / MANIFEST
    if not manifest.is_file():
        return {}
    return {f["path"]: f for f in json.loads(manifest.read_text()).get("files", [])}


def _place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    if link:
        tmp.symlink_to(src.resolve())
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _write_hub_split(hub: DataSource, name: str, dst: Path) -> None:
    rows = read_split(hub, name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    os.close(fd)
    try:
        rows.dataset().to_json(tmp, lines=True, force_ascii=False)
        follow_umask(tmp)  # mkstemp's file is owner-only
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)


def export_task(
    task: Task, out_dir: str | Path, source_dir: str | Path | None = None, link: bool = True
) -> tuple[list[ExportedFile], list[str]]:
    """Writes the splits of a task (one that reads no files of its own) under `out_dir` in the mirror layout, from
    the hub (`source_dir` None) or from another mirror. Returns the files written and the split names the source
    lacks."""
    out_dir = Path(out_dir)
    written, missing = [], []
    source = DataSource.of(task, source_dir)
    target = DataSource.at(task, out_dir, source.config)  # the configuration served (WinoGrande L) keeps its folder
    known = _source_manifest(Path(source_dir)) if source_dir else {}
    for name in split_names(task):
        dst = target.file(name)
        rel = dst.relative_to(out_dir).as_posix()
        if source.from_hub:
            _write_hub_split(source, name, dst)
            origin, completeness = f"hub {task.hub_id}@{task.revision or 'main'}", "full"
        else:
            src = source.file(name)
            if not src.is_file():
                missing.append(name)
                continue
            if src.resolve() != dst.resolve():
                _place(src, dst, link)
            origin, completeness = str(Path(source_dir).resolve()), known.get(rel, {}).get("completeness", "unknown")
        sha, rows = _digest_and_rows(dst)
        written.append(ExportedFile(rel, task.name, task.hub_id, source.config, name, rows, sha, origin, completeness))
    return written, missing


def update_manifest(out_dir: str | Path, files: Iterable[ExportedFile]) -> Path:
    """Merges the exported files into `<out_dir>/MANIFEST.json` (written atomically)."""
    path = Path(out_dir) / MANIFEST
    entries = _source_manifest(Path(out_dir))
    for f in files:
        entries[f.path] = {**entries.get(f.path, {}), **f.__dict__}
    return write_json(path, {"files": sorted(entries.values(), key=lambda e: e["path"])})
