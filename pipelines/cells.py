"""One cell of a study in a Ray worker, and the planning around it: which cells the stages asked for hold, which
can run, the retrieval cells planned from the task embeddings once sources and targets have finished.

A trial's config is plain values (`cell_config`); `train_cell` runs it under its own MLflow child run and
`run_job` dispatches on the cell's job: prompt tuning, an evaluation without training, a projector, neurons.
"""

from __future__ import annotations

import ctypes
import gc
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from mlflow.tracking import MlflowClient

from pipelines.tracking import MlflowTracker
from spot_core.cross_model import PROJECTOR_FILE, ProjectorSpec, fit_projector, project_file
from spot_core.neurons import record_neurons
from spot_core.prompt_files import load_prompt
from spot_core.similarity import rank_sources, task_embedding
from spot_core.study import Cell, Job, Stage, StudyConfig, cell_tags, plan, plan_retrieval, run_spec
from spot_core.transferability import neurons_spec, plan_cross_model, plan_neurons, plan_zero_shot, projector_spec
from spot_core.tuning import RunSpec, evaluate_prompt, tune_prompt

RESULT = "result.json"  # the prompt files are logged by the trainer through its tracker
REPORT = "report"  # the last stage: pipelines.report on this study's runs
TRAINING = (Stage.SOURCE, Stage.TARGET, Stage.TRANSFER, Stage.RETRIEVAL)
CROSS_MODEL = "cross_model"  # one name for B's own prompts, the projector and the projected prompts' cells
CROSS_STAGES = (Stage.CROSS_SOURCE, Stage.PROJECTOR, Stage.CROSS_ZERO_SHOT, Stage.CROSS_TRANSFER)
SU_STAGES = (Stage.ZERO_SHOT, Stage.NEURONS)


def cell_config(cell: Cell, study: StudyConfig, root: Path) -> dict[str, Any]:
    """What a trial needs to run one cell, as plain values (cells planned mid-study travel the same way)."""
    config = {"label": cell.label, "out_dir": str(cell.out_dir(root)), "job": cell.job.value}
    if cell.job is Job.PROJECTOR:
        config["spec"] = asdict(projector_spec(study, cell, root))
    elif cell.job is Job.NEURONS:
        config["spec"] = neurons_spec(study, cell, root)
    else:
        config["spec"] = asdict(run_spec(study, cell, root))
    if cell.projector:  # the cell first projects its source's prompt into its own folder
        config["project"] = [
            str(cell.projector.out_dir(root) / PROJECTOR_FILE),
            str(cell.source.out_dir(root) / cell.source.prompt_file),
            config["spec"]["prompt"]["files"][0],
        ]
    return {**config, "tags": cell_tags(cell, study)}


def run_job(config: dict, tracker: MlflowTracker) -> dict:
    """Runs one cell's job in this process; returns its result (best/val_score among it)."""
    out_dir, spec, job = Path(config["out_dir"]), config["spec"], Job(config["job"])
    if "project" in config:
        project_file(*config["project"])
    if job is Job.PROJECTOR:
        return fit_projector(ProjectorSpec(**spec), out_dir, tracker)
    if job is Job.NEURONS:
        return record_neurons(**spec, out_dir=out_dir, tracker=tracker)
    run = evaluate_prompt if job is Job.EVALUATE else tune_prompt
    return run(RunSpec(**spec), out_dir, tracker)


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
        client.log_artifact(run_id, str(out_dir / RESULT))
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


def rankings(study: StudyConfig, root: Path, done: set[str]) -> dict[str, list[tuple[Cell, float]]]:
    """Each target's finished source runs, most similar first, from the task embeddings on disk (a target's
    similarity is averaged over its finished runs)."""
    finished = [c for c in plan(study) if c.key in done]

    def embedding(cell: Cell):
        folder = cell.out_dir(root)
        initial = folder / "initial_prompt.safetensors"
        return task_embedding(
            load_prompt(folder / "task_embedding.safetensors")[0],
            load_prompt(initial)[0] if initial.exists() else None,
            study.task_embedding,
        )

    sources = {c.key: (c, embedding(c)) for c in finished if c.stage is Stage.SOURCE}
    out = {}
    for target in study.targets:
        runs = [embedding(c) for c in finished if c.stage is Stage.TARGET and c.task == target]
        if runs and sources:
            ranked = rank_sources(runs, {k: e for k, (_, e) in sources.items()}, study.retrieval_similarity)
            out[target] = [(sources[k][0], sim) for k, sim in ranked]
    return out


def retrieval_planner(study: StudyConfig, root: Path):
    """plan_more for the scheduler: the retrieval cells, once sources and targets have settled."""

    def plan_more(done: set[str]) -> tuple[list[Cell], dict[str, str]]:
        ranked = rankings(study, root, done)
        why = "no finished source and target runs to rank"
        missing = {f"retrieval:{t}": why for t in study.targets if t not in ranked}
        return plan_retrieval(study, ranked), missing

    return plan_more


def runnable(cells: list[Cell], finished: set[str]) -> tuple[list[Cell], dict[str, str]]:
    """The cells whose inputs are finished or will run now; the rest, with why (a stage left out)."""
    keys, out, why = {c.key for c in cells} | finished, [], {}
    for cell in cells:  # upstream first, so a cell whose input was dropped is dropped too
        lost = [c for c in cell.inputs if c.key not in keys]
        if lost:
            keys.discard(cell.key)
            stage = CROSS_MODEL if lost[0].stage in CROSS_STAGES else lost[0].stage.value
            why[cell.label] = f"needs {lost[0].label}, which has not finished: add stage {stage!r} to stages"
        else:
            out.append(cell)
    return out, why


def reason(error: BaseException) -> str:
    """One line for a failed trial: the cell's own exception, not Ray's wrapper around it."""
    cause = getattr(error, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def parse_stages(names) -> list[Stage]:
    """The stages asked for (`retrieval` includes its mixture prompts, `cross_model` its four kinds of cells);
    `report` is not one."""
    allowed = [s.value for s in (*TRAINING, *SU_STAGES)] + [CROSS_MODEL, REPORT]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"stages: unknown {unknown}; choose from {allowed}")
    stages = [Stage(n) for n in names if n not in (REPORT, CROSS_MODEL)]
    return stages + list(CROSS_STAGES) * (CROSS_MODEL in names)


def plan_stages(study: StudyConfig, stages: list[Stage]) -> list[Cell]:
    """The cells of the stages asked for, upstream first (retrieval cells are planned later, from rankings)."""
    cells = [c for c in plan(study) if c.stage in stages]
    if Stage.PROJECTOR in stages:  # before the short evaluation cells: the long chains start first
        if study.cross_model is None:
            raise ValueError(
                "stage cross_model needs study.cross_model: the other model and the source tasks the projector "
                "learns from, e.g. study.cross_model={model: gemma3-270m, train_tasks: [sst2]} (see study=smoke)"
            )
        cells += plan_cross_model(study)
    if Stage.ZERO_SHOT in stages:
        cells += plan_zero_shot(study)
    if Stage.NEURONS in stages:
        cells += plan_neurons(study)
    return cells
