"""Transferability matrices on a hand-made study with known means, stds, gains and relative error reductions."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import runs_frame

from spot_core.analysis import (
    baseline_scores,
    relative_error_reduction,
    relative_performance,
    transfer_matrices,
    transfer_scores,
)


def frame(*rows) -> pd.DataFrame:
    """Runs from (stage, source, source_key, target, seed, score) tuples; task and key are derived."""
    records = [
        {"key": f"{stage}:{src_key or src}:{target}:{seed}", "stage": stage, "task": target, "source": src}
        | {"source_key": src_key, "target": target, "seed": seed, "score": score}
        for stage, src, src_key, target, seed, score in rows
    ]
    return runs_frame(*records)


BASELINE = [("target", "", "", "t1", 0, 60.0), ("target", "", "", "t1", 1, 64.0)]
BASELINE += [("target", "", "", "t2", 0, 80.0), ("target", "", "", "t2", 1, 80.0)]
TRANSFERS = [
    ("transfer", "a", "a0", "t1", 0, 70.0),
    ("transfer", "a", "a0", "t1", 1, 74.0),
    ("transfer", "a", "a0", "t2", 0, 90.0),
    ("transfer", "a", "a0", "t2", 1, 86.0),
    ("transfer", "b", "b0", "t1", 0, 58.0),
    ("transfer", "b", "b0", "t1", 1, 60.0),
    ("transfer", "b", "b0", "t2", 0, 85.0),
    ("transfer", "b", "b0", "t2", 1, 85.0),
    ("transfer", "c", "c0", "t1", 0, 66.0),  # c -> t1 seed 1 and c -> t2 never ran
]
STUDY = frame(*BASELINE, *TRANSFERS)


def test_relative_error_reduction_reproduces_the_papers_mnli_to_cb():
    assert relative_error_reduction(97.0, 92.7) == pytest.approx(58.9, abs=0.05)
    assert relative_error_reduction(92.7, 92.7) == 0.0
    np.testing.assert_allclose(relative_error_reduction([70.0, 50.0], [60.0, 60.0]), [25.0, -25.0])
    assert math.isnan(relative_error_reduction(100.0, 100.0))  # no error left to reduce


def test_relative_performance_is_transferred_over_own_prompt():
    assert relative_performance(80.0, 64.0) == pytest.approx(125.0)
    assert math.isnan(relative_performance(50.0, 0.0))


def test_baseline_row_per_target():
    base = baseline_scores(STUDY, ["t2", "t1", "t3"])
    assert list(base.index) == ["t2", "t1", "t3"]
    assert base.loc["t1", "mean"] == 62.0 and base.loc["t1", "std"] == pytest.approx(math.sqrt(8))
    assert base.loc["t2", "std"] == 0.0 and base.loc["t2", "n"] == 2
    assert base.loc["t3", "n"] == 0 and math.isnan(base.loc["t3", "mean"])


def test_matrices_have_exact_means_stds_gains_and_rels():
    m = transfer_matrices(STUDY)
    assert list(m.mean.index) == ["a", "b", "c"] and list(m.mean.columns) == ["t1", "t2"]
    assert m.mean.loc["a", "t1"] == 72.0 and m.std.loc["a", "t1"] == pytest.approx(math.sqrt(8))
    assert m.gain.loc["a", "t1"] == 10.0 and m.rel.loc["a", "t1"] == pytest.approx(10 / 38 * 100)
    assert m.gain.loc["a", "t2"] == 8.0 and m.rel.loc["a", "t2"] == pytest.approx(40.0)
    assert m.gain.loc["b", "t1"] == -3.0 and m.rel.loc["b", "t1"] == pytest.approx(-3 / 38 * 100)
    assert m.std.loc["b", "t2"] == 0.0 and m.rel.loc["b", "t2"] == pytest.approx(25.0)
    assert m.relative_performance.loc["a", "t1"] == pytest.approx(72 / 62 * 100)
    assert m.n.loc["a", "t1"] == 2 and m.baseline.loc["t1", "mean"] == 62.0


def test_a_single_run_has_no_std_and_a_missing_cell_is_nan_never_zero():
    m = transfer_matrices(STUDY, sources=["c", "a", "d"], targets=["t1", "t2"])
    assert list(m.mean.index) == ["c", "a", "d"]
    assert m.n.loc["c", "t1"] == 1 and m.mean.loc["c", "t1"] == 66.0 and math.isnan(m.std.loc["c", "t1"])
    for source in ("c", "d"):
        assert m.n.loc[source, "t2"] == 0
        assert all(math.isnan(x.loc[source, "t2"]) for x in (m.mean, m.std, m.gain, m.rel, m.relative_performance))
    assert m.n.dtypes.eq(int).all()


def test_several_source_runs_of_one_task_are_pooled():
    extra = frame(("transfer", "a", "a1", "t1", 0, 78.0), ("transfer", "a", "a1", "t1", 1, 82.0))
    scores = transfer_scores(pd.concat([STUDY, extra])).set_index(["source", "target"])
    assert scores.loc[("a", "t1"), "n"] == 4 and scores.loc[("a", "t1"), "mean"] == 76.0


def test_a_target_without_baseline_has_nan_gains():
    scores = transfer_scores(frame(*TRANSFERS)).set_index(["source", "target"])
    assert scores.loc[("a", "t1"), "base_n"] == 0 and math.isnan(scores.loc[("a", "t1"), "rel"])


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"lacks columns \['source_key'\]"):
        transfer_matrices(STUDY.drop(columns="source_key"))
