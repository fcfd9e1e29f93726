"""Source prompts (SPoT section 3): prompt tuning on each source task or mixture, from the source init.

A source run's best checkpoint is the prompt that transfers; its prompt after `embedding_step` steps is the
source's task embedding.
"""

from __future__ import annotations

from spot_core.stages.base import StageDef, run_tune, run_tune_pack, tune_spec
from spot_core.study import Cell, StudyConfig, initial, make_cell
from spot_core.tags import Stage


def source_cell(study: StudyConfig, task: str, seed: int) -> Cell:
    init = initial(task, study.prompt.source_init)
    return make_cell(study, Stage.SOURCE, task, seed, trainer=study.source_trainer, init=init)


def plan(study: StudyConfig) -> list[Cell]:
    """A run per source and source seed."""
    return [source_cell(study, t, s) for t in study.sources for s in study.source_seeds]


STAGE = StageDef("source", (Stage.SOURCE,), plan, tune_spec, run_tune, core=True, run_pack=run_tune_pack, embedded=True)
