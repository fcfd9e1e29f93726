"""One cell of a study in a Ray worker: its trial config as plain values (`cell_config`), and its run under its own
MLflow child run (`train_cell`); or a pack of cells trained together on one backbone, each under its own child run
(`train_pack`). What a cell runs is its stage's (spot_core.stages).
"""

from __future__ import annotations

import ctypes
import gc
import json
import time
from pathlib import Path
from typing import Any

import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipelines.tracking import MlflowTracker
from pipelines.user_tasks import carried, receive
from spot_core.run_dir import RunDir
from spot_core.stages.catalogue import stage_of
from spot_core.study import Cell, StudyConfig, cell_tags


def cell_config(cell: Cell, study: StudyConfig, root: Path) -> dict[str, Any]:
    """What a trial needs to run one cell, as plain values (cells planned mid-study travel the same way)."""
    return {
        "label": cell.label,
        "out_dir": str(cell.out_dir(root)),
        "stage": cell.stage.value,
        "spec": stage_of(cell.stage).spec(study, cell, root),
        "tags": cell_tags(cell, study),
        "tasks": carried(),  # task files and modules: registered in the worker before the cell runs
    }


def run_job(config: dict, tracker: MlflowTracker) -> dict:
    """Runs one cell in this process; returns its result (best/val_score among it)."""
    return stage_of(config["stage"]).run(config["spec"], Path(config["out_dir"]), tracker)


def open_run(client: MlflowClient, experiment_id: str, parent_id: str, config: dict) -> str:
    """A cell's MLflow child run, RUNNING."""
    tags = {**config["tags"], "mlflow.parentRunId": parent_id}
    return client.create_run(experiment_id, run_name=config["label"], tags=tags).info.run_id


def fail_run(client: MlflowClient, run_id: str, error: BaseException) -> None:
    client.set_tag(run_id, "error", f"{type(error).__name__}: {error}"[:5000])
    client.set_terminated(run_id, "FAILED")


def train_cell(config: dict, uri: str, experiment_id: str, parent_id: str, threads: float) -> dict:
    """A trial: one cell, or a pack of cells (`train_pack`)."""
    if "pack" in config:
        return train_pack(config["pack"], uri, experiment_id, parent_id, threads)
    receive(config.get("tasks"))
    client = MlflowClient(uri)
    run_id = open_run(client, experiment_id, parent_id, config)
    out_dir = Path(config["out_dir"])
    torch.set_num_threads(max(1, int(threads)))  # the trial's CPU share; more threads would oversubscribe
    try:
        start = time.perf_counter()
        result = run_job(config, MlflowTracker(client, run_id))
        client.log_metric(run_id, "time/cell_seconds", time.perf_counter() - start)
        client.log_artifact(run_id, str(RunDir(out_dir).result_file))
    except BaseException as e:
        fail_run(client, run_id, e)
        raise
    finally:
        release_memory()
    client.set_terminated(run_id, "FINISHED")
    return {"best_score": result.get("best/val_score", 0.0)}


def train_pack(configs: list[dict], uri: str, experiment_id: str, parent_id: str, threads: float) -> dict:
    """Trains cells of one stage kind and backbone as one pack, each under its own child run, closed as soon as
    the cell leaves the pack: FINISHED, or FAILED with its own error (the others train on). Returns the cells
    that failed on their own as `failed_cells` (JSON: key -> why). A retried trial (a worker that died) skips
    cells that finished in an earlier attempt; the others resume from their own checkpoints.

    `time/cell_seconds` of a packed cell is its share of the trial (the pack's time until it left, over the
    cells still in the pack), so that a study's cell seconds still add up to its trials' busy time."""
    for config in configs:
        receive(config.get("tasks"))
    client = MlflowClient(uri)
    todo = [c for c in configs if not finished_before(client, experiment_id, c)]
    if not todo:
        return {"failed_cells": "{}"}
    torch.set_num_threads(max(1, int(threads)))
    run_ids = [open_run(client, experiment_id, parent_id, c) for c in todo]
    open_runs, failed = set(range(len(todo))), {}
    start = last = time.perf_counter()
    share = 0.0  # seconds per cell of the pack so far (each interval split among the cells in it)

    def settle(i: int, result: dict | Exception) -> None:
        nonlocal last, share
        now = time.perf_counter()
        share += (now - last) / len(open_runs)
        last = now
        open_runs.discard(i)
        if isinstance(result, Exception):
            fail_run(client, run_ids[i], result)
            failed[todo[i]["cell"]] = f"{type(result).__name__}: {result}".splitlines()[0]
            return
        stamp = int(time.time() * 1000)
        figures = {"time/cell_seconds": share, "time/pack_seconds": now - start, "pack/cells": float(len(todo))}
        client.log_batch(run_ids[i], metrics=[Metric(k, v, stamp, 0) for k, v in figures.items()])
        client.log_artifact(run_ids[i], str(RunDir(Path(todo[i]["out_dir"])).result_file))
        client.set_terminated(run_ids[i], "FINISHED")

    run_pack = stage_of(todo[0]["stage"]).run_pack
    trackers = [MlflowTracker(client, run_id) for run_id in run_ids]
    try:
        run_pack([c["spec"] for c in todo], [Path(c["out_dir"]) for c in todo], trackers, settle)
    except BaseException as e:  # the pack itself died (out of memory, a kill): its open cells fail, Ray retries
        for i in open_runs:
            fail_run(client, run_ids[i], e)
        raise
    finally:
        release_memory()
    return {"failed_cells": json.dumps(failed)}


def finished_before(client: MlflowClient, experiment_id: str, config: dict) -> bool:
    """Whether a cell of a retried pack finished in an earlier attempt: its folder holds its result and its child
    run is FINISHED."""
    if not RunDir(Path(config["out_dir"])).finished():
        return False
    query = f"tags.cell_key = '{config['cell']}' and attributes.status = 'FINISHED'"
    return bool(client.search_runs([experiment_id], query, max_results=1))


_FROZEN = False  # whether this worker's long-lived objects have been moved out of the collector's sight


def release_memory() -> None:
    """Hands a finished cell's freed memory back to the OS. A reused trial worker runs each cell in a new thread,
    and glibc keeps what a thread freed in that thread's heap arena: without this, the two workers of the demo
    study grew to 10 GB each over 30 cells and Ray killed one (a cell itself peaks at about 3 GB).

    The first call freezes what the worker holds by then (its imports: torch, transformers, MLflow and Ray, about a
    million objects, which live as long as it does): a full collection walked them all, 0.22 s after every cell
    (bench/study_overhead.py); it now walks what the cells left, in milliseconds."""
    global _FROZEN
    if not _FROZEN:
        gc.collect()
        gc.freeze()
        _FROZEN = True
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def reason(error: BaseException) -> str:
    """One line for a failed trial: the cell's own exception, not Ray's wrapper around it."""
    cause = getattr(error, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
