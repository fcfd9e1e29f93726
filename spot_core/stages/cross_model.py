"""Su et al. 2022's cross-model transfer into another model B (`study.cross_model`):
    cross_source     B's own prompt for each task, from scratch
    projector        an MLP from the study model's source prompts into B
    cross_zero_shot  each source prompt projected into B and scored, no training
    cross_transfer   B trained from each projected source prompt
A projected cell first writes its projected prompt into its own folder, then starts from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from spot_core.cost import Work, trained_work
from spot_core.cross_model import ProjectorSpec, fit_projector, project_file
from spot_core.projector import ProjectorMethod
from spot_core.stages import source
from spot_core.stages.base import RunArtifact, StageDef, Tags, report_of, run_evaluate, run_tune, tune_spec
from spot_core.study import Cell, StudyConfig, data_fields, data_limits, initial, make_cell
from spot_core.tags import OTHER_MODEL, Stage
from spot_core.tracking import Tracker
from spot_core.tuning import RunSpec


def plan(study: StudyConfig) -> list[Cell]:
    """B's own prompts, the projector, then a zero-shot and a transfer cell per projected source run."""
    cm = study.cross_model
    seed, trainer = study.source_seeds[0], cm.trainer or study.source_trainer
    sources = {(c.task, c.seed): c for c in source.plan(study)}
    tasks = list(dict.fromkeys([*cm.train_tasks, *cm.tasks]))
    own = {
        (t, s): make_cell(study, Stage.CROSS_SOURCE, t, s, trainer=trainer, init=initial(t, study.prompt.source_init),
                          model=cm.model)
        for t in tasks
        for s in study.source_seeds
    }  # fmt: skip
    parts = [sources[t, seed] for t in cm.train_tasks]
    if cm.projector.method is ProjectorMethod.DISTANCE:
        parts += [own[t, seed] for t in cm.train_tasks]
    config = {k: str(v) if hasattr(v, "value") else v for k, v in asdict(cm.projector).items()}
    identity = {
        "stage": Stage.PROJECTOR.value,
        "source_model": study.model,
        "model": cm.model,
        "parts": [c.key for c in parts],
        "projector": config,
        "data": data_limits(study),
    }
    projector = Cell(
        Stage.PROJECTOR, "+".join(cm.train_tasks), seed, "", json.dumps(identity, sort_keys=True),
        model=cm.model, parts=tuple(parts),
    )  # fmt: skip
    projected = [c for c in sources.values() if c.task in cm.tasks]
    zero_shot = cm.trainer or study.target_trainer  # not in the key: nothing is trained
    through = [
        make_cell(study, stage, c.task, c.seed, trainer=trainer if trained else zero_shot, trained=trained,
                  target=c.task, source=c, model=cm.model, projector=projector)
        for stage, trained in ((Stage.CROSS_ZERO_SHOT, False), (Stage.CROSS_TRANSFER, True))
        for c in projected
    ]  # fmt: skip
    if cm.projector.method is ProjectorMethod.DISTANCE:  # the projector needs B's own prompts first
        return [*own.values(), projector, *through]
    return [projector, *own.values(), *through]  # the projector heads the longest chain: it starts first


def projector_spec(study: StudyConfig, cell: Cell, root: str | Path) -> ProjectorSpec:
    """What a projector cell trains from: the study model's source prompts of the training tasks (and, for
    distance minimising, B's own prompts of the same tasks) under `root`."""
    cm = study.cross_model
    by_model = {m: [c for c in cell.parts if (c.model or study.model) == m] for m in (study.model, cm.model)}
    return ProjectorSpec(
        source_model=study.model,
        target=RunSpec(model=cm.model, task=cm.train_tasks[0], **data_fields(study, cm.model)),
        train_tasks=[c.task for c in by_model[study.model]],
        train_prompts=[str(c.out_dir(root) / c.prompt_file) for c in by_model[study.model]],
        target_prompts=[str(c.out_dir(root) / c.prompt_file) for c in by_model[cm.model]],
        projector=cm.projector,
    )


def spec(study: StudyConfig, cell: Cell, root: Path) -> dict[str, Any]:
    """The cell's kind and its job's spec; a projected cell also the (projector, source prompt, projected
    prompt) files it projects before it starts."""
    if cell.stage is Stage.PROJECTOR:
        return {"kind": cell.stage.value, "job": asdict(projector_spec(study, cell, root))}
    out = {"kind": cell.stage.value, "job": tune_spec(study, cell, root)}
    if cell.projector:
        source_prompt = cell.source.out_dir(root) / cell.source.prompt_file
        out["project"] = [str(cell.projector.run_dir(root).projector), str(source_prompt)]
        out["project"].append(out["job"]["prompt"]["files"][0])
    return out


def run(spec: dict[str, Any], out_dir: Path, tracker: Tracker) -> dict[str, Any]:
    if "project" in spec:
        project_file(*spec["project"])
    kind = Stage(spec["kind"])
    if kind is Stage.PROJECTOR:
        return fit_projector(ProjectorSpec(**spec["job"]), out_dir, tracker)
    return (run_evaluate if kind is Stage.CROSS_ZERO_SHOT else run_tune)(spec["job"], out_dir, tracker)


def work(cell: Cell, study: StudyConfig) -> Work:
    """A projector trained by task tuning runs the other model at the projector's batch per step and scores each
    training task once; the projector's own MLP, and distance minimising, count as nothing. Other cells: their
    trainer's work."""
    if cell.stage != Stage.PROJECTOR:
        return trained_work(cell, study)
    p = study.cross_model.projector
    steps = p.steps if p.method is ProjectorMethod.TASK_TUNING else 0
    tasks = len(study.cross_model.train_tasks)
    return Work(steps, p.batch_size, tasks, eval_examples=study.max_eval_examples, eval_batch_size=p.eval_batch_size)


def other_model(runs: list[tuple[Tags, Path | None]]) -> str:
    """The model the stage's runs ran on (the report names it)."""
    return next((tags.get("model", "") for tags, _ in runs), "")


def needs(study: StudyConfig) -> str | None:
    if study.cross_model is None:
        return (
            "stage cross_model needs study.cross_model: the other model and the source tasks the projector "
            "learns from, e.g. study.cross_model={model: gemma3-270m, train_tasks: [sst2]} (see study=smoke)"
        )
    return None


STAGE = StageDef(
    "cross_model",
    (Stage.CROSS_SOURCE, Stage.PROJECTOR, Stage.CROSS_ZERO_SHOT, Stage.CROSS_TRANSFER),
    plan,
    spec,
    run,
    needs=needs,
    work=work,
    artifacts=(RunArtifact(OTHER_MODEL, None, other_model),),
    report=report_of("spot_core.report.su", "cross_model_sections"),
)
