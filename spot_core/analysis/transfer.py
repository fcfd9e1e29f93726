"""Transferability: how well each source task's prompt starts each target (SPoT section 3, Su et al. 2022).

Per (source task, target) the transfer runs of that pair are pooled: every target seed, and every source run
(source seed) when there are several. Against the target's baseline (prompt tuning from scratch):
    gain                        mean - base
    relative error reduction    (mean - base) / (100 - base) * 100   (MNLI -> CB: (97.0 - 92.7) / 7.3 = 58.9 %)
    relative performance        mean / base * 100                    (Su et al.: transferred / own prompt)
Std is the sample std (ddof=1), so one run gives NaN, not 0: one value says nothing about the spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spot_core.analysis.frames import check_runs, mean_std_n, order, stage


def relative_error_reduction(score, base):
    """(score - base) / (100 - base) in percent; NaN where the baseline is already perfect (base = 100).

    Takes floats or array-likes (elementwise); returns a float or a numpy array.
    """
    score, base = np.asarray(score, dtype=float), np.asarray(base, dtype=float)
    headroom = np.where(base == 100.0, np.nan, 100.0 - base)
    out = (score - base) / headroom * 100.0
    return out if out.ndim else float(out)


def relative_performance(score, base):
    """Su et al.'s relative performance, score / base in percent; NaN where base = 0."""
    score, base = np.asarray(score, dtype=float), np.asarray(base, dtype=float)
    out = score / np.where(base == 0.0, np.nan, base) * 100.0
    return out if out.ndim else float(out)


def baseline_scores(runs: pd.DataFrame, targets: Sequence[str] | None = None) -> pd.DataFrame:
    """The baseline per target: its stage "target" runs (one per seed).

    Returns:
        DataFrame indexed by target (the given order, default sorted) with columns mean, std, n;
        a target without runs has mean = std = NaN and n = 0.
    """
    base = stage(check_runs(runs), "target")
    targets = order(targets, base["target"])
    table = mean_std_n(base, ["target"]).reindex(targets)
    table["n"] = table["n"].fillna(0).astype(int)
    table.index.name = "target"
    return table


def transfer_scores(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (source task, target) that has transfer runs.

    Returns:
        DataFrame with columns source, target, mean, std, n (transfer runs pooled over target seeds and
        source runs), base_mean, base_std, base_n, gain, rel (relative error reduction, %), relative_performance
        (%). A target without a baseline gives NaN gains with base_n = 0.
    """
    runs = check_runs(runs)
    scores = mean_std_n(stage(runs, "transfer"), ["source", "target"]).reset_index()
    base = baseline_scores(runs, sorted(set(scores["target"]))).add_prefix("base_")
    table = scores.merge(base, left_on="target", right_index=True, how="left")
    table["base_n"] = table["base_n"].fillna(0).astype(int)
    table["gain"] = table["mean"] - table["base_mean"]
    table["rel"] = relative_error_reduction(table["mean"], table["base_mean"])
    table["relative_performance"] = relative_performance(table["mean"], table["base_mean"])
    return table


@dataclass(frozen=True)
class TransferMatrices:
    """Sources x targets matrices (rows and columns in the same order in each) and the baseline per target.

    Attributes:
        mean, std: target score over the pair's transfer runs (std ddof=1: NaN for one run).
        n: how many transfer runs each cell rests on (0 for a missing cell, whose other entries are NaN).
        gain: mean - baseline mean. rel: relative error reduction (%). relative_performance: mean / base (%).
        baseline: indexed by target, columns mean, std, n.
    """

    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    gain: pd.DataFrame
    rel: pd.DataFrame
    relative_performance: pd.DataFrame
    baseline: pd.DataFrame


def transfer_matrices(
    runs: pd.DataFrame, sources: Sequence[str] | None = None, targets: Sequence[str] | None = None
) -> TransferMatrices:
    """The transferability matrices of a study, complete or partial.

    Args:
        runs: the runs table (see `spot_core.analysis.frames`).
        sources: row order (source tasks); default the transfer runs' sources, sorted.
        targets: column order; default every target with baseline or transfer runs, sorted.
    """
    runs = check_runs(runs)
    pairs = transfer_scores(runs)
    sources = order(sources, pairs["source"])
    targets = order(targets, pd.concat([pairs["target"], stage(runs, "target")["target"]]))

    def matrix(column: str) -> pd.DataFrame:
        wide = pairs.pivot(index="source", columns="target", values=column) if len(pairs) else pd.DataFrame()
        wide = wide.reindex(index=sources, columns=targets).astype(float)
        return wide.rename_axis(index="source", columns="target")

    return TransferMatrices(
        mean=matrix("mean"),
        std=matrix("std"),
        n=matrix("n").fillna(0).astype(int),
        gain=matrix("gain"),
        rel=matrix("rel"),
        relative_performance=matrix("relative_performance"),
        baseline=baseline_scores(runs, targets),
    )
