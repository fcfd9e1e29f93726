"""SPoT's MODELTUNING baseline (section 2, Table 1 and Figure 1): every weight of the model fine-tuned on each
target separately, a run per target and seed (`spot_core.tuning.tune_model`, trainer `study.model_trainer`: T5's
fine-tuning recipe). Its runs keep their best weights in their own folder (`RunDir.best_model`), not in MLflow."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from spot_core.cost import model_work
from spot_core.stages.base import StageDef, report_of
from spot_core.study import Cell, StudyConfig, data_fields, make_cell
from spot_core.tags import Stage
from spot_core.tracking import Tracker
from spot_core.tuning import RunSpec, tune_model


def model_cell(study: StudyConfig, stage: Stage, task: str, seed: int, source: Cell | None = None) -> Cell:
    """A model-tuning cell: `task` by `study.model_trainer` on `study.model_tuning_model` (or the study's model),
    from the pretrained weights or `source`'s best."""
    return make_cell(study, stage, task, seed, trainer=study.model_trainer, init="" if source else "pretrained",
                     target="" if stage is Stage.MT_SOURCE else task, source=source,
                     model=study.model_tuning_model or "")  # fmt: skip


def plan(study: StudyConfig) -> list[Cell]:
    return [model_cell(study, Stage.MODEL_TUNING, t, s) for t in study.targets for s in study.seeds]


def spec(study: StudyConfig, cell: Cell, root: Path) -> dict[str, Any]:
    """The cell's RunSpec: its task and trainer, and the model folder it starts from (its source cell's best)."""
    weights = str(cell.source.run_dir(root).best_model) if cell.source else None
    return asdict(
        RunSpec(model=cell.model or study.model, task=cell.task, trainer=cell.trainer, weights=weights,
                **data_fields(study, cell.model))
    )  # fmt: skip


def run(spec: dict[str, Any], out_dir: Path, tracker: Tracker) -> dict[str, Any]:
    return tune_model(RunSpec(**spec), out_dir, tracker)


def needs(study: StudyConfig) -> str | None:
    if study.model_trainer.embedding_step is not None:
        return "study.model_trainer.embedding_step: model tuning writes no task embedding; set it to null"
    return None


TABLE1 = report_of("spot_core.report.generic", "generic_sections")  # Table 1's layout (both model-tuning stages)

STAGE = StageDef("model_tuning", (Stage.MODEL_TUNING,), plan, spec, run, needs=needs, work=model_work, report=TABLE1)
