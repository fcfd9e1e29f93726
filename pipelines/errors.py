"""One error path for every entry point: an error the user can fix is one line on stderr and exit code 2.

    @entry_point("train")  # instead of @hydra.main(config_path="../conf", config_name="train", version_base="1.3")
    def main(cfg: DictConfig) -> None: ...

What counts as the user's (`user_error`): spot's own errors (`spot_core.errors.SpotError`, which the library and
the pipelines raise with a message that says what was wrong and how to fix it), Hydra's composition errors (an
unknown preset, key or override syntax, a missing mandatory value), and a disk that refuses a write (full, read
only, no permission). Anything else is a bug and keeps its traceback. `HYDRA_FULL_ERROR=1` or `SPOT_VERBOSE=1`
shows the full traceback of every error.

A stopped run (Ctrl-C, or SIGTERM from `timeout`, `kill` or a cluster scheduler, which `Terminated` turns into an
exception) unwinds too: its tracked runs end KILLED (`pipelines.tracking.TrackedRun`), and one line says that running
the same command again resumes it; exit code 128 + the signal's number, as a shell reports a killed command.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, OmegaConfBaseException

from pipelines.paths import REPO
from spot_core.config import no_such_setting, setting_names
from spot_core.errors import ConfigError, SpotError

CONF = REPO / "conf"
EXIT_USER_ERROR = 2  # argparse's code for a usage error; 1 stays "ran, but something failed" (a cell, a finding)
VERBOSE = ("HYDRA_FULL_ERROR", "SPOT_VERBOSE")
FULL_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
NO_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that the runs it stops unwind as they do on Ctrl-C (a BaseException,
    like KeyboardInterrupt: no `except Exception` swallows it)."""


