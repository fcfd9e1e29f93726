"""Su et al.'s analyses on hand-made runs: zero-shot relative performance, the cross-model table (with its
speed-up from a hand-made metric series) and the indicator comparison."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import runs_frame as frame

from spot_core.analysis import (
    best_zero_shot_sources,
    cross_model_table,
    indicator_summary,
    neuron_window_scores,
    projector_tasks,
    zero_shot,
)

ZERO_SHOT = frame(
    ("t0", "target", "rte", "", "", "rte", 0, 70.0),
    ("t1", "target", "rte", "", "", "rte", 1, 60.0),  # own prompt: 65
    ("c0", "target", "cb", "", "", "cb", 0, 0.0),  # own 0: relative undefined
    ("z1", "zero_shot", "rte", "mnli", "m0", "rte", 0, 52.0),
    ("z2", "zero_shot", "rte", "sst2", "s0", "rte", 0, 39.0),
    ("z3", "zero_shot", "cb", "mnli", "m0", "cb", 0, 40.0),
    ("x", "transfer", "rte", "mnli", "m0", "rte", 0, 99.0),  # not zero-shot: ignored
)


def test_zero_shot_relative_performance_is_over_the_targets_own_prompt():
    z = zero_shot(ZERO_SHOT, sources=["mnli", "sst2", "qqp"], targets=["rte", "cb"])
    assert z.own["rte"] == 65.0
    assert z.relative.loc["mnli", "rte"] == pytest.approx(80.0)  # 52 / 65
    assert z.relative.loc["sst2", "rte"] == pytest.approx(60.0)
    assert math.isnan(z.relative.loc["mnli", "cb"])  # own score 0: no ratio, not infinity
    assert z.score.loc["mnli", "cb"] == 40.0
    assert z.n.loc["qqp"].tolist() == [0, 0] and z.score.loc["qqp"].isna().all()  # missing, never zero
    best = best_zero_shot_sources(z)
    assert best.to_dict("records") == [
        {"target": "rte", "best_source": "mnli", "zero_shot": 52.0, "relative": pytest.approx(80.0), "own": 65.0}
    ]


# B's own prompt reaches its best (60) at step 20; the projected init is at 60 by step 10: 2x faster.
CROSS = frame(
    ("own_a", "cross_source", "sst2", "", "", "", 0, 60.0),
    ("own_b", "cross_source", "mnli", "", "", "", 0, 40.0),
    ("proj", "projector", "sst2", "", "", "", 0, 55.0),
    ("zs_a", "cross_zero_shot", "sst2", "sst2", "a0", "sst2", 0, 55.0),
    ("zs_b", "cross_zero_shot", "mnli", "mnli", "b0", "mnli", 0, 30.0),
    ("in_a", "cross_transfer", "sst2", "sst2", "a0", "sst2", 0, 62.0),
    ("in_b", "cross_transfer", "mnli", "mnli", "b0", "mnli", 0, 38.0),
)
CURVES = pd.DataFrame(
    [("own_a", 0, 30.0), ("own_a", 10, 50.0), ("own_a", 20, 60.0), ("own_a", 30, 60.0)]
    + [("in_a", 0, 55.0), ("in_a", 10, 61.0), ("in_a", 20, 62.0), ("in_a", 30, 62.0)]
    + [("own_b", 0, 30.0), ("own_b", 10, 40.0), ("own_b", 20, 40.0)]
    + [("in_b", 0, 30.0), ("in_b", 10, 35.0), ("in_b", 20, 38.0)],  # never reaches 40
    columns=["key", "step", "score"],
)


def test_cross_model_table_compares_projected_prompts_with_the_models_own():
    table = cross_model_table(CROSS, CURVES).set_index("task")
    assert projector_tasks(CROSS) == ["sst2"]
    a, b = table.loc["sst2"], table.loc["mnli"]
    assert bool(a["trained_on"]) and not bool(b["trained_on"])
    assert (a["own"], a["zero_shot"], a["init"], a["gain"]) == (60.0, 55.0, 62.0, 2.0)
    assert a["relative"] == pytest.approx(55 / 60 * 100)
    assert a["speedup"] == pytest.approx(2.0) and a["reached"] == 1
    assert b["relative"] == pytest.approx(75.0) and b["gain"] == -2.0
    assert math.isnan(b["speedup"]) and b["reached"] == 0  # "never", not a number


def test_indicator_summary_orders_by_mean_pearson_and_keeps_indicators_without_a_correlation():
    stats = pd.DataFrame(
        {
            "method": ["avg_tokens", "avg_tokens", "neuron_overlap", "neuron_overlap", "euclidean"],
            "target": ["a", "b", "a", "b", "a"],
            "pearson_r": [0.2, 0.4, 0.9, 0.5, math.nan],
            "spearman_rho": [0.1, 0.3, 1.0, 0.5, math.nan],
        }
    )
    quality = pd.DataFrame(
        {
            "method": ["avg_tokens", "avg_tokens", "neuron_overlap", "neuron_overlap", "euclidean"],
            "target": ["a", "b", "a", "b", "a"],
            "k": [1, 1, 1, 1, 1],
            "ndcg": [0.5, 1.0, 1.0, 1.0, 0.2],
            "regret": [10.0, 0.0, 0.0, 0.0, 30.0],
        }
    )
    table = indicator_summary(stats, quality)
    assert table["method"].tolist() == ["neuron_overlap", "avg_tokens", "euclidean"]
    top = table.iloc[0]
    assert top["pearson_r"] == pytest.approx(0.7) and top["spearman_rho"] == pytest.approx(0.75)
    assert top["targets"] == 2 and top["ndcg@1"] == 1.0
    last = table.iloc[2]
    assert last["targets"] == 0 and math.isnan(last["pearson_r"]) and last["regret@1"] == 30.0


def test_neuron_overlap_per_layer_window_tells_which_layers_predict_transfer():
    runs = frame(
        ("t0", "target", "t", "", "", "t", 0, 50.0),
        ("a0", "source", "a", "", "", "", 0, 70.0),
        ("b0", "source", "b", "", "", "", 0, 70.0),
        ("c0", "source", "c", "", "", "", 0, 70.0),
        ("ta", "transfer", "t", "a", "a0", "t", 0, 60.0),
        ("tb", "transfer", "t", "b", "b0", "t", 0, 70.0),
        ("tc", "transfer", "t", "c", "c0", "t", 0, 80.0),
    )
    first, second = [1, 1, 1, 0], [1, 0, 0, 0]

    def mask(layer1, layer2):  # [layers=2, L=1, I=4]
        return np.array([[layer1], [layer2]], dtype=bool)

    neurons = {
        "t0": mask([1, 1, 1, 1], [1, 1, 1, 1]),
        "a0": mask(first, second),  # layer 1 says a is closest, layer 2 says farthest
        "b0": mask([1, 1, 0, 0], [1, 1, 0, 0]),
        "c0": mask(second, first),
    }
    stats, quality = neuron_window_scores(runs, neurons, ["t"], windows=2)
    by = stats.set_index("method")
    assert by.loc["neuron_overlap[2-2]", "spearman_rho"] == pytest.approx(1.0)  # the transfers' order
    assert by.loc["neuron_overlap[1-1]", "spearman_rho"] == pytest.approx(-1.0)
    top1 = quality[quality["k"] == 1].set_index("method")
    assert top1.loc["neuron_overlap[2-2]", "regret"] == 0.0 and top1.loc["neuron_overlap[1-1]", "regret"] > 0
