"""MPT (Wang et al. 2023) as a source stage and a target method (spot_core.methods.mpt):
mpt_source  the shared prompt and each source task's rank-r factors, trained on the source tasks together
            (a run per source seed); with study.mpt.distill (default), distilled from the study's single-task
            source prompts (the first source seed's run of each task), so it waits for those source runs
mpt         a target run per target and seed from the shared prompt (of the first source seed's run), its factors
            starting as study.mpt.target_init says, training them and, unless study.mpt.train_shared is off, the
            shared prompt

Distillation needs each source task's own prompt: a source that is a mixture gives its member tasks none (its run
learns one prompt for all of them), so a study whose MPT distils must name each member task as a source itself;
`needs` refuses it otherwise, naming the tasks and both fixes (add them, or study.mpt.distill=false).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from spot_core.cost import Work, trained_work
from spot_core.errors import ConfigError
from spot_core.methods.mpt import MPTConfig, target_factors, tune_mpt_source
from spot_core.packing import ResultHook
from spot_core.stages import source
from spot_core.stages.base import StageDef, report_of, run_tune, run_tune_pack, tune_spec
from spot_core.study import Cell, StudyConfig, initial, make_cell
from spot_core.tags import Stage
from spot_core.tasks import members
from spot_core.tracking import Tracker
from spot_core.tuning import RunSpec


def source_tasks(study: StudyConfig) -> str:
    """The mixture MPT's source run trains on: every task of the study's sources (a mixture source's members)."""
    return "+".join(dict.fromkeys(t.name for name in study.sources for t in members(name)))


def teachers(study: StudyConfig) -> tuple[Cell, ...]:
    """The source runs MPT's source run distils, one per task of `source_tasks` in its order: each task's own
    source run of the first source seed.

    Raises:
        ConfigError: a task has no source run of its own (see the module).
    """
    problem = missing_teachers(study)
    if problem:
        raise ConfigError(problem)
    return tuple(source.source_cell(study, t, study.source_seeds[0]) for t in source_tasks(study).split("+"))


def missing_teachers(study: StudyConfig) -> str | None:
    """Why MPT's distillation has no teacher for some source task (a member of a mixture source only), or None."""
    lacking = [t for t in source_tasks(study).split("+") if t not in study.sources]
    if not lacking:
        return None
    return (
        f"stage mpt distils each source task's own prompt (study.mpt.distill), and {lacking} have none: they are "
        f"members of a mixture among study.sources {list(study.sources)}. Add them to study.sources, or set "
        "study.mpt.distill=false (the multitask loss alone)"
    )


def source_method(config: MPTConfig) -> dict[str, Any]:
    """What of the source run's settings enters its key (the distillation's weight and temperature only where
    it distils)."""
    if not config.distill:
        return {"rank": config.rank, "distill": False}
    return {"rank": config.rank, "distill": True, "distill_weight": config.distill_weight,
            "distill_temperature": config.distill_temperature}  # fmt: skip


def plan(study: StudyConfig) -> list[Cell]:
    """MPT's source runs (after the source runs they distil), then a target run per target and seed from the first
    one's shared prompt."""
    tasks, config = source_tasks(study), study.mpt
    parts = teachers(study) if config.distill else ()
    shared = [
        make_cell(study, Stage.MPT_SOURCE, tasks, seed, trainer=config.trainer or study.source_trainer,
                  init=initial(tasks, study.prompt.source_init), parts=parts, method=source_method(config))
        for seed in study.source_seeds
    ]  # fmt: skip
    method = {"rank": config.rank, "train_shared": config.train_shared, "target_init": config.target_init}
    return shared + [
        make_cell(study, Stage.MPT, t, s, trainer=study.target_trainer, target=t, source=shared[0], method=method,
                  origin="mpt")
        for t in study.targets
        for s in study.seeds
    ]  # fmt: skip


def spec(study: StudyConfig, cell: Cell, root: Path) -> dict[str, Any]:
    """The cell's kind and run. A source run: the teachers' prompt files, in its tasks' order. A target run: the
    shared prompt times factors of rank study.mpt.rank, starting from the source run's (study.mpt.target_init)."""
    job, config = tune_spec(study, cell, root), study.mpt
    out: dict[str, Any] = {"kind": str(cell.stage), "job": job}
    if cell.stage == Stage.MPT_SOURCE:
        out["teachers"] = [str(c.out_dir(root) / c.prompt_file) for c in cell.parts]
        out["mpt"] = {k: getattr(config, k) for k in ("rank", "distill", "distill_weight", "distill_temperature")}
        out["mpt"]["distill"] = bool(cell.parts)  # the cell's own: teachers only where it distils
    else:
        shared = cell.source
        assert shared is not None  # an MPT target starts from the source run
        factors = target_factors(config, shared.task, shared.run_dir(root).best_module)
        job["prompt"].update(rank=config.rank, train_shared=config.train_shared, **factors)
    return out


def run(spec: dict[str, Any], out_dir: Path, tracker: Tracker) -> dict[str, Any]:
    if Stage(spec["kind"]) is Stage.MPT_SOURCE:
        config = MPTConfig(**spec["mpt"])
        return tune_mpt_source(RunSpec(**spec["job"]), config, out_dir, tracker, spec["teachers"])
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


def work(cell: Cell, study: StudyConfig) -> Work:
    """Its trainer's steps and evaluations (`cost.trained_work`); a distilling source run also runs each step's
    batch through its teachers: a forward pass without gradients per step."""
    done = trained_work(cell, study)
    return replace(done, forward_steps=done.steps) if cell.stage == Stage.MPT_SOURCE and cell.parts else done


def needs(study: StudyConfig) -> str | None:
    tasks = source_tasks(study).split("+")
    if len(tasks) < 2:
        return "stage mpt learns a prompt shared by the source tasks: study.sources must hold at least two tasks"
    exact = study.mpt.exact_task
    if exact is not None and exact not in tasks:
        return f"study.mpt.target_init=exact:{exact}: not one of MPT's source tasks {tasks}"
    return missing_teachers(study) if study.mpt.distill else None


STAGE = StageDef(
    "mpt",
    (Stage.MPT_SOURCE, Stage.MPT),
    plan,
    spec,
    run,
    needs=needs,
    run_pack=run_pack,
    work=work,
    report=report_of("spot_core.report.methods", "method_sections"),
)
