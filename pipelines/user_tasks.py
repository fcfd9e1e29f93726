"""Tasks and stages beyond the built-in ones, as the entry points find them, and how they reach Ray workers.

- A YAML task file (spot_core.tasks.definitions): `task=my_reviews` reads `tasks/my_reviews.yaml` (the folders of
  `tasks.dirs`, relative to where you run), `task=path/to/file.yaml` any file.
- Python modules that register tasks (`tasks.modules=[my_pkg.tasks]`), for formats a template cannot express:
  imported here and in every Ray worker before its cells run (the module must be installed on every node).

- Python modules that add a stage to a study (`stage_modules=[my_pkg.my_stage]`), each defining `STAGE =
  StageDef(...)` (docs/stages.md): imported and registered in the stage catalogue here and in every Ray worker.

A study's cells carry the checked definitions of its file tasks and the module names (`carried`), and a worker
registers them (`receive`) before running a cell: a worker on another node never reads the YAML file.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig

from spot_core.errors import ConfigError
from spot_core.stages.base import StageDef
from spot_core.stages.catalogue import register
from spot_core.tasks import UnknownNameError, get
from spot_core.tasks.definitions import definition, definitions, load_task_file, register_definitions

SUFFIXES = (".yaml", ".yml")
_MODULES: list[str] = []  # the task modules imported in this process, in order
_STAGE_MODULES: list[str] = []  # the stage modules imported (and their stages registered) in this process


def use_tasks(cfg: DictConfig, names: Sequence[str], data_dir: str | None) -> list[str]:
    """The registry names of `names` (task or mixture names, `a+b` ad-hoc mixtures, task files), after importing
    `tasks.modules` and reading the task files they name; built-in names are returned as given.

    Raises:
        ConfigError: a module that does not import; a malformed task file (naming the file and the key).
        UnknownNameError: a name that is neither registered nor a task file in `tasks.dirs`.
    """
    settings = cfg.get("tasks") or {}
    import_modules(list(settings.get("modules") or []))
    dirs = [Path(d) for d in settings.get("dirs") or []]
    return [resolve(str(name), dirs, data_dir) for name in names]


def import_modules(modules: Sequence[str], setting: str = "tasks.modules") -> list[ModuleType]:
    """Imports the modules not imported yet; returns them.

    Raises:
        ConfigError: one does not import (the message names `setting`).
    """
    done, imported = _MODULES if setting == "tasks.modules" else _STAGE_MODULES, []
    for module in modules:
        if module in done:
            continue
        try:
            imported.append(importlib.import_module(module))
        except Exception as e:  # noqa: BLE001 - the user's module: whatever it raises is theirs to fix
            raise ConfigError(
                f"{setting}: cannot import {module!r} ({type(e).__name__}: {e}); install it (pip install -e "
                "...) or put it on PYTHONPATH, on every node of the Ray cluster too"
            ) from None
        done.append(module)
    return imported


def use_stages(cfg: DictConfig) -> None:
    """Imports `stage_modules` and adds each one's `STAGE` to the stage catalogue.

    Raises:
        ConfigError: a module that does not import, defines no `STAGE` StageDef, or clashes with a stage.
    """
    import_stages(list(cfg.get("stage_modules") or []))


def import_stages(modules: Sequence[str]) -> None:
    for module in import_modules(modules, "stage_modules"):
        stage = getattr(module, "STAGE", None)
        if not isinstance(stage, StageDef):
            _STAGE_MODULES.remove(module.__name__)
            raise ConfigError(
                f"stage_modules: {module.__name__!r} defines no STAGE = StageDef(...) (see docs/stages.md)"
            )
        register(stage)


def resolve(name: str, dirs: Sequence[Path], data_dir: str | None) -> str:
    """One name: a task file's path, a registered name, or a file `<dir>/<name>.yaml` in `dirs`."""
    if "+" in name:
        return "+".join(resolve(part.strip(), dirs, data_dir) for part in name.split("+"))
    if name.endswith(SUFFIXES):
        if not Path(name).is_file():
            raise ConfigError(f"task file {name}: no such file")
        return load_task_file(name, data_dir).name
    try:
        get(name)
        return name
    except UnknownNameError as unknown:
        stems = dict.fromkeys([name, name.rsplit("_v", 1)[0]])  # my_reviews_v1 is found in my_reviews.yaml too
        for path in (Path(folder) / f"{stem}{suffix}" for folder in dirs for stem in stems for suffix in SUFFIXES):
            if path.is_file():
                found = load_task_file(path, data_dir).name
                if name in (found, found.rsplit("_v", 1)[0]):
                    return found
        where = ", ".join(f"{d}/{name}.yaml" for d in dirs) or "no tasks.dirs set"
        raise UnknownNameError(f"{unknown} Nor is there a task file ({where}).") from None


def carried() -> dict[str, Any]:
    """What a cell carries to its worker: the file tasks' checked definitions, the task and stage modules."""
    return {"definitions": definitions(), "modules": list(_MODULES), "stage_modules": list(_STAGE_MODULES)}


def receive(carried_tasks: dict[str, Any] | None) -> None:
    """In a worker: imports the task and stage modules and registers the file tasks a cell carries."""
    if carried_tasks:
        import_modules(carried_tasks.get("modules", []))
        import_stages(carried_tasks.get("stage_modules", []))
        register_definitions(carried_tasks.get("definitions", {}))


def definition_finder(cfg: DictConfig, data_dir: str | None):
    """task name -> its task file's checked definition (None: a built-in or plugin task), for the prompt library's
    entries; a task file is looked for in `tasks.dirs` as `task=` does."""

    def find(name: str) -> dict[str, Any] | None:
        try:
            return definition(use_tasks(cfg, [name], data_dir)[0])
        except UnknownNameError:  # a task of a module not imported here: its runs carry no definition
            return None

    return find
