"""The cells of Su et al. 2022's stages, beside SPoT's grid (spot_core.study):

    zero_shot        every source run's prompt scored on every target, no training (relative performance: that
                     score over the target's own trained prompt score)
    neurons          for every source and target run, the feed-forward neurons its task-embedding prompt activates
                     (the activated-neuron overlap indicator, compared with the embedding similarities)
    cross_model      another model B: B's own prompt for each task (cross_source), a projector from the study
                     model's source prompts into B (projector), and each source prompt projected into B, scored
                     zero-shot (cross_zero_shot) and trained from (cross_transfer)

Keys follow the same rule as SPoT's cells: everything that determines the result, never paths.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from spot_core.cross_model import ProjectorSpec
from spot_core.projector import ProjectorMethod
from spot_core.study import Cell, Stage, StudyConfig, _cell, data_fields, plan
from spot_core.tuning import RunSpec

NEURON_PROMPT = "task_embedding.safetensors"  # the prompt whose neurons a neurons cell records


def _sources(study: StudyConfig) -> list[Cell]:
    return [c for c in plan(study) if c.stage is Stage.SOURCE]


def plan_zero_shot(study: StudyConfig) -> list[Cell]:
    """A zero-shot cell per (source run, target): the source prompt scored on the target as it is."""
    return [_cell(study, Stage.ZERO_SHOT, t, src.seed, source=src) for src in _sources(study) for t in study.targets]


def neurons_cell(study: StudyConfig, run: Cell) -> Cell:
    identity = {"stage": Stage.NEURONS.value, "model": study.model, "of": run.key, "prompt": NEURON_PROMPT}
    return Cell(Stage.NEURONS, run.task, run.seed, "", json.dumps(identity, sort_keys=True), source=run)


def plan_neurons(study: StudyConfig) -> list[Cell]:
    """A neurons cell per source and target run."""
    return [neurons_cell(study, c) for c in plan(study) if c.stage in (Stage.SOURCE, Stage.TARGET)]


def plan_cross_model(study: StudyConfig) -> list[Cell]:
    """B's own prompts, the projector, then a zero-shot and a transfer cell per projected source run."""
    cm = study.cross_model
    if cm is None:
        return []
    seed = study.source_seeds[0]
    sources = {(c.task, c.seed): c for c in _sources(study)}
    tasks = list(dict.fromkeys([*cm.train_tasks, *cm.tasks]))
    own = {(t, s): _cell(study, Stage.CROSS_SOURCE, t, s, model=cm.model) for t in tasks for s in study.source_seeds}
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
        "data": [study.max_input_len, study.max_target_len, study.max_train_examples, study.max_eval_examples],
    }
    projector = Cell(
        Stage.PROJECTOR, "+".join(cm.train_tasks), seed, "", json.dumps(identity, sort_keys=True),
        model=cm.model, parts=tuple(parts),
    )  # fmt: skip
    projected = [c for c in sources.values() if c.task in cm.tasks]
    through = [
        _cell(study, stage, c.task, c.seed, c, model=cm.model, projector=projector)
        for stage in (Stage.CROSS_ZERO_SHOT, Stage.CROSS_TRANSFER)
        for c in projected
    ]
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


def neurons_spec(study: StudyConfig, cell: Cell, root: str | Path) -> dict[str, Any]:
    """What a neurons cell needs: the run's prompt file and how to load the study model."""
    return {
        "model": study.model,
        "prompt_file": str(cell.source.out_dir(root) / NEURON_PROMPT),
        "cache_dir": study.cache_dir,
        "device": study.device,
        "dtype": study.dtype,
        "prompt_once": study.prompt_once,
    }
