"""SPoT's MULTI-TASK MODELTUNING baseline (section 2, Table 1 and Figure 1): every weight of the model fine-tuned
on each source (a task or a mixture: SPoT's are mixtures), then again on each target from that model:
mt_source  a run per source and source seed (`spot_core.tuning.tune_model`, trainer `study.model_trainer`)
mt_target  a run per source, target and seed, from the first source seed's best weights (its `best_model` folder)
"""

from __future__ import annotations

from spot_core.cost import model_work
from spot_core.stages import model_tuning
from spot_core.stages.base import StageDef
from spot_core.study import Cell, StudyConfig
from spot_core.tags import Stage


def plan(study: StudyConfig) -> list[Cell]:
    cells = []
    for name in study.sources:
        tuned = [model_tuning.model_cell(study, Stage.MT_SOURCE, name, seed) for seed in study.source_seeds]
        cells += tuned + [
            model_tuning.model_cell(study, Stage.MT_TARGET, t, s, source=tuned[0])
            for t in study.targets
            for s in study.seeds
        ]
    return cells


STAGE = StageDef(
    "multitask_model_tuning",
    (Stage.MT_SOURCE, Stage.MT_TARGET),
    plan,
    model_tuning.spec,
    model_tuning.run,
    needs=model_tuning.needs,
    work=model_work,
    report=model_tuning.TABLE1,
)
