"""Cross-model transfer (Su et al. 2022, section 5): the study model's prompts projected into another model B.

Per task, B's own prompt trained from scratch (cross_source) is the reference:
    zero_shot   the projected prompt's score on B with no training; relative = zero_shot / own x 100
    init        the best score of B trained from the projected prompt (cross_transfer), with the same budget
    speedup     the own runs' steps to reach their best / the steps the projected init needs to reach the own
                mean best (see `convergence`; NaN when it never does)
A task the projector was trained on is marked: there the projection is fitted, not transferred.
"""

from __future__ import annotations

import pandas as pd

from spot_core.analysis.convergence import transfer_convergence
from spot_core.analysis.frames import check_curves, check_runs, nan_mean, stage
from spot_core.analysis.transfer import relative_performance

COLUMNS = [
    "task",
    "trained_on",
    "own",
    "n_own",
    "zero_shot",
    "relative",
    "init",
    "gain",
    "n_init",
    "speedup",
    "reached",
]


def projector_tasks(runs: pd.DataFrame) -> list[str]:
    """The tasks the study's projector was trained on (its run's task joins them with '+')."""
    rows = stage(check_runs(runs), "projector")
    return sorted({t for task in rows["task"] for t in task.split("+")})


def cross_model_table(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per task with B's own runs or projected runs (columns: COLUMNS), tasks in run order."""
    runs, curves = check_runs(runs), check_curves(curves)
    own, shots, inits = (stage(runs, s) for s in ("cross_source", "cross_zero_shot", "cross_transfer"))
    # B's own runs play the baseline and the projected inits the transfers of the convergence measure.
    as_grid = pd.concat([own.assign(stage="target", target=own["task"]), inits.assign(stage="transfer")])
    speed = (
        transfer_convergence(as_grid, curves)
        if len(as_grid)
        else pd.DataFrame(columns=["target", "speedup", "reached"])
    )
    trained = set(projector_tasks(runs))
    rows = []
    for task in dict.fromkeys([*own["task"], *shots["task"], *inits["task"]]):
        mine, shot, init = (f.loc[f["task"] == task, "score"] for f in (own, shots, inits))
        conv = speed[speed["target"] == task]
        o, z, i = nan_mean(mine), nan_mean(shot), nan_mean(init)
        rows.append(
            (task, task in trained, o, len(mine), z, relative_performance(z, o), i, i - o, len(init))
            + (nan_mean(conv["speedup"]), int(conv["reached"].sum()))
        )
    return pd.DataFrame(rows, columns=COLUMNS)
