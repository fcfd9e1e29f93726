"""What a member of the stage catalogue says about itself (`StageDef`), and the jobs stages share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spot_core.packing import ResultHook
from spot_core.study import Cell, StudyConfig, run_spec
from spot_core.tags import Stage
from spot_core.tracking import Tracker
from spot_core.tuning import RunSpec, evaluate_prompt, tune_prompt, tune_prompts

Planner = Callable[[StudyConfig], list[Cell]]
LatePlanner = Callable[[StudyConfig, Path, set[str]], tuple[list[Cell], dict[str, str]]]
SpecBuilder = Callable[[StudyConfig, Cell, Path], dict[str, Any]]
Runner = Callable[[dict[str, Any], Path, Tracker], dict[str, Any]]
PackRunner = Callable[[list[dict[str, Any]], list[Path], list[Tracker], ResultHook], list[dict[str, Any] | Exception]]


@dataclass(frozen=True)
class StageDef:
    """A stage of a study.

    Attributes:
        name: its name in `stages=[...]`.
        kinds: the stages of the cells it plans (their `stage` tag), most upstream first.
        plan: the cells it plans from the study's design, upstream first (cells of other stages they start from
            are planned again by their own stage: keys make them the same cells).
        spec: what one of its cells needs to run, as plain values (it travels to a Ray worker).
        run: runs one cell from its spec in this process, writing into the cell's folder; returns its result
            (`best/val_score` among it).
        plan_later: cells that can only be planned from finished cells (retrieval ranks the finished source and
            target runs' task embeddings): called once, when no cell of `waits_for` is pending or running, with
            the study's output root and the finished keys; returns the cells and, per target it could not plan
            for, why.
        waits_for: the cell stages `plan_later` needs settled.
        needs: what the study's design must say for this stage to plan (None: nothing), and the message if not.
        core: one of SPoT's stages, which make up a study's design: once all of them have been asked for, the
            report's coverage line counts the cells planned.
        run_pack: runs several of its cells on one backbone as one pack (`spot_core.packing`), each writing into
            its own folder and tracker, calling the hook with each one's index and result (or the error that
            stopped it alone) as it leaves the pack; returns them all. None: its cells run one per trial.
    """

    name: str
    kinds: tuple[Stage, ...]
    plan: Planner
    spec: SpecBuilder
    run: Runner
    plan_later: LatePlanner | None = None
    waits_for: tuple[Stage, ...] = ()
    needs: Callable[[StudyConfig], str | None] = lambda study: None
    core: bool = False
    run_pack: PackRunner | None = None


def tune_spec(study: StudyConfig, cell: Cell, root: Path) -> dict[str, Any]:
    """A prompt-tuning (or scoring) cell's RunSpec, as plain values."""
    return asdict(run_spec(study, cell, root))


def run_tune(spec: dict[str, Any], out_dir: Path, tracker: Tracker) -> dict[str, Any]:
    return tune_prompt(RunSpec(**spec), out_dir, tracker)


def run_tune_pack(
    specs: list[dict[str, Any]], out_dirs: list[Path], trackers: list[Tracker], on_result: ResultHook
) -> list[dict[str, Any] | Exception]:
    return tune_prompts([RunSpec(**spec) for spec in specs], out_dirs, trackers, on_result)


def run_evaluate(spec: dict[str, Any], out_dir: Path, tracker: Tracker) -> dict[str, Any]:
    """Scores the cell's initial prompt, no training."""
    return evaluate_prompt(RunSpec(**spec), out_dir, tracker)
