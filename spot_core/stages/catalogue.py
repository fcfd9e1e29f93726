"""The stages of a study, in planning order, and what the study driver asks of them."""

from __future__ import annotations

from collections.abc import Sequence

from spot_core.errors import ConfigError
from spot_core.stages import (
    attempt,
    cross_model,
    model_tuning,
    mpt,
    multitask_model_tuning,
    neurons,
    retrieval,
    source,
    target,
    transfer,
    zero_shot,
)
from spot_core.stages.base import StageDef
from spot_core.study import Cell, StudyConfig

# Planning order: upstream first; the cross-model chain (the longest) before the short scoring cells. Stages added
# from outside the package (`register`) plan after these.
CATALOGUE: list[StageDef] = [
    m.STAGE
    for m in (
        source, target, transfer, mpt, cross_model, zero_shot, neurons, retrieval, attempt, model_tuning,
        multitask_model_tuning,
    )
]  # fmt: skip


def names() -> list[str]:
    return [s.name for s in CATALOGUE]


def register(stage: StageDef) -> StageDef:
    """Adds a stage to the catalogue (a module of the user's, `stage_modules=[...]`): the driver, the plan, the
    cost, the scheduler, the ledger and the report then handle it like a built-in one. Registering the same
    definition again does nothing.

    Raises:
        ConfigError: another stage has its name or one of its cell kinds.
    """
    if stage in CATALOGUE:
        return stage
    for other in CATALOGUE:
        clash = {stage.name} & {other.name} or set(stage.kinds) & set(other.kinds)
        if clash:
            raise ConfigError(f"stage {stage.name!r}: {sorted(clash)} is taken by stage {other.name!r}; rename it")
    CATALOGUE.append(stage)
    return stage


def stage_named(name: str) -> StageDef:
    for stage in CATALOGUE:
        if stage.name == name:
            return stage
    raise ConfigError(f"stages: unknown {name!r}; choose from {names()}")


def stage_of(kind: str) -> StageDef:
    """The stage that plans cells of this kind.

    Raises:
        KeyError: no stage of the catalogue plans it (a stage added by a module not imported here).
    """
    for stage in CATALOGUE:
        if kind in stage.kinds:
            return stage
    raise KeyError(f"no stage plans cells of kind {kind!r}: import the module that adds it (stage_modules=[...])")


def parse_stages(wanted: Sequence[str], also: Sequence[str] = ()) -> list[StageDef]:
    """The stages asked for, in planning order; `also`: other names the caller accepts (the report).

    Raises:
        ConfigError: an unknown name.
    """
    unknown = [n for n in wanted if n not in names()]
    if unknown:
        raise ConfigError(f"stages: unknown {unknown}; choose from {[*names(), *also]}")
    return [s for s in CATALOGUE if s.name in wanted]


def plan_stages(study: StudyConfig, stages: Sequence[StageDef | str]) -> list[Cell]:
    """The cells the stages (or stage names) plan from the design, upstream first (retrieval plans its own later).

    Raises:
        ConfigError: a stage needs something the design does not say (e.g. cross_model without study.cross_model).
    """
    cells = []
    for stage in (stage_named(s) if isinstance(s, str) else s for s in stages):
        problem = stage.needs(study)
        if problem:
            raise ConfigError(problem)
        cells += stage.plan(study)
    return cells


def runnable(cells: Sequence[Cell], finished: set[str]) -> tuple[list[Cell], dict[str, str]]:
    """The cells whose inputs are finished or will run now; the rest, with why (a stage left out)."""
    keys, out, why = {c.key for c in cells} | finished, [], {}
    for cell in cells:  # upstream first, so a cell whose input was dropped is dropped too
        lost = [c for c in cell.inputs if c.key not in keys]
        if lost:
            keys.discard(cell.key)
            name = stage_of(lost[0].stage).name
            why[cell.label] = f"needs {lost[0].label}, which has not finished: add stage {name!r} to stages"
        else:
            out.append(cell)
    return out, why
