"""Table 1's benchmark averages (spot_core.analysis.generic) against a hand computation on a fixture of per-task
scores: a multi-metric task's score is the mean of its metrics, a benchmark's the mean over its tasks in the design,
and a seed counts only where the row has every one of them."""

import math

import pandas as pd
import pytest

from spot_core.analysis.generic import benchmark_scores, task_scores
from spot_core.tags import BENCHMARK_TASKS
from spot_core.tasks import get_mixture, get_task

TARGETS = ["cola_v1", "mrpc_v1", "rte_v1", "cb_v1"]  # GLUE holds cola, mrpc, rte; SuperGLUE rte and cb

# MRPC scores F1 and accuracy: 3 of 4 right, the one positive missed -> accuracy 75, F1 2/3 -> 70.8333
MRPC = get_task("mrpc_v1").score(
    ["equivalent", "equivalent", "not_equivalent", "not_equivalent"],
    ["equivalent", "not_equivalent", "not_equivalent", "not_equivalent"],
)["score"]


def runs(rows: list[tuple[str, str, str, int, float]]) -> pd.DataFrame:
    """A runs table of (stage, source, target, seed, score)."""
    return pd.DataFrame(
        [{"key": f"k{i}", "stage": st, "task": t, "source": src, "source_key": "", "target": t, "seed": s, "k": 0,
          "score": v, "retrieval": ""} for i, (st, src, t, s, v) in enumerate(rows)]
    )  # fmt: skip


FIXTURE = runs(
    [
        *[("target", "", t, 0, v) for t, v in zip(TARGETS, [60.0, MRPC, 70.0, 90.0], strict=True)],
        *[("target", "", t, 1, v) for t, v in zip(TARGETS, [62.0, 80.0, 74.0, 80.0], strict=True)],
        *[("transfer", "glue_v1", t, 0, v) for t, v in zip(TARGETS, [70.0, 85.0, 75.0, 95.0], strict=True)],
        # seed 1 of SPoT lacks CoLA: GLUE counts only seed 0 there; SuperGLUE has both
        *[("transfer", "glue_v1", t, 1, v) for t, v in zip(TARGETS[1:], [87.0, 79.0, 97.0], strict=True)],
        *[("model_tuning", "", t, 0, v) for t, v in zip(TARGETS, [65.0, 82.0, 72.0, 88.0], strict=True)],
        ("source", "", "glue_v1", 0, 50.0),  # not a row of Table 1
    ]
)


def test_mrpcs_score_is_the_mean_of_its_two_metrics():
    assert MRPC == pytest.approx((75.0 + 100 * 2 / 3) / 2)


def test_benchmark_means_equal_the_hand_computation():
    table = benchmark_scores(FIXTURE, TARGETS)
    assert list(table.index) == [("PromptTuning", ""), ("ModelTuning", ""), ("SPoT", "glue_v1")]
    glue_pt = [(60 + MRPC + 70) / 3, (62 + 80 + 74) / 3]
    pt = table.loc[("PromptTuning", "")]
    assert pt[("GLUE", "mean")] == pytest.approx(sum(glue_pt) / 2)
    assert pt[("GLUE", "std")] == pytest.approx(abs(glue_pt[0] - glue_pt[1]) / math.sqrt(2))  # ddof 1, two seeds
    assert (pt[("GLUE", "n")], pt[("GLUE", "tasks")]) == (2, "3/8")
    superglue_pt = [(70 + 90) / 2, (74 + 80) / 2]
    assert pt[("SuperGLUE", "mean")] == pytest.approx(sum(superglue_pt) / 2)
    assert (pt[("SuperGLUE", "n")], pt[("SuperGLUE", "tasks")]) == (2, "2/8")
    spot = table.loc[("SPoT", "glue_v1")]
    assert spot[("GLUE", "mean")] == pytest.approx((70 + 85 + 75) / 3) and spot[("GLUE", "n")] == 1
    assert math.isnan(spot[("GLUE", "std")])  # one seed: no spread
    assert spot[("SuperGLUE", "mean")] == pytest.approx(((75 + 95) / 2 + (79 + 97) / 2) / 2)
    mt = table.loc[("ModelTuning", "")]
    assert mt[("GLUE", "mean")] == pytest.approx((65 + 82 + 72) / 3) and mt[("SuperGLUE", "n")] == 1


def test_per_task_scores_and_the_benchmarks_members():
    tasks = task_scores(FIXTURE, TARGETS)
    assert list(tasks.columns.get_level_values(0).unique()) == TARGETS
    assert tasks.loc[("PromptTuning", ""), ("mrpc_v1", "mean")] == pytest.approx((MRPC + 80) / 2)
    assert tasks.loc[("SPoT", "glue_v1"), ("cola_v1", "n")] == 1
    members = BENCHMARK_TASKS
    assert len(members["GLUE"]) == 8 and "wnli_v1" not in members["GLUE"] and len(members["SuperGLUE"]) == 8
    assert "rte_v1" in members["GLUE"] and "rte_v1" in members["SuperGLUE"]
    assert get_mixture("glue_v1").tasks == members["GLUE"] and get_mixture("superglue_v1").tasks == members["SuperGLUE"]
