"""Expected findings checked on hand-made runs: one value per seed, every one inside the claim's range."""

import pandas as pd
import pytest
from conftest import runs_frame

from spot_core.analysis.findings import check_claims, check_expectations, describe


def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [
        ("s0", "source", "sst2_v1", "", "", "", 0, 80.0),
        ("s1", "source", "sst2_v1", "", "", "", 1, 84.0),
        ("b0", "target", "cr_v1", "", "", "cr_v1", 0, 70.0),
        ("b1", "target", "cr_v1", "", "", "cr_v1", 1, 74.0),  # baseline mean 72
        ("t00", "transfer", "cr_v1", "sst2_v1", "s0", "cr_v1", 0, 75.0),
        ("t01", "transfer", "cr_v1", "sst2_v1", "s0", "cr_v1", 1, 77.0),  # from s0: mean 76, gain +4
        ("t10", "transfer", "cr_v1", "sst2_v1", "s1", "cr_v1", 0, 71.0),
        ("t11", "transfer", "cr_v1", "sst2_v1", "s1", "cr_v1", 1, 71.0),  # from s1: gain -1
        ("z0", "zero_shot", "cr_v1", "sst2_v1", "s0", "cr_v1", 0, 72.0),  # 100 % of the baseline
        ("z1", "zero_shot", "cr_v1", "sst2_v1", "s1", "cr_v1", 1, 36.0),  # 50 %
    ]
    runs = runs_frame(*rows)
    curves = pd.DataFrame(
        [("b0", 0, 60.0), ("b0", 10, 66.0), ("b0", 20, 65.0), ("b1", 0, 70.0), ("b1", 20, 69.0)],
        columns=["key", "step", "score"],
    )
    return runs, curves


def test_each_kind_measures_one_value_per_seed_and_holds_only_if_all_do():
    runs, curves = tables()
    claims = [
        {"kind": "source_score", "task": "sst2_v1", "min": 75, "max": 90},
        {"kind": "target_gain", "task": "cr_v1", "min": 2},  # final - initial: +5 and -1
        {"kind": "transfer_gain", "source": "sst2_v1", "target": "cr_v1", "min": -2},
        {"kind": "transfer_gain", "source": "sst2_v1", "target": "cr_v1", "min": 0},
        {"kind": "zero_shot_relative", "source": "sst2_v1", "target": "cr_v1", "min": 40, "max": 110},
        {"kind": "source_score", "task": "mnli_v1", "min": 0},  # no runs: does not hold
    ]
    checked = check_expectations({"claims": claims}, runs, curves)
    assert checked["values"].tolist() == [[80.0, 84.0], [5.0, -1.0], [4.0, -1.0], [4.0, -1.0], [100.0, 50.0], []]
    assert checked["holds"].tolist() == [True, False, True, False, True, False]
    assert checked["subject"].tolist()[2] == "sst2_v1 -> cr_v1"
    text = describe(checked).splitlines()
    assert text[0].endswith("holds") and text[1].endswith("FAILS") and len(text) == 6


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        ({"kind": "best_score", "task": "x", "min": 1}, "claim 0 has kind 'best_score'; use one of source_score"),
        ({"kind": "transfer_gain", "source": "a", "min": 1}, r"claim 0 \(transfer_gain\) needs source, target"),
        ({"kind": "source_score", "task": "a"}, r"claim 0 \(source_score\) needs task and min and/or max"),
    ],
)
def test_a_malformed_claim_is_named(claim, message):
    runs, curves = tables()
    with pytest.raises(ValueError, match="expected.json: " + message):
        check_expectations({"claims": [claim]}, runs, curves, "expected.json")


def generic_tables(shift: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1's rows on RTE (GLUE and SuperGLUE) and CB (SuperGLUE), two seeds; `shift` raises every score."""
    scores = {  # (stage, source, target, seed) -> score
        ("target", "", "rte_v1", 0): 70.0, ("target", "", "rte_v1", 1): 74.0,
        ("target", "", "cb_v1", 0): 90.0, ("target", "", "cb_v1", 1): 80.0,  # SuperGLUE: 80 and 77
        ("transfer", "glue_v1", "rte_v1", 0): 75.0, ("transfer", "glue_v1", "rte_v1", 1): 79.0,
        ("transfer", "glue_v1", "cb_v1", 0): 95.0, ("transfer", "glue_v1", "cb_v1", 1): 97.0,  # 85 and 88
        ("transfer", "glue_v1", "cb_v1", 2): 99.0,  # a seed without RTE counts nowhere
    }  # fmt: skip
    rows = [(f"k{i}", stage, target, source, "", target, seed, score + shift)
            for i, ((stage, source, target, seed), score) in enumerate(scores.items())]  # fmt: skip
    return runs_frame(*rows), pd.DataFrame(columns=["key", "step", "score"])


def test_table_1_kinds_measure_a_rows_benchmark_score_per_seed_on_the_study_they_name():
    runs, curves = generic_tables()
    claims = [
        {"kind": "benchmark_score", "method": "PromptTuning", "benchmark": "SuperGLUE", "min": 76, "max": 81},
        {"kind": "benchmark_score", "method": "PromptTuning", "benchmark": "GLUE", "max": 72},  # RTE alone: 70, 74
        {
            "kind": "benchmark_gain",
            "method": "SPoT",
            "source": "glue_v1",
            "baseline": "PromptTuning",
            "benchmark": "SuperGLUE",
            "min": 6,
        },  # +5 and +11
        {"kind": "benchmark_score", "method": "ModelTuning", "benchmark": "GLUE", "min": 0},  # no runs
        {
            "kind": "benchmark_score",
            "method": "SPoT",
            "source": "glue_v1",
            "benchmark": "SuperGLUE",
            "min": 95,
            "study": "bigger",
        },  # fmt: skip
    ]
    checked = check_expectations({"claims": claims}, runs, curves, others={"bigger": generic_tables(shift=10.0)})
    assert checked["values"].tolist() == [[80.0, 77.0], [70.0, 74.0], [5.0, 11.0], [], [95.0, 98.0]]
    assert checked["holds"].tolist() == [True, False, False, False, True]
    assert checked["subject"].tolist()[2] == "SPoT (glue_v1) -> PromptTuning -> SuperGLUE"
    assert checked["subject"].tolist()[4] == "SPoT (glue_v1) -> SuperGLUE @ bigger"


def test_a_claim_on_a_study_the_report_does_not_compare_is_refused_before_any_is_measured():
    runs, curves = generic_tables()
    claim = {"kind": "benchmark_score", "method": "SPoT", "benchmark": "GLUE", "min": 0, "study": "huge"}
    with pytest.raises(ValueError, match=r"claim 0 is on study 'huge', not among the report's studies \(none: "):
        check_claims({"claims": [claim]}, "expected.json", [])
    with pytest.raises(ValueError, match=r"\(small, bigger\)"):
        check_expectations(
            {"claims": [claim]}, runs, curves, "e.json", {"small": (runs, curves), "bigger": (runs, curves)}
        )
