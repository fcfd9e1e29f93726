"""Prepares a data directory in the mirror layout, from the Hugging Face hub or from a local mirror.

make data                                      # ../shared/data if present beside the repo, else the hub
python -m pipelines.mirror source=hub tasks=[boolq_v1,cb_v1] out_dir=/nfs/spot-data
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipelines.errors import MissingFileError, entry_point
from pipelines.paths import SHARED_DATA, check_writable
from pipelines.user_tasks import resolve
from spot_core.tasks import TaskDataError, check_data, get_task, task_names
from spot_core.tasks.mirror import export_task, update_manifest
from spot_core.tasks.source import DataSource

TASK_DIRS = [Path("tasks")]  # where `tasks=[my_reviews]` finds tasks/my_reviews.yaml (the default of tasks.dirs)


def resolve_source(value: str) -> Path | None:
    """`auto`: ../shared/data beside the repository if it exists, else the hub (None); `hub`; or a directory."""
    if value == "hub":
        return None
    if value == "auto":
        return SHARED_DATA if SHARED_DATA.is_dir() else None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise MissingFileError(f"source={value}: no such directory: use `auto`, `hub` or a mirror directory")
    return path


def run(cfg: DictConfig) -> dict[str, Any]:
    source = resolve_source(str(cfg.source))
    # unknown names fail here; a task file (tasks/<name>.yaml, or its path) is read and checked here, its
    # `{data_dir}` the mirror the files come from (else the one being written)
    data_dir = str(source or cfg.out_dir)
    named = [] if cfg.tasks == "all" else [resolve(str(n), TASK_DIRS, data_dir) for n in cfg.tasks]
    names = task_names() if cfg.tasks == "all" else [get_task(n).name for n in named]
    out_dir = check_writable(cfg.out_dir, "out_dir")
    print(f"preparing {len(names)} tasks in {out_dir} from {source or 'the Hugging Face hub'}", flush=True)
    written, unavailable, failed = [], [], {}
    for name in names:
        task = get_task(name)
        if task.files:  # a task file's task reads its own data files: checked, nothing to export
            check_data(name, out_dir)
            print(f"  {name:<18} {'its own files':<16} {', '.join(task.files.values())}", flush=True)
            continue
        try:
            files, _ = export_task(task, out_dir, source, link=cfg.link)
        except TaskDataError as e:
            failed[name] = str(e)
            print(f"  {name}: FAILED: {e}", flush=True)
            continue
        written += files
        status = DataSource.of(task, out_dir).availability
        if status == "missing":
            unavailable.append(name)
        shown = ", ".join(f"{f.split} {f.rows:,}" for f in files) or "no files"
        print(f"  {name:<18} {status:<16} {shown}", flush=True)
    manifest = update_manifest(out_dir, written)
    from_hub = [n for n in unavailable if get_task(n).on_hub]
    if from_hub:
        print(
            f"{len(from_hub)} tasks cannot run from {out_dir} yet; on a machine with internet run\n"
            f"  python -m pipelines.mirror source=hub out_dir={out_dir} tasks=[{','.join(from_hub)}]"
        )
    return {
        "out_dir": str(out_dir),
        "manifest": str(manifest),
        "files": len(written),
        "unavailable": unavailable,
        "failed": failed,
    }


@entry_point("mirror")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print(f"{result['files']} files listed in {result['manifest']}")
    if result["failed"]:
        sys.exit(f"{len(result['failed'])} tasks failed: {', '.join(result['failed'])}")


if __name__ == "__main__":
    main()
