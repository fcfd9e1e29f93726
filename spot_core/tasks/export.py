"""Writing registered tasks' data into the mirror layout, so offline machines read it with `data_dir`.

From the hub, each split the task reads is downloaded and written as JSON lines with the hub's fields. From
another mirror directory (such as `../shared/data`), files are linked (or copied), not rewritten. Either way
`MANIFEST.json` in the output lists every file with its rows, sha256 and where it came from.
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
from spot_core.tasks.base import Task, split_file
from spot_core.tasks.loading import data_config, load_rows

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


def split_names(task: Task) -> list[str]:
    """Every data split a task may read: its own splits and its carve-outs'."""
    specs = [*task.splits.values(), *task.fallback_splits.values()]
    return list(dict.fromkeys(name for spec in specs for name in split_file(spec)))


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


def _write_hub_split(task: Task, name: str, dst: Path) -> None:
    rows = load_rows(task, "export", None, {"export": name})
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
    """Writes a task's splits under `out_dir` in the mirror layout, from the hub (`source_dir` None) or from
    another mirror. Returns the files written and the split names the source lacks."""
    out_dir = Path(out_dir)
    written, missing = [], []
    known = _source_manifest(Path(source_dir)) if source_dir else {}
    config = task.hub_config if source_dir is None else data_config(task, source_dir)
    for name in split_names(task):
        # the configuration the source serves (WinoGrande L where a mirror lacks XL) keeps its own folder
        dst = task.mirror_dir(out_dir, own=True).parent / (config or "default") / f"{name}.jsonl"
        rel = dst.relative_to(out_dir).as_posix()
        if source_dir is None:
            _write_hub_split(task, name, dst)
            source, completeness = f"hub {task.hub_id}@{task.revision or 'main'}", "full"
        else:
            src = task.mirror_path(source_dir, name)
            if not src.is_file():
                missing.append(name)
                continue
            if src.resolve() != dst.resolve():
                _place(src, dst, link)
            source, completeness = str(Path(source_dir).resolve()), known.get(rel, {}).get("completeness", "unknown")
        sha, rows = _digest_and_rows(dst)
        written.append(
            ExportedFile(rel, task.name, task.hub_id, config, name, rows, sha, source, completeness)
        )
    return written, missing


def update_manifest(out_dir: str | Path, files: Iterable[ExportedFile]) -> Path:
    """Merges the exported files into `<out_dir>/MANIFEST.json` (written atomically)."""
    path = Path(out_dir) / MANIFEST
    entries = _source_manifest(Path(out_dir))
    for f in files:
        entries[f.path] = {**entries.get(f.path, {}), **f.__dict__}
    return write_json(path, {"files": sorted(entries.values(), key=lambda e: e["path"])})
