"""Target prompts from scratch (SPoT section 3): the baseline each transfer is compared with, and each target's
task embedding (the prompt after `embedding_step` steps) that retrieval ranks sources by."""

from __future__ import annotations

from spot_core.stages.base import StageDef, run_tune, run_tune_pack, tune_spec
from spot_core.study import Cell, StudyConfig, initial, make_cell
from spot_core.tags import Stage


def plan(study: StudyConfig) -> list[Cell]:
    """A run per target and seed, from the target init (SPoT: class labels)."""
    fresh = study.prompt.target_init
    return [
        make_cell(study, Stage.TARGET, t, s, trainer=study.target_trainer, init=initial(t, fresh), target=t)
        for t in study.targets
        for s in study.seeds
    ]


STAGE = StageDef("target", (Stage.TARGET,), plan, tune_spec, run_tune, core=True, run_pack=run_tune_pack, embedded=True)
