"""MPT (Wang et al. 2023) as a source stage and a target method (spot_core.methods.mpt):
mpt_source  the shared prompt and each source task's rank-r factors, trained on the source tasks together
            (a run per source seed)
mpt         a target run per target and seed from the shared prompt (of the first source seed's run), training
            its own factors and, unless study.mpt.train_shared is off, the shared prompt
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spot_core.methods.mpt import tune_mpt_source
from spot_core.packing import ResultHook
from spot_core.report.methods import method_sections
from spot_core.stages.base import StageDef, run_tune, run_tune_pack, tune_spec
from spot_core.study import Cell, StudyConfig, initial, make_cell
from spot_core.tags import Stage
from spot_core.tasks import members
from spot_core.tracking import Tracker
from spot_core.tuning import RunSpec


def source_tasks(study: StudyConfig) -> str:
    """The mixture MPT's source run trains on: every task of the study's sources (a mixture source's members)."""
    return "+".join(dict.fromkeys(t.name for name in study.sources for t in members(name)))


def plan(study: StudyConfig) -> list[Cell]:
    """MPT's source runs, then a target run per target and seed from the first one's shared prompt."""
    tasks, rank = source_tasks(study), study.mpt.rank
    shared = [
        make_cell(study, Stage.MPT_SOURCE, tasks, seed, trainer=study.mpt.trainer or study.source_trainer,
                  init=initial(tasks, study.prompt.source_init), method={"rank": rank})
        for seed in study.source_seeds
    ]  # fmt: skip
    method = {"rank": rank, "train_shared": study.mpt.train_shared}
    return shared + [
        make_cell(study, Stage.MPT, t, s, trainer=study.target_trainer, target=t, source=shared[0], method=method,
                  origin="mpt")
        for t in study.targets
        for s in study.seeds
    ]  # fmt: skip


def spec(study: StudyConfig, cell: Cell, root: Path) -> dict[str, Any]:
    """The cell's kind and run; a target run's prompt is the shared prompt times factors of rank study.mpt.rank."""
    job = tune_spec(study, cell, root)
    if cell.stage == Stage.MPT:
        job["prompt"].update(rank=study.mpt.rank, train_shared=study.mpt.train_shared)
    return {"kind": str(cell.stage), "job": job, "rank": study.mpt.rank}


def run(spec: dict[str, Any], out_dir: Path, tracker: Tracker) -> dict[str, Any]:
    if Stage(spec["kind"]) is Stage.MPT_SOURCE:
        return tune_mpt_source(RunSpec(**spec["job"]), spec["rank"], out_dir, tracker)
    return run_tune(spec["job"], out_dir, tracker)


def run_pack(
    specs: list[dict[str, Any]], out_dirs: list[Path], trackers: list[Tracker], on_result: ResultHook
) -> list[dict[str, Any] | Exception]:
    """A pack of MPT cells: the target runs train as one pack (their factored prompts are prompts like any other);
    a shared-prompt run, whose examples each take their own task's prompt, trains alone first."""
    results: list[dict[str, Any] | Exception | None] = [None] * len(specs)
    targets = [i for i, spec in enumerate(specs) if Stage(spec["kind"]) is Stage.MPT]
    for i in (i for i in range(len(specs)) if i not in targets):
        try:
            results[i] = run(specs[i], out_dirs[i], trackers[i])
        except Exception as error:  # noqa: BLE001 - this cell's own failure: the pack's other cells go on
            results[i] = error
        on_result(i, results[i])
    if targets:
        packed = run_tune_pack(
            [specs[i]["job"] for i in targets],
            [out_dirs[i] for i in targets],
            [trackers[i] for i in targets],
            lambda j, result: on_result(targets[j], result),
        )
        for i, result in zip(targets, packed, strict=True):
            results[i] = result
    return results  # type: ignore[return-value]


def needs(study: StudyConfig) -> str | None:
    if len(source_tasks(study).split("+")) < 2:
        return "stage mpt learns a prompt shared by the source tasks: study.sources must hold at least two tasks"
    return None


STAGE = StageDef(
    "mpt", (Stage.MPT_SOURCE, Stage.MPT), plan, spec, run, needs=needs, run_pack=run_pack, report=method_sections
)
