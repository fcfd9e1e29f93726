"""Where things are: the repository, and the data directory a run reads."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def resolve_data_dir(value: str | None) -> str | None:
    """Configured dir, else $SPOT_DATA_DIR, else `data/` in the repository (written by `make data`), else
    ../shared/data beside the repository, else None (the hub)."""
    for candidate in (value, os.environ.get("SPOT_DATA_DIR"), REPO / "data", REPO.parent / "shared" / "data"):
        if candidate:
            path = Path(candidate).expanduser().resolve()
            if path.is_dir() or candidate == value:
                return str(path)
    return None
