"""Transfer methods compared, on a hand-made study: 2 source runs x 2 targets x 2 seeds.

Scores (seed 0 / seed 1):
    baseline           t1 60 / 64 (62)   t2 80 / 80 (80)
    transfer a         t1 63 / 65 (64)   t2 90 / 86 (88)
    transfer b         t1 70 / 74 (72)   t2 81 / 83 (82)       oracle: t1 b, t2 a
    weighted avg k=1   t1 68 / 70 (69)   t2 85 / 85 (85)
    mixture k=1        t1 66 / 66 (66)   t2 82 / 82 (82)
    attempt-all        t1 71 / 73 (72)   t2 84 /  - (84)       t2 lacks seed 1: left out of the average
    mpt                t1 65 / 67 (66)   t2 81 / 83 (82)
ATTEMPT's attention (mean weights): t1 seed 0 mixed a, b twice (two source runs of b) and its own prompt
[.2, .3, .1, .4]; t1 seed 1 [a .1, b .5, own .4]; t2 seed 0 [a .6, b .2, own .2].
"""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import runs_frame

from spot_core import tags
from spot_core.analysis import (
    attention_matrix,
    attention_ranking,
    check_facts,
    method_average,
    method_comparison,
    method_label,
    score_candidates,
)
from spot_core.analysis.frames import StudyResults
from spot_core.report.methods import method_sections
from spot_core.report.study import write_report

SCORES = {  # (stage, variant, target) -> per-seed scores
    ("target", "", "t1"): (60, 64),
    ("target", "", "t2"): (80, 80),
    ("transfer", "a_v1", "t1"): (63, 65),
    ("transfer", "a_v1", "t2"): (90, 86),
    ("transfer", "b_v1", "t1"): (70, 74),
    ("transfer", "b_v1", "t2"): (81, 83),
    ("weighted_average", "wavg-top1", "t1"): (68, 70),
    ("weighted_average", "wavg-top1", "t2"): (85, 85),
    ("mixture", "mix-top1", "t1"): (66, 66),
    ("mixture", "mix-top1", "t2"): (82, 82),
    ("attempt", "attempt-all", "t1"): (71, 73),
    ("attempt", "attempt-all", "t2"): (84, None),
    ("mpt", "mpt", "t1"): (65, 67),
    ("mpt", "mpt", "t2"): (81, 83),
}
PARAMS = {"target": 100, "transfer": 100, "weighted_average": 100, "mixture": 100, "attempt": 150, "mpt": 110}
ATTENTION = {
    "attempt:t1:0": [("a_v1", 0.2), ("b_v1", 0.3), ("b_v1", 0.1), ("target", 0.4)],
    "attempt:t1:1": [("a_v1", 0.1), ("b_v1", 0.5), ("target", 0.4)],
    "attempt:t2:0": [("a_v1", 0.6), ("b_v1", 0.2), ("target", 0.2)],
}


