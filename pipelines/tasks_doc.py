"""Writes docs/tasks.md, the task coverage table: `make docs` or `python -m pipelines.tasks_doc out_dir=...`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipelines.errors import MissingFileError, entry_point
from pipelines.paths import check_writable, resolve_data_dir
from spot_core.errors import ConfigError
from spot_core.tasks.coverage import coverage_markdown


def run(cfg: DictConfig) -> dict[str, Any]:
    data_dir = resolve_data_dir(cfg.data_dir)
    if data_dir is None:
        raise ConfigError("no offline mirror found: set data_dir=... (the table describes a mirror's contents)")
    if not Path(data_dir).is_dir():
        raise MissingFileError(f"data_dir={cfg.data_dir}: no such directory (the mirror the table describes)")
    out = Path(cfg.out_dir) / "tasks.md"
    if cfg.get("out"):
        logging.getLogger("spot").warning("out is deprecated and will be removed in the next release: use out_dir")
        out = Path(cfg.out)
    check_writable(out.parent, "out" if cfg.get("out") else "out_dir")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(coverage_markdown(data_dir))
    return {"out": str(out), "data_dir": data_dir}


@entry_point("tasks_doc")
def main(cfg: DictConfig) -> None:
    print("wrote {out} from {data_dir}".format(**run(cfg)))


if __name__ == "__main__":
    main()
