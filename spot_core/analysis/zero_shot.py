"""Zero-shot transfer (Su et al. 2022): a source prompt used on a target as it is, with no training.

Relative performance = zero-shot score / the target's own trained prompt score (the mean best score of its
baseline runs), in percent: 100 means the source prompt does as well as a prompt trained on the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from spot_core.analysis.frames import check_runs, order, pair_matrix, stage
from spot_core.analysis.transfer import relative_performance


@dataclass(frozen=True)
class ZeroShot:
    """Sources x targets.

    Attributes:
        score: mean zero-shot score over the source's runs (NaN: no run).
        relative: score / own[target] x 100 (NaN where either is missing or own is 0).
        n: zero-shot runs behind each cell.
        own: target -> mean best score of its own (baseline) prompts.
    """

    score: pd.DataFrame
    relative: pd.DataFrame
    n: pd.DataFrame
    own: pd.Series


def zero_shot(
    runs: pd.DataFrame, sources: Sequence[str] | None = None, targets: Sequence[str] | None = None
) -> ZeroShot:
    """Zero-shot scores and relative performance from the `zero_shot` and `target` runs."""
    runs = check_runs(runs)
    shots = stage(runs, "zero_shot")
    sources, targets = order(sources, shots["source"]), order(targets, shots["target"])
    grouped = shots.groupby(["source", "target"])["score"]

    def matrix(values: pd.Series) -> pd.DataFrame:
        return pair_matrix(values, sources, targets)

    own = stage(runs, "target").groupby("target")["score"].mean().reindex(targets).astype(float)
    score = matrix(grouped.mean())
    n = matrix(grouped.count()).fillna(0).astype(int)
    relative = pd.DataFrame(relative_performance(score.to_numpy(), own.to_numpy()[None, :]), score.index, score.columns)
    return ZeroShot(score=score, relative=relative, n=n, own=own.rename("own"))


def best_zero_shot_sources(z: ZeroShot) -> pd.DataFrame:
    """Per target, the source whose prompt transfers best zero-shot, with its relative performance."""
    rows = []
    for target in z.relative.columns:
        column = z.relative[target].dropna()
        if len(column):
            best = column.idxmax()
            rows.append((target, best, z.score.loc[best, target], float(column.max()), z.own[target]))
    columns = ["target", "best_source", "zero_shot", "relative", "own"]
    return pd.DataFrame(rows, columns=columns).astype({"zero_shot": float, "relative": float, "own": float})