def study(scores=SCORES, sources=("a_v1", "b_v1")) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The runs, facts (best step 10 * seed + 10, seconds 2 * best step; one MPT run without its param) and
    attention tables."""
    rows = [dict(key=f"s:{s}", stage="source", task=s, seed=0, score=90.0) for s in sources]
    rows.append(dict(key="mpt_source", stage="mpt_source", task="+".join(sources), seed=0, score=88.0))
    rows.append(dict(key="rmix:t1", stage="retrieval_mixture", task="b_v1+t1", target="t1", seed=0, k=1))
    facts = []
    for (kind, variant, target), values in scores.items():
        for seed, score in enumerate(values):
            if score is None:
                continue
            key = f"{kind}:{variant}:{target}:{seed}" if kind == "transfer" else f"{kind}:{target}:{seed}"
            stage = {"weighted_average": "retrieval", "mixture": "retrieval"}.get(kind, kind)
            row = dict(key=key, stage=stage, task=target, target=target, seed=seed, score=float(score))
            if kind == "transfer":
                row.update(source=variant, source_key=f"s:{variant}")
            elif kind != "target":
                row.update(
                    source=variant, retrieval=kind if stage == "retrieval" else "", k=1 if "top" in variant else 0
                )
            rows.append(row)
            params = np.nan if key == "mpt:t2:1" else PARAMS[kind]
            facts.append((key, params, 10 * seed + 10, 2.0 * (10 * seed + 10)))
    attention = [(key, prompt, weight) for key, pairs in ATTENTION.items() for prompt, weight in pairs]
    return (
        runs_frame(*rows),
        pd.DataFrame(facts, columns=["key", "trainable_params", "best_step", "seconds_to_best"]),
        pd.DataFrame(attention, columns=["key", "prompt", "weight"]),
    )


@pytest.fixture(scope="module")
def table():
    runs, facts, attention = study()
    return method_comparison(runs, facts, attention).set_index(["method", "variant", "target"])


def test_methods_are_the_studys_in_order(table):
    methods = list(dict.fromkeys(table.index.droplevel("target")))
    assert methods == [
        ("baseline", ""),
        ("oracle", ""),
        ("weighted_average", "top-1"),
        ("mixture", "top-1"),
        ("attempt", "attempt-all"),
        ("mpt", ""),
    ]
    assert method_label("mixture", "top-1") == "SPoT mixture (top-1)" and method_label("mpt") == "MPT"


def test_scores_gains_and_spread_per_target(table):
    base = table.loc[("baseline", "", "t1")]
    assert (base["mean"], base["std"], base["n"], base["gain"]) == (62.0, pytest.approx(math.sqrt(8)), 2, 0.0)
    oracle = table.loc[("oracle", "", "t1")]  # b: 70 / 74
    assert (oracle["mean"], oracle["std"], oracle["gain"]) == (72.0, pytest.approx(math.sqrt(8)), 10.0)
    assert table.loc[("oracle", "", "t2"), "mean"] == 88.0  # a: 90 / 86
    assert table.loc[("weighted_average", "top-1", "t2"), "gain"] == 5.0
    attempt = table.loc[("attempt", "attempt-all", "t2")]  # one seed: no spread, incomplete
    assert (attempt["mean"], attempt["n"], attempt["complete"]) == (84.0, 1, False)
    assert math.isnan(attempt["std"]) and attempt["seed_scores"][0] == 84.0 and math.isnan(attempt["seed_scores"][1])
    assert table.loc[("mpt", "", "t2"), "seed_scores"] == (81.0, 83.0)


def test_costs_and_runs_needed(table):
    t1 = table.xs("t1", level="target")
    assert t1["trainable_params"].tolist() == [100, 100, 100, 100, 150, 110]
    assert t1["best_step"].tolist() == [15.0] * 6 and t1["seconds_to_best"].tolist() == [30.0] * 6
    # baseline 0 / 1; oracle and retrieval rank both source runs (mixture: + its mixture prompt); ATTEMPT mixed
    # 3 (seed 0: b's two source runs) and 2 prompts: median 2.5; MPT one multitask run
    assert t1["source_runs"].tolist() == [0, 2, 2, 3, 2.5, 1]
    assert t1["target_runs"].tolist() == [1, 2, 1, 1, 1, 1]
    mpt = table.loc[("mpt", "", "t2")]  # seed 1 lacks the param: the median of what there is
    assert mpt["trainable_params"] == 110 and table.loc[("attempt", "attempt-all", "t2"), "best_step"] == 10.0


def test_the_average_covers_the_targets_where_method_and_baseline_are_complete(table):
    average = method_average(table.reset_index()).set_index(["method", "variant"])
    oracle = average.loc[("oracle", "")]  # per seed: (70 + 90) / 2, (74 + 86) / 2 -> 80, 80
    assert (oracle["mean"], oracle["std"], oracle["n_targets"]) == (80.0, 0.0, 2)
    assert oracle["gain"] == pytest.approx(((72 - 62) + (88 - 80)) / 2)
    attempt = average.loc[("attempt", "attempt-all")]  # t1 only
    assert (attempt["mean"], attempt["gain"], attempt["n_targets"], attempt["n_left_out"]) == (72.0, 10.0, 1, 1)
    assert attempt["source_runs"] == 2.5 and attempt["trainable_params"] == 150
    assert average.loc[("mpt", ""), "trainable_params"] == 110


def test_missing_runs_stay_missing():
    runs, facts, attention = study()
    runs = runs[~runs["key"].isin(["transfer:a_v1:t1:1"])]  # t1's oracle loses a candidate's seed: undefined
    table = method_comparison(runs, facts.iloc[:0], None, targets=["t1", "t2", "t3"])
    table = table.set_index(["method", "variant", "target"]).sort_index()
    oracle = table.loc[("oracle", "", "t1")]
    assert math.isnan(oracle["mean"]) and oracle["n"] == 0 and math.isnan(oracle["source_runs"])
    assert table.loc[("oracle", "", "t2"), "mean"] == 88.0
    assert table.loc[("mpt", "", "t3"), "n"] == 0 and math.isnan(table.loc[("mpt", "", "t3"), "gain"])
    assert table["trainable_params"].isna().all()  # no facts: unknown, not 0
    assert table.loc[("attempt", "attempt-all"), "source_runs"].isna().all()  # no attention: unknown
    average = method_average(table.reset_index()).set_index(["method", "variant"])
    assert math.isnan(average.loc[("oracle", ""), "mean"]) or average.loc[("oracle", ""), "n_targets"] == 1
    assert average.loc[("mpt", ""), "n_left_out"] == 1  # t3 has no run


def test_facts_check_types_and_keeps_unknown_steps_missing():
    facts = check_facts(
        pd.DataFrame({"key": ["a"], "trainable_params": [None], "best_step": [None], "seconds_to_best": [None]})
    )
    assert str(facts["best_step"].dtype) == "Int64" and facts["best_step"].isna().all()
    with pytest.raises(ValueError, match="facts lacks columns"):
        check_facts(pd.DataFrame({"key": ["a"]}))


def test_attention_matrix_averages_repeated_prompts_then_seeds():
    runs, _, attention = study()
    matrix = attention_matrix(attention, runs, ["a_v1", "b_v1", "c_v1", "target"], ["t1", "t2"])
    # t1: a (.2 + .1) / 2; b: seed 0 (.3 + .1) / 2 = .2, seed 1 .5 -> .35; t2 one seed
    expected = [[0.15, 0.6], [0.35, 0.2], [np.nan, np.nan], [0.4, 0.2]]
    np.testing.assert_allclose(matrix.to_numpy(), expected)
    assert attention_matrix(attention, runs, ["a_v1"], ["t1"], variant="attempt-top2").isna().all().all()


def test_attention_ranks_source_runs_like_an_indicator():
    runs, _, attention = study(sources=("a_v1", "b_v1", "c_v1"))
    ranking = attention_ranking(attention, runs, ["t1", "t2"], "attempt-all")
    assert ranking.groupby("target")["source"].apply(list).to_dict() == {"t1": ["b_v1", "a_v1"], "t2": ["a_v1", "b_v1"]}
    assert set(ranking["method"]) == {"attention[attempt-all]"}  # c was never weighed: not a candidate
    scored = score_candidates(ranking, runs).set_index(["target", "source"])
    assert scored.loc[("t1", "b_v1"), "gain"] == 10.0 and scored.loc[("t2", "a_v1"), "gain"] == 8.0


def full_study() -> StudyResults:
    """3 sources x 2 targets x 2 seeds with every method's runs, facts and attention."""
    sources, targets = ["a_v1", "b_v1", "c_v1"], ["t1", "t2"]
    scores = {}
    for j, target in enumerate(targets):
        scores[("target", "", target)] = (60 + j, 62 + j)
        for i, source in enumerate(sources):
            scores[("transfer", source, target)] = (61 + 2 * i + j, 64 + i - j)
        scores |= {
            ("weighted_average", "wavg-top1", target): (66, 67),
            ("mixture", "mix-top1", target): (64, 66),
            ("attempt", "attempt-all", target): (68 + j, 69),
            ("mpt", "mpt", target): (63, 65 + j),
        }
    runs, facts, _ = study(scores, tuple(sources))
    weights = {"t1": (0.1, 0.3, 0.2, 0.4), "t2": (0.25, 0.15, 0.35, 0.25)}
    attention = pd.DataFrame(
        [
            (f"attempt:{t}:{seed}", p, w)
            for t in targets
            for seed in (0, 1)
            for p, w in zip([*sources, "target"], weights[t], strict=True)
        ],
        columns=["key", "prompt", "weight"],
    )
    return StudyResults(
        "m",
        runs,
        pd.DataFrame(columns=["key", "step", "score"]),
        {},
        sources,
        targets,
        facts=facts,
        artifacts={tags.ATTENTION: attention},
        sections=[method_sections],  # the ATTEMPT and MPT stages' section, as the ledger gives it
    )


