"""Su et al. 2022's zero-shot transfer: every source run's prompt scored on every target, no training (the
report divides it by the target's own prompt score: relative performance)."""

from __future__ import annotations

from spot_core.stages import source
from spot_core.stages.base import StageDef, report_of, run_evaluate, tune_spec
from spot_core.study import Cell, StudyConfig, make_cell
from spot_core.tags import Stage


def plan(study: StudyConfig) -> list[Cell]:
    """A cell per (source run, target): the source prompt scored on the target as it is."""
    scored = dict(trainer=study.target_trainer, trained=False)  # the trainer runs the evaluation only
    return [
        make_cell(study, Stage.ZERO_SHOT, t, src.seed, target=t, source=src, **scored)
        for src in source.plan(study)
        for t in study.targets
    ]


STAGE = StageDef(
    "zero_shot",
    (Stage.ZERO_SHOT,),
    plan,
    tune_spec,
    run_evaluate,
    report=report_of("spot_core.report.su", "zero_shot_sections"),
)
