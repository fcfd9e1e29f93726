"""One trial of a study in a Ray worker: its work as a typed job (`TrialJob`: one cell, or a pack of cells on one
backbone, each a `CellJob`), converted to and from the plain config Tune carries in one place; and its run
(`train_cell`), each cell under its own MLflow child run. A lone cell is a pack of one: one code path runs both.
What a cell runs is its stage's (spot_core.stages).
"""

from __future__ import annotations

import ctypes
import gc
import json
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pipelines import ledger
from pipelines.tracking import TrackedRun, connect
from pipelines.user_tasks import carried, receive
from spot_core.run_dir import RunDir
from spot_core.stages.catalogue import stage_of
from spot_core.study import Cell, StudyConfig, cell_tags


@dataclass(frozen=True)
class CellJob:
    """What a trial needs to run one cell, as plain values (it travels to a Ray worker).

    Attributes:
        key: the cell's key (the ledger's).
        label: how it is shown (its MLflow run's name).
        out_dir: its run folder.
        stage: its kind (`stage` tag), which names the stage that runs it.
        spec: what its stage runs, as plain values (`StageDef.spec`).
        tags: its MLflow run's tags (spot_core.study.cell_tags).
        tasks: task files and modules, registered in the worker before it runs (pipelines.user_tasks.carried).
    """

    key: str
    label: str
    out_dir: str
    stage: str
    spec: dict[str, Any]
    tags: dict[str, str]
    tasks: dict[str, Any]


@dataclass(frozen=True)
class TrialJob:
    """A trial's cells (one, or a pack of up to `ray.cells_per_trial`) and its label. Tune carries it as `config()`,
    whose "cell" (the first cell's key) and "label" name the trial and its folder."""

    label: str
    cells: tuple[CellJob, ...]

    @classmethod
    def of_cells(cls, cells: Sequence[CellJob]) -> TrialJob:
        first, more = cells[0], len(cells) - 1
        return cls(f"{first.label} (+{more} packed)" if more else first.label, tuple(cells))

    def config(self) -> dict[str, Any]:
        return {"cell": self.cells[0].key, "label": self.label, "cells": [asdict(c) for c in self.cells]}

    @classmethod
    def of(cls, config: dict[str, Any]) -> TrialJob:
        return cls(config["label"], tuple(CellJob(**c) for c in config["cells"]))


def cell_config(cell: Cell, study: StudyConfig, root: Path) -> CellJob:
    """What a trial needs to run one cell (cells planned mid-study travel the same way)."""
    return CellJob(
        key=cell.key,
        label=cell.label,
        out_dir=str(cell.out_dir(root)),
        stage=str(cell.stage),
        spec=stage_of(cell.stage).spec(study, cell, root),
        tags=cell_tags(cell, study),
        tasks=carried(),
    )


class Settle:
    """Closes each cell's run as the cell leaves the trial (a `ResultHook`): FINISHED with its timings and result
    file, or FAILED with its own error (recorded in `failed`: key -> why).

    `time/cell_seconds` is the cell's share of the trial (each interval split among the cells still in it), so that
    a study's cell seconds add up to its trials' busy time; `time/pack_seconds` the trial's time until the cell
    left; `pack/cells` how many cells the trial trained."""

    def __init__(self, cells: list[CellJob], runs: list[TrackedRun]):
        self.cells, self.runs, self.failed = cells, runs, {}
        self.start = self.last = time.perf_counter()
        self.share = 0.0

    def __call__(self, i: int, result: dict[str, Any] | Exception) -> None:
        now = time.perf_counter()
        self.share += (now - self.last) / sum(run.open for run in self.runs)
        self.last = now
        run = self.runs[i]
        if isinstance(result, Exception):
            run.end(result)
            self.failed[self.cells[i].key] = one_line(result)
            return
        figures = {"time/cell_seconds": self.share, "time/pack_seconds": now - self.start}
        run.tracker.log_metrics({**figures, "pack/cells": float(len(self.cells))}, 0)
        run.tracker.log_artifact(RunDir(Path(self.cells[i].out_dir)).result_file)
        run.end()


def train_cell(
    config: dict, uri: str, experiment_id: str, parent_id: str, study: str, threads: float, in_worker: bool = True
) -> dict:
    """A trial: its cells run by their stage (`StageDef.run_cells`: as a pack, or one after another), each under its
    own child run of the study's, closed as soon as the cell leaves (`Settle`: a cell of a pack that fails alone
    leaves the others training; a lone cell's error is the trial's). Returns the cells of a pack that failed on
    their own as `failed_cells` (JSON: key -> why). A retried
    trial (a worker that died) skips cells that finished in an earlier attempt; the others resume from their own
    checkpoints. When the trial itself dies (out of memory, a stop), its open cells' runs end FAILED (KILLED for
    a stop) and the error goes on to Ray, which retries the trial. `in_worker`: False in the study's own process
    (ray.in_process): see `release_memory`."""
    job = TrialJob.of(config)
    for cell in job.cells:
        receive(cell.tasks)
    runs = ledger.study_ledger(connect(uri), experiment_id, study)
    # finished in an earlier attempt: its folder holds its result and its child run is FINISHED
    todo = [c for c in job.cells if not (RunDir(Path(c.out_dir)).finished() and runs.finished(c.key))]
    if not todo:
        return {"failed_cells": "{}"}
    torch.set_num_threads(max(1, int(threads)))  # the trial's CPU share; more threads would oversubscribe
    with ExitStack() as stack:
        tracked = [stack.enter_context(runs.child(parent_id, c.key, c.label, c.tags)) for c in todo]
        settle = Settle(todo, tracked)
        stack.callback(release_memory, in_worker)
        specs, out_dirs = [c.spec for c in todo], [Path(c.out_dir) for c in todo]
        stage_of(todo[0].stage).run_cells(specs, out_dirs, [run.tracker for run in tracked], settle)
    return {"failed_cells": json.dumps(settle.failed)}


_FROZEN = False  # whether this worker's long-lived objects have been moved out of the collector's sight


def release_memory(worker: bool = True) -> None:
    """Hands a finished cell's freed memory back to the OS. A reused trial worker runs each cell in a new thread,
    and glibc keeps what a thread freed in that thread's heap arena: without this, the two workers of the demo
    study grew to 10 GB each over 30 cells and Ray killed one (a cell itself peaks at about 3 GB).

    In a worker, the first call freezes what the worker holds by then (its imports: torch, transformers, MLflow and
    Ray, about a million objects, which live as long as it does): a full collection walked them all, 0.22 s after
    every cell (bench/study_overhead.py); it now walks what the cells left, in milliseconds. In a process that
    outlives the study (`worker=False`: ray.in_process) nothing is frozen, since what it holds may yet become
    garbage, and only the young generations are collected: a full collection there took 0.44 s a cell."""
    global _FROZEN
    if worker and not _FROZEN:
        gc.collect()
        gc.freeze()
        _FROZEN = True
    gc.collect(2 if worker else 1)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def one_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    return f"{type(error).__name__}: {error}".splitlines()[0]


def reason(error: BaseException) -> str:
    """One line for a failed trial: the cell's own exception, not Ray's wrapper around it."""
    cause = getattr(error, "cause", None)
    if cause is not None:
        return one_line(cause)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
