"""Where things are: the repository, the data directory a run reads, and the folders it may write."""

from __future__ import annotations

import os
from pathlib import Path

from spot_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"  # the mirror beside the repository, that `make data` links


def resolve_data_dir(value: str | None) -> str | None:
    """The data directory a run reads (the root that `spot_core.tasks.source.DataSource` resolves a task's files
    in): the configured dir, else $SPOT_DATA_DIR, else `data/` in the repository (written by `make data`), else
    ../shared/data beside the repository, else None (the hub).

    Raises:
        ConfigError: the configured dir is a file (a dir that does not exist is the data checks' to report).
    """
    for candidate in (value, os.environ.get("SPOT_DATA_DIR"), REPO / "data", SHARED_DATA):
        if candidate:
            path = Path(candidate).expanduser().resolve()
            if candidate == value and path.is_file():
                raise ConfigError(
                    f"data_dir: {path} is a file, not a folder: set data_dir to the folder of an offline mirror "
                    "(make data writes one), or leave it unset (data_dir=null)"
                )
            if path.is_dir() or candidate == value:
                return str(path)
    return None


def check_writable(folder: str | Path, setting: str) -> Path:
    """The absolute path of a folder a run will write (`setting`: the config key that names it); a ConfigError
    unless it can be created and written. Checks its nearest existing folder and creates nothing."""
    path = Path(folder).expanduser().resolve()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{setting}: cannot create {path}, {existing} is a file: choose another {setting}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{setting}: cannot create {path}, {existing} is not writable (permission denied): choose another "
            f"{setting}, or make that folder writable"
        )
    return path
