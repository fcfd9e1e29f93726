"""Convergence speed-up on hand-made curves: the baseline reaches its best 80 at step 400."""

import math

import pandas as pd
import pytest
from conftest import runs_frame

from spot_core.analysis import baseline_convergence, convergence, transfer_convergence
from spot_core.analysis.convergence import first_step_reaching

STEPS = [0, 100, 200, 300, 400, 500]
CURVES = {
    "base0": [50, 60, 70, 75, 80, 80],
    "base1": [50, 60, 70, 75, 80, 79],
    "fast": [50, 80, 81, 82, 82, 82],  # reaches 80 at 100: 4x
    "slow": [50, 60, 70, 75, 78, 80],  # at 500: 0.8x
    "never": [50, 60, 70, 75, 79, 79],
    "warm": [85, 86, 86, 86, 86, 86],  # at step 0: floored at the 100-step eval interval
}
RUNS = runs_frame(
    ("base0", "target", "t", "", "", "t", 0, 80.0),
    ("base1", "target", "t", "", "", "t", 1, 80.0),
    ("fast", "transfer", "t", "a", "a0", "t", 0, 82.0),
    ("slow", "transfer", "t", "a", "a0", "t", 1, 80.0),
    ("never", "transfer", "t", "b", "b0", "t", 0, 79.0),
    ("warm", "transfer", "t", "c", "c0", "t", 0, 86.0),
    ("no_curve", "transfer", "t", "d", "d0", "t", 0, 86.0),
)
CURVE_TABLE = pd.DataFrame(
    [(key, step, score) for key, scores in CURVES.items() for step, score in zip(STEPS, scores, strict=True)],
    columns=["key", "step", "score"],
)


def test_first_step_reaching():
    assert first_step_reaching(STEPS, CURVES["fast"], 80.0) == 100
    assert math.isnan(first_step_reaching(STEPS, CURVES["never"], 80.0))


def test_baseline_threshold_and_steps():
    base = baseline_convergence(RUNS, CURVE_TABLE)
    assert base.loc["t"].tolist() == [80.0, 400.0, 2]


def test_speedup_per_run():
    per_run = transfer_convergence(RUNS, CURVE_TABLE).set_index("key")
    assert per_run.loc["fast", "step"] == 100 and per_run.loc["fast", "speedup"] == 4.0
    assert per_run.loc["slow", "speedup"] == pytest.approx(0.8)
    assert not per_run.loc["never", "reached"] and math.isnan(per_run.loc["never", "speedup"])
    assert per_run.loc["warm", "step"] == 0 and per_run.loc["warm", "speedup"] == 4.0
    assert "no_curve" not in per_run.index  # unmeasured is not "never"


def test_matrices_average_over_runs_that_reached():
    result = convergence(RUNS, CURVE_TABLE, sources=["a", "b", "c", "d"])
    assert result.speedup.loc["a", "t"] == pytest.approx((4.0 + 0.8) / 2)
    assert result.steps.loc["a", "t"] == 300.0
    assert (result.n.loc["b", "t"], result.n_reached.loc["b", "t"]) == (1, 0)
    assert math.isnan(result.speedup.loc["b", "t"])
    assert result.n.loc["d", "t"] == 0 and math.isnan(result.speedup.loc["d", "t"])


def test_the_threshold_is_the_recorded_best_not_an_initial_prompt_that_did_not_compete():
    # The baseline's untrained prompt scored 90 at step 0, but the run's best checkpoint (step 0 excluded) is 80:
    # the threshold is 80, and the transfer that reaches 82 at step 100 counts as reached.
    curves = pd.DataFrame(
        [("b", s, v) for s, v in zip(STEPS, [90, 60, 70, 75, 80, 80], strict=True)]
        + [("x", s, v) for s, v in zip(STEPS, [50, 82, 82, 82, 82, 82], strict=True)],
        columns=["key", "step", "score"],
    )
    runs = RUNS[RUNS["key"] == "base0"].assign(key="b")
    runs = pd.concat([runs, RUNS[RUNS["key"] == "fast"].assign(key="x")])
    assert baseline_convergence(runs, curves).loc["t"].tolist() == [80.0, 100.0, 1]  # 90 >= 80 at step 0: floored
    assert transfer_convergence(runs, curves).loc[0, "step"] == 100
