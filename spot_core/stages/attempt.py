"""ATTEMPT (Asai et al. 2022) as a target method: a run per target and seed that trains a target prompt and an
attention over frozen source prompts (spot_core.methods.attempt), with the target stage's trainer.

Which source runs it mixes (`study.attempt.top_k`): every source of the study (its first source seed's runs), or
the k source runs retrieval ranks first for the target (SPoT's task-embedding similarity). Either way the cells are
planned once the source and target runs have settled, from the runs that finished.

A cell's key holds the attention's settings (`study.attempt`: attention size, temperature, bias, train_norm) and,
as its init, how the target prompt starts (`study.attempt.target_init`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from spot_core.analysis.frames import ATTENTION_COLUMNS
from spot_core.methods.attempt import AttemptConfig, tune_attempt
from spot_core.run_dir import RunDir
from spot_core.stages import retrieval, source
from spot_core.stages.base import RunArtifact, StageDef, Tags, report_of, tune_spec
from spot_core.study import Cell, StudyConfig, make_cell
from spot_core.tags import ATTENTION, Stage
from spot_core.tracking import Tracker
from spot_core.tuning import RunSpec


def attempt_cells(study: StudyConfig, target: str, sources: list[Cell]) -> list[Cell]:
    """A run per seed of `target` mixing the prompts of `sources`."""
    config = study.attempt
    # the target prompt's start is the cell's init (in its key, and the run's prompt.init)
    method = {"attention_size": config.attention_size, "temperature": config.temperature, "bias": config.bias,
              "train_norm": config.train_norm}  # fmt: skip
    origin = f"attempt-top{config.top_k}" if config.top_k else "attempt-all"
    return [
        make_cell(study, Stage.ATTEMPT, target, seed, trainer=study.target_trainer, init=config.target_init.value,
                  target=target, parts=tuple(sources), k=config.top_k or 0, method=method, origin=origin)
        for seed in study.seeds
    ]  # fmt: skip


def designed(study: StudyConfig) -> list[Cell]:
    """The cells the design implies before any run has finished (for a plan's counts): every target mixing the
    first source seed's runs, or, for top-k, k of the source runs (the ranking changes which, not how many)."""
    k = study.attempt.top_k
    runs = source.plan(study)
    mixed = [c for c in runs if c.seed == study.source_seeds[0]] if k is None else runs[:k]
    return [c for t in study.targets for c in attempt_cells(study, t, mixed)]


def plan_later(study: StudyConfig, root: Path, done: set[str]) -> tuple[list[Cell], dict[str, str]]:
    """The ATTEMPT cells from the finished source runs (and, for top-k, the finished target runs' rankings)."""
    k = study.attempt.top_k
    if k is None:
        first = [c for c in source.plan(study) if c.seed == study.source_seeds[0] and c.key in done]
        mixed = {t: first for t in study.targets} if first else {}
        why = "no finished source runs to mix"
    else:
        ranked = retrieval.rankings(study, root, done)
        mixed = {t: [c for c, _ in runs[:k]] for t, runs in ranked.items()}
        why = "no finished source and target runs to rank"
    cells = [c for t, runs in mixed.items() for c in attempt_cells(study, t, runs)]
    return cells, {f"attempt:{t}": why for t in study.targets if t not in mixed}


def spec(study: StudyConfig, cell: Cell, root: Path) -> dict[str, Any]:
    """The target's run and the source prompts it mixes."""
    return {
        "job": tune_spec(study, cell, root),
        "sources": [str(c.out_dir(root) / c.prompt_file) for c in cell.parts],
        "names": [c.task for c in cell.parts],
        "attempt": asdict(study.attempt),
    }


def run(spec: dict[str, Any], out_dir: Path, tracker: Tracker) -> dict[str, Any]:
    config = AttemptConfig(**spec["attempt"])
    return tune_attempt(RunSpec(**spec["job"]), spec["sources"], spec["names"], config, out_dir, tracker)


def attention(runs: list[tuple[Tags, Path | None]]) -> pd.DataFrame:
    """Each run's mean attention over the prompts it mixed (`RunDir.ATTENTION`), long form (ATTENTION_COLUMNS); a
    run without validation examples logged an empty mean: no rows."""
    rows = []
    for tags, path in runs:
        record = json.loads(path.read_text())
        rows += [(tags["cell_key"], p, float(w)) for p, w in zip(record["prompts"], record["mean"], strict=False)]
    return pd.DataFrame(rows, columns=list(ATTENTION_COLUMNS))


STAGE = StageDef(
    "attempt",
    (Stage.ATTEMPT,),
    plan=lambda study: [],
    spec=spec,
    run=run,
    plan_later=plan_later,
    waits_for=(Stage.SOURCE, Stage.TARGET),
    designed=designed,
    prompt_per_example=True,  # the prompt depends on the input (spot_core.prompted): once per example
    artifacts=(RunArtifact(ATTENTION, RunDir.ATTENTION, attention),),
    report=report_of("spot_core.report.methods", "method_sections"),
)
