"""Convergence speed-up of transferred prompts (Su et al. 2022), from the per-evaluation validation scores.

For a target:
    threshold       the mean over its baseline runs of each run's best score (as recorded: the runs table's score)
    baseline steps  the mean over its baseline runs of the first step at which each reaches its own best
For a transfer run: the first evaluated step at which its score reaches the threshold, and
    speed-up = baseline steps / transfer steps.
A run that never reaches the threshold is "never": step and speed-up NaN, reached False. Both step counts are
floored at the run's evaluation interval (its first evaluated step after 0): a transfer already there at step 0
was only seen to be there at the resolution of the evaluations, and the floor keeps the ratio finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spot_core.analysis.frames import check_curves, check_runs, order, pair_matrix, stage

TOLERANCE = 1e-9  # the threshold is a mean of scores; equality must survive its rounding


def first_step_reaching(steps: Sequence[int], scores: Sequence[float], threshold: float) -> float:
    """The first step (steps ascending) whose score is >= threshold; NaN when none is."""
    reached = np.flatnonzero(np.asarray(scores, dtype=float) >= threshold - TOLERANCE)
    return float(np.asarray(steps)[reached[0]]) if reached.size else np.nan


def eval_interval(steps: Sequence[int]) -> int:
    """The first evaluated step after 0 (1 when the curve has none)."""
    positive = [s for s in steps if s > 0]
    return min(positive) if positive else 1


def baseline_convergence(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Per target, from its baseline runs' curves.

    Returns:
        DataFrame indexed by target with columns threshold (mean best score), steps (mean first step reaching
        its own best, floored at the eval interval) and n (baseline runs with a curve).
    """
    base = stage(check_runs(runs), "target")
    curves = check_curves(curves)
    rows = {}
    for target, group in base.groupby("target", sort=True):
        bests, steps = [], []
        recorded = dict(zip(group["key"], group["score"], strict=True))
        for key, curve in curves[curves["key"].isin(group["key"])].groupby("key", sort=False):
            # The run's recorded best (what the matrices show): the curve's step 0 counts only where the run let
            # its initial prompt compete for the best checkpoint (trainer.best_includes_init).
            best = recorded[key]
            bests.append(best)
            step = first_step_reaching(curve["step"], curve["score"], best)
            steps.append(max(step, eval_interval(curve["step"])))
        if bests:
            rows[target] = (float(np.mean(bests)), float(np.mean(steps)), len(bests))
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["threshold", "steps", "n"])
    return table.rename_axis("target").astype({"n": int})


def transfer_convergence(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per transfer run with a curve whose target has a baseline curve.

    Returns:
        DataFrame with columns key, source, source_key, target, seed, threshold, baseline_steps, step (first
        step reaching the threshold; NaN: never), reached, speedup (baseline_steps / max(step, eval interval)).
    """
    runs, curves = check_runs(runs), check_curves(curves)
    base = baseline_convergence(runs, curves)
    by_key = dict(tuple(curves.groupby("key", sort=False)))
    rows = []
    for run in stage(runs, "transfer").itertuples(index=False):
        if run.key not in by_key or run.target not in base.index:
            continue  # unmeasurable, which is not the same as "never"
        curve, (threshold, base_steps) = by_key[run.key], base.loc[run.target, ["threshold", "steps"]]
        step = first_step_reaching(curve["step"], curve["score"], threshold)
        speedup = base_steps / max(step, eval_interval(curve["step"])) if not np.isnan(step) else np.nan
        rows.append(
            (run.key, run.source, run.source_key, run.target, run.seed, threshold, base_steps, step)
            + (not np.isnan(step), speedup)
        )
    columns = ["key", "source", "source_key", "target", "seed", "threshold", "baseline_steps", "step", "reached"]
    return pd.DataFrame(rows, columns=columns + ["speedup"]).astype({"reached": bool, "step": float})


@dataclass(frozen=True)
class Convergence:
    """Sources x targets summaries of `per_run` (a `transfer_convergence` table).

    Attributes:
        speedup, steps: means over the pair's runs that reached the threshold (NaN when none did).
        n_reached: how many of the pair's runs reached it. n: how many were measured (0: missing cell).
    """

    per_run: pd.DataFrame
    speedup: pd.DataFrame
    steps: pd.DataFrame
    n_reached: pd.DataFrame
    n: pd.DataFrame


def convergence(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    sources: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
) -> Convergence:
    """Convergence speed-up of every transfer run and its sources x targets means (order as given, default sorted)."""
    per_run = transfer_convergence(runs, curves)
    sources, targets = order(sources, per_run["source"]), order(targets, per_run["target"])
    grouped = per_run.groupby(["source", "target"])

    def matrix(values: pd.Series) -> pd.DataFrame:
        return pair_matrix(values, sources, targets)

    return Convergence(
        per_run=per_run,
        speedup=matrix(grouped["speedup"].mean()),
        steps=matrix(grouped["step"].mean()),
        n_reached=matrix(grouped["reached"].sum()).fillna(0).astype(int),
        n=matrix(grouped["key"].count()).fillna(0).astype(int),
    )
