"""Metric functions: (targets, predictions) -> {name: value in 0-100}, as T5's glue_utils."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    t, p = np.asarray(targets, dtype=object), np.asarray(predictions, dtype=object)
    return {"accuracy": 100.0 * float(np.mean(t == p)) if len(t) else float("nan")}


def _floats(values: Sequence[str], default: float = -1.0) -> np.ndarray:
    """Numeric strings -> floats; an unparsable prediction becomes `default` (T5's string_to_float)."""

    def parse(v: str) -> float:
        try:
            return float(v)
        except ValueError:
            return default

    return np.asarray([parse(v) for v in values], dtype=np.float64)


def pearson_spearman(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Pearson and Spearman correlation x 100 of numeric strings (STS-B); constant input -> 0."""
    t, p = _floats(targets), _floats(predictions)
    if np.std(t) == 0 or np.std(p) == 0:
        return {"pearson": 0.0, "spearman": 0.0}
    spearman = pd.Series(t).rank().corr(pd.Series(p).rank())
    return {"pearson": 100.0 * float(np.corrcoef(t, p)[0, 1]), "spearman": 100.0 * float(spearman)}


def task_score(metrics: dict[str, float]) -> float:
    """A task's score: the mean of its metrics (SPoT / T5)."""
    return float(np.mean(list(metrics.values())))