def raise_terminated(signum: int, frame: Any) -> None:
    # A second SIGTERM while the runs are being closed is ignored (SIGKILL still ends the process at once).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread inside the block; the handler before it comes back after. (Ray's
    init installs a handler of its own that exits without unwinding: the study enters this again after it.)"""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    before = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def stop_of(error: BaseException | None) -> BaseException | None:
    """The Ctrl-C or SIGTERM behind `error`: itself, or the one it was raised while handling (C code such as Ray's
    `wait` turns a signal handler's exception into a SystemError whose context is the stop); None for any other."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (KeyboardInterrupt, Terminated)):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def exit_stopped(stop: BaseException) -> NoReturn:
    """One line for a run stopped by Ctrl-C or SIGTERM, and the shell's exit code for it (130, 143)."""
    number, name = (signal.SIGINT, "Ctrl-C") if isinstance(stop, KeyboardInterrupt) else (signal.SIGTERM, "SIGTERM")
    print(f"stopped by {name}: run the same command again to resume", file=sys.stderr, flush=True)
    raise SystemExit(128 + number) from None


class StorageError(SpotError):
    """A file could not be written: the disk is full, read-only, or the folder is not the user's to write."""


class MissingFileError(SpotError, FileNotFoundError):
    """A file or folder a setting names does not exist; the message names the setting."""


def verbose() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes") for name in VERBOSE)


def one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def hydra_message(error: CompactHydraException) -> str:
    """Hydra's composition errors, without their search path and in the override syntax the user typed."""
    if isinstance(error, MissingConfigException) and error.options and "/" in (error.missing_cfg_file or ""):
        group, _, option = error.missing_cfg_file.rpartition("/")
        return f"{group}={option}: no such option in conf/{group}/; choose from {', '.join(error.options)}"
    if isinstance(error, OverrideParseException):
        first = str(error).splitlines()[0]
        return f"cannot parse the override {error.override!r} ({first}); see `--help` and Hydra's override grammar"
    return one_line(str(error).split("Config search path:")[0])


def storage_message(error: OSError) -> str:
    verb = "write" if error.errno in FULL_DISK | {errno.EROFS} else "use"  # EACCES: reading or writing
    where = f"cannot {verb} {error.filename}" if error.filename else f"cannot {verb} a file"
    if error.errno in FULL_DISK:
        fix = "free some space there, or set out_dir (and tracking.uri) to a disk with room"
    else:
        fix = "set out_dir (or tracking.uri) to a folder you can write to, or fix its permissions"
    return f"{where}: {error.strerror or os.strerror(error.errno)}: {fix}"


SQLITE_FULL = "database or disk is full"  # sqlite's own words, wherever MLflow's or SQLAlchemy's wrappers put them


def chain(error: BaseException) -> list[BaseException]:
    """The error and those it was raised from or during (MLflow wraps SQLAlchemy, which wraps sqlite3)."""
    out: list[BaseException] = []
    while error is not None and error not in out:
        out.append(error)
        error = error.__cause__ or error.__context__
    return out


def user_error(error: BaseException) -> SpotError | None:
    """The error a user can fix that `error` is (spot's own type, wrapping the library's), or None (a bug)."""
    if isinstance(error, SpotError):
        return error
    if any(SQLITE_FULL in str(e) for e in chain(error)):
        wrapped = StorageError(
            f"the tracking store cannot be written: {SQLITE_FULL}: free some space there, or set tracking.uri to a "
            "store on a disk with room"
        )
        wrapped.__cause__ = error
        return wrapped
    if isinstance(error, CompactHydraException):
        wrapped: SpotError = ConfigError(hydra_message(error))
    elif isinstance(error, MissingMandatoryValue):
        key = error.full_key or "a setting"
        wrapped = ConfigError(f"{key} has no value: set it on the command line, e.g. {key}=...")
    elif isinstance(error, InterpolationResolutionError):
        wrapped = ConfigError(f"{error.full_key}: {one_line(str(error).split('full_key:')[0])}")
    elif isinstance(error, OSError) and error.errno in FULL_DISK | NO_WRITE:
        wrapped = StorageError(storage_message(error))
    else:
        return None
    wrapped.__cause__ = error
    return wrapped


def exit_if_user_error(error: Exception, tracebacks: bool) -> None:
    """Prints the one line of a user's error and exits 2; returns for a bug, or when `tracebacks` are asked for."""
    found = user_error(error)
    if found is None or tracebacks:
        return
    print(f"error: {one_line(str(found))}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR) from None


def check_overrides(overrides: list[str]) -> None:
    """Overrides that Hydra would answer with a traceback: a key under `stages`, which is a list (`stages.modules`
    is how task modules are named, `tasks.modules`, but stages from outside the package are `stage_modules`).

    Raises:
        ConfigError: such an override.
    """
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith("stages."):
            raise ConfigError(
                f"{key}: `stages` is the list of stages to run (stages=[source,target,...]); name a module that adds a "
                "stage with stage_modules=[my_pkg.my_stage] (docs/stages.md)"
            )


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(the config-group choices among `overrides`: `model=tiny-t5`, `trainer@study.source_trainer=spot`; the keys
    of the settings the others set, added (`+`) or not: `trainer.lr`). Hydra's own settings and deletions are left
    out; so is everything when an override does not parse (Hydra then says why)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:
        return [], []
    choices, keys = [], []
    for line, override in zip(overrides, parsed, strict=True):
        key = override.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")) or override.is_delete():
            continue
        if override.package is not None or "/" in key or (CONF / key).is_dir():
            choices.append(line)
        else:
            keys.append(key)
    return choices, keys


def tree_keys(node: Any, where: str = "") -> Iterator[str]:
    """The keys of nested mappings at every level, dotted, in order: `trainer`, `trainer.lr`, ..."""
    for key, value in node.items() if isinstance(node, dict) else ():
        yield f"{where}{key}"
        yield from tree_keys(value, f"{where}{key}.")


def config_keys(config_name: str, choices: list[str]) -> dict[str, None] | None:
    """Every key of `conf/<config_name>.yaml` composed with the group `choices` (`trainer`, `trainer.lr`), in
    order, or None where it does not compose (Hydra says why when it composes it again)."""
    try:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return dict.fromkeys(tree_keys(OmegaConf.to_container(compose(config_name, choices), resolve=False)))
    except (HydraException, OmegaConfBaseException, ValueError):
        return None


def check_settings(config_name: str, argv: list[str]) -> None:
    """Refuses an override of a setting that does not exist, naming the closest one: `trainer.lrr=0.1` (which
    Hydra refuses, suggesting `+trainer.lrr=0.1`) and `+promt=file` (which Hydra adds and nothing reads). The
    settings: the keys of the config with the command's group choices, and every field of the dataclasses its
    nodes become (`pipelines.specs.SETTINGS`: `+trainer.best_includes_init=true` is one). Command lines with flags
    other than `-m` (`--help`, `-cn`) are left to Hydra.

    Raises:
        ConfigError: such an override, e.g. `trainer.lrr: no such setting; did you mean trainer.lr?`.
    """
    flags = {a for a in argv if a.startswith("-")}
    if flags - {"-m", "--multirun"}:
        return
    choices, keys = split_overrides([a for a in argv if a not in flags])
    known = config_keys(config_name, choices) if keys else None
    if known is None or all(k in known for k in keys):
        return
    from pipelines.specs import SETTINGS  # the dataclasses, imported only when the YAML lacks a key

    for root, cls in SETTINGS.items():
        if root in known:
            known.update(dict.fromkeys(setting_names(cls, root)))
    for key in keys:
        if key not in known:
            raise no_such_setting(key, known)


def entry_point(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable]:
    """`@hydra.main` for spot's entry points (`conf/<config_name>.yaml`), with the one error path: a user's error
    prints one line on stderr and exits 2; a bug keeps its traceback; HYDRA_FULL_ERROR=1 or SPOT_VERBOSE=1 shows
    every traceback. Ctrl-C and SIGTERM unwind the run (its tracked runs end KILLED) and end in one line."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable:
        tracebacks = False  # the user's choice, read by main() before it sets HYDRA_FULL_ERROR for Hydra

        @functools.wraps(task)
        def job(cfg: DictConfig) -> Any:
            try:
                return task(cfg)
            except Exception as e:  # handled in the job: past it, Hydra prints "Error executing job ..." first
                if (stop := stop_of(e)) is not None:  # a stop that C code turned into an error: a stop still
                    raise stop from e
                exit_if_user_error(e, tracebacks)  # SystemExit passes through Hydra
                raise

        # an absolute path: the same configs whether the module runs as __main__ or is imported (tests)
        hydra_main = hydra.main(config_path=str(CONF), config_name=config_name, version_base="1.3")(job)

        @functools.wraps(hydra_main)
        def main() -> Any:
            nonlocal tracebacks
            tracebacks = verbose()
            before = os.environ.get("HYDRA_FULL_ERROR")
            # Composition errors (an unknown preset, key or override) come before the job: with this set, Hydra
            # re-raises them instead of printing its own multi-line report and exiting 1.
            os.environ["HYDRA_FULL_ERROR"] = "1"
            try:
                check_overrides(sys.argv[1:])
                check_settings(config_name, sys.argv[1:])
                with sigterm_raises():
                    return hydra_main()
            except (KeyboardInterrupt, Terminated) as stop:
                if tracebacks:
                    raise
                exit_stopped(stop)
            except Exception as e:
                exit_if_user_error(e, tracebacks)
                raise
            finally:
                if before is None:
                    os.environ.pop("HYDRA_FULL_ERROR", None)
                else:
                    os.environ["HYDRA_FULL_ERROR"] = before

        return main

    return decorate
