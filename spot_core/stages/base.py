"""What a member of the stage catalogue says about itself (`StageDef`), and the jobs stages share."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from spot_core.analysis.frames import StudyResults
from spot_core.cost import Work, trained_work
from spot_core.packing import ResultHook
from spot_core.study import Cell, StudyConfig, run_spec
from spot_core.tracking import Tracker
from spot_core.tuning import RunSpec, evaluate_prompt, tune_prompt, tune_prompts

if TYPE_CHECKING:  # the report's modules import matplotlib, which a Ray trial worker never needs
    from spot_core.report.document import Section

Planner = Callable[[StudyConfig], list[Cell]]
LatePlanner = Callable[[StudyConfig, Path, set[str]], tuple[list[Cell], dict[str, str]]]
SpecBuilder = Callable[[StudyConfig, Cell, Path], dict[str, Any]]
Runner = Callable[[dict[str, Any], Path, Tracker], dict[str, Any]]
PackRunner = Callable[[list[dict[str, Any]], list[Path], list[Tracker], ResultHook], list[dict[str, Any] | Exception]]
Pricer = Callable[[Cell, StudyConfig], Work]
ReportSection = Callable[[StudyResults, pd.DataFrame, Path], "list[Section]"]
Tags = dict[str, str]


@functools.cache
def report_of(module: str, name: str) -> ReportSection:
    """The report section `name` of `module`, imported when a report is written: a Ray trial worker imports every
    stage but never writes a report (the report's modules import matplotlib and scipy). The same function for the
    same name, so that a section two stages share is still written once."""

    def sections(results: StudyResults, runs: pd.DataFrame, out: Path) -> list[Section]:
        return getattr(importlib.import_module(module), name)(results, runs, out)

    sections.__qualname__ = sections.__name__ = name
    return sections


@dataclass(frozen=True)
class RunArtifact:
    """What a stage's finished runs leave for the report: the ledger fetches `file` from each of its runs that
    logged it (`file` None: each run's tags alone) and puts `read(pairs)` into `StudyResults.artifacts[name]`.

    Attributes:
        name: its key in `StudyResults.artifacts`.
        file: a run folder's file (a `RunDir` name) that the runs logged as an MLflow artifact, or None.
        read: the (tags, local file or None) pairs of the runs that have it -> what the report sections read.
    """

    name: str
    file: str | None
    read: Callable[[list[tuple[Tags, Path | None]]], Any]


@dataclass(frozen=True)
class StageDef:
    """A stage of a study: everything the driver, the plan, the cost, the ledger and the report know of it.

    Attributes:
        name: its name in `stages=[...]`.
        kinds: the kinds of the cells it plans (their `stage` tag), most upstream first.
        plan: the cells it plans from the study's design, upstream first (cells of other stages they start from
            are planned again by their own stage: keys make them the same cells).
        spec: what one of its cells needs to run, as plain values (it travels to a Ray worker).
        run: runs one cell from its spec in this process, writing into the cell's folder; returns its result
            (`best/val_score` among it).
        plan_later: cells that can only be planned from finished cells (retrieval ranks the finished source and
            target runs' task embeddings): called once, when no cell of `waits_for` is pending or running, with
            the study's output root and the finished keys; returns the cells and, per target it could not plan
            for, why.
        waits_for: the cell kinds `plan_later` needs settled.
        designed: with `plan_later`, the cells it will plan as the design implies them before any run has
            finished (which runs they start from may change, not how many): what the plan counts and prices.
        needs: what the study's design must say for this stage to plan (None: nothing), and the message if not.
        core: one of SPoT's stages, which make up a study's design: once all of them have been asked for, the
            report's coverage line counts the cells planned.
        run_pack: runs several of its cells on one backbone as one pack (`spot_core.packing`), each writing into
            its own folder and tracker, calling the hook with each one's index and result (or the error that
            stopped it alone) as it leaves the pack; returns them all. None: its cells run one per trial.
        work: what one of its cells runs through its model (steps, batch, evaluations), for the plan's cost
            and the progress ETA; default: its trainer's steps and evaluations (`cost.trained_work`).
        prompt_per_example: its cells' prompts depend on the input (ATTEMPT's), so a step runs the prompt once
            per example even where the model could run it once per batch.
        embedded: its runs' task embeddings are what retrieval and the report compare (source and target).
        artifacts: what its finished runs leave for the report, read through the ledger.
        report: its section of the study's report, from the results and the checked runs table, writing
            figures and tables under the folder it is given; None: it shows in the core sections (or nowhere).
        read_tags: fills in tags that runs logged by an older version lack (the ledger reads every run of its
            kinds through it); None: the tags as logged.
    """

    name: str
    kinds: tuple[str, ...]
    plan: Planner
    spec: SpecBuilder
    run: Runner
    plan_later: LatePlanner | None = None
    waits_for: tuple[str, ...] = ()
    designed: Planner | None = None
    needs: Callable[[StudyConfig], str | None] = lambda study: None
    core: bool = False
    run_pack: PackRunner | None = None
    work: Pricer = trained_work
    prompt_per_example: bool = False
    embedded: bool = False
    artifacts: tuple[RunArtifact, ...] = ()
    report: ReportSection | None = None
    read_tags: Callable[[Tags], Tags] | None = None

    def run_cells(
        self, specs: list[dict[str, Any]], out_dirs: list[Path], trackers: list[Tracker], on_result: ResultHook
    ) -> list[dict[str, Any] | Exception]:
        """Runs a trial's cells of this stage, calling `on_result(i, result or error)` as each one ends, and returns
        them all. Several: as a pack (`run_pack`), or one after another, a cell that fails failing alone. One: by
        `run` (the lone run, the packs' reference), its error the trial's, which Ray retries."""
        if len(specs) == 1:
            result = self.run(specs[0], out_dirs[0], trackers[0])
            on_result(0, result)
            return [result]
        if self.run_pack is not None:
            return self.run_pack(specs, out_dirs, trackers, on_result)
        results: list[dict[str, Any] | Exception] = []
        for i, (spec, out_dir, tracker) in enumerate(zip(specs, out_dirs, trackers, strict=True)):
            try:
                result: dict[str, Any] | Exception = self.run(spec, out_dir, tracker)
            except Exception as error:  # noqa: BLE001 - this cell's own failure: the trial's other cells go on
                result = error
            on_result(i, result)
            results.append(result)
        return results


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
