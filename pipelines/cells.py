"""One cell of a study in a Ray worker: its trial config as plain values (`cell_config`), and its run under its own
MLflow child run (`train_cell`). What the cell runs is its stage's (spot_core.stages).
"""

from __future__ import annotations

import ctypes
import gc
import time
from pathlib import Path
from typing import Any

import torch
from mlflow.tracking import MlflowClient

from pipelines.tracking import MlflowTracker
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
    }


def run_job(config: dict, tracker: MlflowTracker) -> dict:
    """Runs one cell in this process; returns its result (best/val_score among it)."""
    return stage_of(config["stage"]).run(config["spec"], Path(config["out_dir"]), tracker)


def train_cell(config: dict, uri: str, experiment_id: str, parent_id: str, threads: float) -> dict:
    client = MlflowClient(uri)
    tags = {**config["tags"], "mlflow.parentRunId": parent_id}
    run_id = client.create_run(experiment_id, run_name=config["label"], tags=tags).info.run_id
    out_dir = Path(config["out_dir"])
    torch.set_num_threads(max(1, int(threads)))  # the trial's CPU share; more threads would oversubscribe
    try:
        start = time.perf_counter()
        result = run_job(config, MlflowTracker(client, run_id))
        client.log_metric(run_id, "time/cell_seconds", time.perf_counter() - start)
        client.log_artifact(run_id, str(RunDir(out_dir).result_file))
    except BaseException as e:
        client.set_tag(run_id, "error", f"{type(e).__name__}: {e}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    finally:
        release_memory()
    client.set_terminated(run_id, "FINISHED")
    return {"best_score": result.get("best/val_score", 0.0)}


def release_memory() -> None:
    """Hands a finished cell's freed memory back to the OS. A reused trial worker runs each cell in a new thread,
    and glibc keeps what a thread freed in that thread's heap arena: without this, the two workers of the demo
    study grew to 10 GB each over 30 cells and Ray killed one (a cell itself peaks at about 3 GB)."""
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
