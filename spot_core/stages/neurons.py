"""Su et al. 2022's activated-neuron indicator: for every source and target run, the feed-forward neurons its
task-embedding prompt activates (the report compares their overlap with the embedding similarities)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from spot_core.neurons import load_neurons, record_neurons
from spot_core.run_dir import RunDir
from spot_core.stages import source, target
from spot_core.stages.base import RunArtifact, StageDef, Tags
from spot_core.study import Cell, StudyConfig
from spot_core.tags import NEURONS, Stage
from spot_core.tracking import Tracker

PROBED = RunDir.TASK_EMBEDDING  # the prompt of the run whose neurons a neurons cell records


def neurons_cell(study: StudyConfig, run: Cell) -> Cell:
    identity = {"stage": Stage.NEURONS.value, "model": study.model, "of": run.key, "prompt": PROBED}
    return Cell(Stage.NEURONS, run.task, run.seed, "", json.dumps(identity, sort_keys=True), source=run)


def plan(study: StudyConfig) -> list[Cell]:
    """A neurons cell per source and target run."""
    return [neurons_cell(study, c) for c in [*source.plan(study), *target.plan(study)]]


def spec(study: StudyConfig, cell: Cell, root: Path) -> dict[str, Any]:
    """The run's prompt file and how to load the study model."""
    return {
        "model": study.model,
        "prompt_file": str(cell.source.run_dir(root).path / PROBED),
        "cache_dir": study.cache_dir,
        "device": study.device,
        "dtype": study.dtype,
        "prompt_once": study.prompt_once,
    }


def run(spec: dict[str, Any], out_dir: Path, tracker: Tracker) -> dict[str, Any]:
    return record_neurons(**spec, out_dir=out_dir, tracker=tracker)


def masks(runs: list[tuple[Tags, Path | None]]) -> dict[str, np.ndarray]:
    """Probed run's key -> its activated-neuron mask (numpy bool [layers, L, I])."""
    return {tags["source_key"]: load_neurons(path).numpy() for tags, path in runs}


STAGE = StageDef("neurons", (Stage.NEURONS,), plan, spec, run, artifacts=(RunArtifact(NEURONS, RunDir.NEURONS, masks),))
