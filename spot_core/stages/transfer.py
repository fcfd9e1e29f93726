"""SPoT's transfer grid: every (source run, target, seed), the target prompt starting from the source prompt."""

from __future__ import annotations

from spot_core.stages import source
from spot_core.stages.base import StageDef, run_tune, run_tune_pack, tune_spec
from spot_core.study import Cell, StudyConfig, make_cell
from spot_core.tags import Stage


def plan(study: StudyConfig) -> list[Cell]:
    return [
        make_cell(study, Stage.TRANSFER, t, s, trainer=study.target_trainer, target=t, source=src)
        for src in source.plan(study)
        for t in study.targets
        for s in study.seeds
    ]


STAGE = StageDef("transfer", (Stage.TRANSFER,), plan, tune_spec, run_tune, core=True, run_pack=run_tune_pack)
