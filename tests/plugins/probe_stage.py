"""A stage added from outside the package (`stage_modules=[probe_stage]`), the example of docs/stages.md.

    probe           every source run's best prompt scored on its own task's validation split, no training
    probe_transfer  planned once the probes have settled: each target trained from the source run whose probe
                    scored best (and, for the tests, its trial worker killed once mid-run when
                    SPOT_PROBE_KILL_MARKER names a file that does not exist yet)
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd

from spot_core.report.document import Section
from spot_core.report.tables import write_table
from spot_core.run_dir import RunDir
from spot_core.stages.base import RunArtifact, StageDef, run_evaluate, run_tune, tune_spec
from spot_core.stages.source import plan as plan_sources
from spot_core.study import Cell, StudyConfig, make_cell

KILL_MARKER = "SPOT_PROBE_KILL_MARKER"


def probes(study: StudyConfig) -> list[Cell]:
    """A cell per source run: its prompt scored on its own task (the trainer only evaluates)."""
    scored = dict(trainer=study.target_trainer, trained=False)
    return [make_cell(study, "probe", c.task, c.seed, source=c, target=c.task, **scored) for c in plan_sources(study)]


def transfers(study: StudyConfig, best: Cell) -> list[Cell]:
    return [
        make_cell(study, "probe_transfer", t, s, trainer=study.target_trainer, target=t, source=best.source)
        for t in study.targets
        for s in study.seeds
    ]


def plan_later(study: StudyConfig, root: Path, done: set[str]) -> tuple[list[Cell], dict[str, str]]:
    """The targets' runs from the best-probed source run, read from the finished probes' folders."""
    finished = [c for c in probes(study) if c.key in done]
    if not finished:
        return [], {f"probe_transfer:{t}": "no finished probe" for t in study.targets}
    best = max(finished, key=lambda c: c.run_dir(root).result()["best/val_score"])
    return transfers(study, best), {}


class KillOnce:
    """A tracker that kills its own process (the trial's Ray worker) at the first evaluation after step 2's
    checkpoint, once: the marker file says it happened."""

    def __init__(self, tracker, marker: Path):
        self.tracker, self.marker = tracker, marker

    def __getattr__(self, name):
        return getattr(self.tracker, name)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.tracker.log_metrics(metrics, step)
        if step > 2 and "val/score" in metrics and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


def spec(study: StudyConfig, cell: Cell, root: Path) -> dict:
    return {"kind": str(cell.stage), "job": tune_spec(study, cell, root)}


def run(spec: dict, out_dir: Path, tracker) -> dict:
    if spec["kind"] == "probe":
        return run_evaluate(spec["job"], out_dir, tracker)
    marker = os.environ.get(KILL_MARKER)
    return run_tune(spec["job"], out_dir, KillOnce(tracker, Path(marker)) if marker else tracker)


def scores(runs: list[tuple[dict, Path | None]]) -> dict[str, float]:
    """Probe run key -> its best score, from the result file each run logged."""
    return {tags["cell_key"]: json.loads(path.read_text())["best/val_score"] for tags, path in runs}


def section(results, runs: pd.DataFrame, out: Path) -> list[Section]:
    probed = results.artifact("probe_scores", {})
    if not probed:
        return []
    table = runs[runs["key"].isin(probed)].set_index("key")[["task", "seed", "score"]]
    written = write_table(table, out / "tables/probes", caption="Source prompts scored on their own tasks")
    return [Section("Probes", f"{len(probed)} source prompts probed.", [], [written[1]])]


def needs(study: StudyConfig) -> str | None:
    return None if study.targets else "stage probe needs targets"


STAGE = StageDef(
    "probe",
    ("probe", "probe_transfer"),
    plan=probes,
    spec=spec,
    run=run,
    plan_later=plan_later,
    waits_for=("probe",),
    designed=lambda study: transfers(study, probes(study)[0]),
    needs=needs,
    artifacts=(RunArtifact("probe_scores", RunDir.RESULT, scores),),
    report=section,
)