def test_the_report_compares_every_method_with_every_cell_filled(tmp_path):
    write_report(full_study(), tmp_path)
    for name in ("methods", "methods_values", "methods_average", "methods_average_values", "attention_all"):
        for suffix in (".csv", ".md", ".tex"):
            assert (tmp_path / "tables" / f"{name}{suffix}").exists(), name + suffix
    for name in ("attention_all", "attention_correlation_all"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 0, name
    for name in ("methods", "methods_average", "attention_all"):
        assert "–" not in (tmp_path / "tables" / f"{name}.md").read_text(), name  # nothing missing
        assert not pd.read_csv(tmp_path / "tables" / f"{name}.csv").isna().any().any(), name
    average = (tmp_path / "tables" / "methods_average.md").read_text()
    for label in (
        "Baseline (prompt tuning)",
        "SPoT oracle",
        "SPoT weighted average (top-1)",
        "SPoT mixture (top-1)",
        "ATTEMPT (attempt-all)",
        "MPT",
    ):
        assert f"| {label} |" in average, label
    document = (tmp_path / "report.md").read_text()
    assert "## Transfer methods compared" in document and "## ATTEMPT's attention" in document
    assert "tables/attention_correlation.md" not in document  # tables are inlined; the figure is linked
    assert "figures/attention_all.png" in document


def test_a_study_without_other_methods_has_no_comparison(tmp_path):
    runs, facts, attention = study({("target", "", "t1"): (60, 62)})
    write_report(
        StudyResults(
            "b", runs, pd.DataFrame(columns=["key", "step", "score"]), {}, ["a_v1"], ["t1"], sections=[method_sections]
        ),
        tmp_path,
    )
    assert not (tmp_path / "tables" / "methods.md").exists()
    assert "Transfer methods compared" not in (tmp_path / "report.md").read_text()
