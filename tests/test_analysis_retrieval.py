"""Retrieval evaluation on a hand-made study: 3 source runs x 2 targets x 2 seeds, rankings given by hand.

Baselines: t1 60 / 64 (mean 62), t2 80 / 80. Transfers (seed 0 / seed 1, mean):
    t1: a 63 / 65 (64), b 70 / 74 (72), c 66 / 68 (67)        oracle b
    t2: a 90 / 86 (88), b 81 / 83 (82), c 84 / 84 (84)        oracle a
avg_tokens ranks t1: a, b, c and t2: c, b, a; per_token ranks t1: b, a, c and t2: a, c, b.
"""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import runs_frame

from spot_core.analysis import (
    best_of_top_k,
    correlation_points,
    correlations,
    pick_best_of_top_k,
    rank_candidates,
    ranking_quality,
    retrieval_summary,
    score_candidates,
    search_space,
    strategy_runs,
    table3,
)

SCORES = {
    "t1": {"a": (63, 65), "b": (70, 74), "c": (66, 68)},
    "t2": {"a": (90, 86), "b": (81, 83), "c": (84, 84)},
}
BASE = {"t1": (60, 64), "t2": (80, 80)}
RANKS = {
    "avg_tokens": {"t1": "abc", "t2": "cba"},
    "per_token": {"t1": "bac", "t2": "acb"},
}
STRATEGIES = {  # (retrieval, k, target) -> per-seed scores; the weighted average of the top 3 misses t2
    ("weighted_average", 2, "t1"): (68, 70),
    ("weighted_average", 2, "t2"): (85, 85),
    ("weighted_average", 3, "t1"): (90, 90),
    ("mixture", 2, "t1"): (66, 66),
    ("mixture", 2, "t2"): (82, 82),
}
DISPLAY = {"weighted_average": "wavg", "mixture": "mix"}  # the runs' source reads "wavg-top2", "mix-top2", ...


def run(stage, target, seed, score, source="", source_key="", k=0, task=None, key=None, retrieval="") -> dict:
    key = key or f"{stage}:{source_key or source}:{task or target}:{seed}"
    return {"key": key, "stage": stage, "task": task or target, "source": source, "source_key": source_key} | {
        "target": target,
        "seed": seed,
        "k": k,
        "score": float(score),
        "retrieval": retrieval,
    }


def study(drop: tuple = ()) -> pd.DataFrame:
    rows = [run("source", "", 0, 50, task=s, key=f"{s}0") for s in "abc"]  # the candidates' keys
    rows += [run("target", t, s, v) for t, vals in BASE.items() for s, v in enumerate(vals)]
    rows += [
        run("transfer", t, s, v, source=src, source_key=f"{src}0")
        for t, by_src in SCORES.items()
        for src, vals in by_src.items()
        for s, v in enumerate(vals)
        if (src, t, s) not in drop
    ]
    rows += [run("retrieval_mixture", "", 0, 40, k=2, task="a+b+t1", retrieval="mixture")]
    rows += [
        run("retrieval", t, s, v, source=f"{DISPLAY[strategy]}-top{k}", k=k, retrieval=strategy)
        for (strategy, k, t), vals in STRATEGIES.items()
        for s, v in enumerate(vals)
    ]
    return runs_frame(*rows)


def ranking() -> pd.DataFrame:
    rows = [
        {"method": m, "target": t, "rank": i + 1, "source_key": f"{src}0", "source": src, "similarity": 1 - i / 10}
        for m, by_target in RANKS.items()
        for t, order in by_target.items()
        for i, src in enumerate(order)
    ]
    return pd.DataFrame(rows)


def row(summary, strategy, method="", k=None):
    rows = summary[(summary["strategy"] == strategy) & (summary["method"] == method)]
    return rows[rows["k"] == k].iloc[0] if k is not None else rows.iloc[0]


def test_best_of_top_k_trusts_the_ranking_only_up_to_k():
    scores = {"c1": 50.0, "c2": 70.0, "c3": 60.0, "c4": 80.0}
    ranked = ["c1", "c2", "c3", "c4"]
    assert [best_of_top_k(ranked, scores, k) for k in (1, 2, 3, 4)] == ["c1", "c2", "c2", "c4"]
    assert best_of_top_k(ranked, scores, 4) == max(scores, key=scores.get)  # k = N is the oracle
    assert best_of_top_k(["x", "y"], {"x": 70.0, "y": 70.0}, 2) == "x"  # ties: the higher ranked
    assert best_of_top_k(ranked, {**scores, "c3": math.nan}, 3) is None  # c3 might have been best
    assert best_of_top_k(ranked, {"c1": 50.0}, 2) is None


def test_picks_follow_each_methods_ranking():
    picks = pick_best_of_top_k(ranking(), study()).set_index(["method", "target", "k"])
    assert picks.loc[("avg_tokens", "t1", 1), "source_key"] == "a0"  # worse than b, but ranked first
    assert picks.loc[("avg_tokens", "t1", 1), "seed_scores"] == (63.0, 65.0)
    assert picks.loc[("avg_tokens", "t1", 2), "source_key"] == "b0"
    assert picks.loc[("avg_tokens", "t2", 2), "source_key"] == "c0"
    assert picks.loc[("avg_tokens", "t2", 3), "source"] == "a" and picks.loc[("avg_tokens", "t2", 3), "rank"] == 3
    assert picks.loc[("per_token", "t1", 1), "gain"] == 10.0
    assert picks.loc[("per_token", "t1", 1), "rel"] == pytest.approx(10 / 38 * 100)


def test_summary_rows_have_exact_scores_gains_and_counts():
    summary = retrieval_summary(ranking(), study())
    base = row(summary, "baseline")
    assert base["score"] == 71.0 and base["score_std"] == pytest.approx(math.sqrt(2))  # seeds: 70, 72
    assert base["abs"] == 0.0 and base["n_targets"] == 2 and base["n_cells"] == 4
    oracle = row(summary, "oracle")
    assert (oracle["k"], oracle["score"], oracle["score_std"], oracle["abs"]) == (3, 80.0, 0.0, 9.0)
    assert oracle["rel"] == pytest.approx((10 / 38 * 100 + 40) / 2)
    top1 = row(summary, "best_of_top_k", "avg_tokens", 1)  # a on t1, c on t2: seeds 73.5 / 74.5
    assert top1["score"] == 74.0 and top1["score_std"] == pytest.approx(math.sqrt(0.5))
    assert top1["abs"] == 3.0 and top1["abs_std"] == pytest.approx(math.sqrt(0.5))
    assert top1["rel"] == pytest.approx((2 / 38 * 100 + 20) / 2)
    assert row(summary, "best_of_top_k", "per_token", 1)["score"] == 80.0  # per-token's first picks are best


def test_weighted_average_and_mixture_rows_read_the_retrieval_runs():
    parsed = strategy_runs(study())
    expected = {("weighted_average", 2), ("weighted_average", 3), ("mixture", 2)}
    assert set(zip(parsed["strategy"], parsed["k"], strict=True)) == expected
    summary = retrieval_summary(ranking(), study(), retrieval_method="per_token")
    wavg2 = row(summary, "weighted_average", "per_token", 2)
    assert wavg2["score"] == 77.0 and wavg2["abs"] == 6.0  # t1 gains 6 / 8, t2 5 / 5
    wavg3 = row(summary, "weighted_average", "per_token", 3)
    assert (wavg3["n_targets"], wavg3["n_left_out"], wavg3["score"]) == (1, 1, 90.0)  # t2 never ran
    assert row(summary, "mixture", "per_token", 2)["score"] == 74.0
    assert summary[summary["strategy"] == "mixture"]["method"].tolist() == ["per_token"]


def test_strategy_and_k_come_from_the_retrieval_and_k_columns_not_the_display_name():
    runs = study()
    retrieval = runs["stage"] == "retrieval"
    renamed = strategy_runs(runs.assign(source=runs["source"].where(~retrieval, "renamed")))
    expected = {("weighted_average", 2), ("weighted_average", 3), ("mixture", 2)}
    assert set(zip(renamed["strategy"], renamed["k"], strict=True)) == expected
    assert len(strategy_runs(runs.assign(retrieval=""))) == 0  # a retrieval run of no strategy is not one
    with pytest.raises(ValueError, match=r"runs.retrieval has unknown values \['wavg'\]"):
        strategy_runs(runs.assign(retrieval=runs["retrieval"].replace("weighted_average", "wavg")))


def test_a_missing_cell_leaves_its_target_out_and_says_so():
    summary = retrieval_summary(ranking(), study(drop=(("c", "t1", 1),)))
    oracle = row(summary, "oracle")  # t1's oracle needs c's seed 1
    assert (oracle["n_targets"], oracle["n_cells"], oracle["n_left_out"]) == (1, 2, 1)
    assert oracle["score"] == 88.0 and oracle["score_std"] == pytest.approx(math.sqrt(8))  # t2: 90 / 86
    top2 = row(summary, "best_of_top_k", "avg_tokens", 2)  # a and b for t1: still defined
    assert top2["n_targets"] == 2


def test_table3_layout():
    table = table3(retrieval_summary(ranking(), study()))
    assert table["row"].tolist() == [
        "Baseline",
        "Oracle (Brute-force)",
        "Best of Top-1",
        "Best of Top-3",
        "Top-k weighted average",
        "Top-k multi-task mixture",
        "Best of Top-1",
        "Best of Top-3",
    ]
    assert table["method"].tolist() == ["", ""] + ["avg_tokens"] * 4 + ["per_token"] * 2
    assert list(table.columns) == ["row", "strategy", "method", "k", "score", "score_std", "abs", "abs_std"] + [
        "rel",
        "rel_std",
        "n_targets",
        "n_cells",
        "n_left_out",
    ]
    # k = 3 scores 90 on one target; k = 2 covers both, so it is the best k
    assert table.loc[4, "k"] == 2 and table.loc[4, "score"] == 77.0


def test_search_space_reduction_and_gain_kept():
    picks = pick_best_of_top_k(ranking(), study())
    space = search_space(picks).set_index(["method", "k"])
    assert space.loc[("avg_tokens", 1), "reduction"] == pytest.approx(100 * (1 - 1 / 3))
    assert space.loc[("avg_tokens", 1), "gain_kept"] == pytest.approx(3 / 9 * 100)
    assert space.loc[("avg_tokens", 2), "gain_kept"] == pytest.approx(7 / 9 * 100)
    assert space.loc[("avg_tokens", 3), "gain_kept"] == 100.0 and space.loc[("per_token", 1), "gain_kept"] == 100.0


def test_the_papers_headline_numbers():
    # 48 candidates, two targets: oracle gains 10 and 6, best of top-15 gains 9 and 5.4
    picks = pd.DataFrame(
        {"method": "avg_tokens", "target": ["t1", "t2", "t1", "t2"], "k": [15, 15, 48, 48], "n_candidates": 48}
        | {"gain": [9.0, 5.4, 10.0, 6.0]}
    )
    at_15 = search_space(picks).set_index("k").loc[15]
    assert at_15["reduction"] == pytest.approx(68.75) and at_15["gain_kept"] == pytest.approx(90.0)


def test_end_to_end_from_embeddings():
    g = np.random.default_rng(0)
    runs = study()
    embeddings = {
        key: g.standard_normal((3, 4)).astype(np.float32)
        for key in runs.loc[runs["stage"].isin(["source", "target"]), "key"]
    }
    ranked = rank_candidates(runs, embeddings)
    scored = score_candidates(ranked, runs)
    summary = retrieval_summary(ranked, runs)
    # no neuron masks given: the three embedding indicators rank, neuron_overlap is left out
    assert list(ranked["method"].unique()) == ["avg_tokens", "per_token", "euclidean"]
    for method in ("avg_tokens", "per_token", "euclidean"):  # best of all N is the oracle whatever the ranking
        assert row(summary, "best_of_top_k", method, 3)["score"] == row(summary, "oracle")["score"] == 80.0
    assert len(table3(summary)) == 10
    assert len(correlations(correlation_points(scored))) == 6  # 3 indicators x 2 targets
    quality = ranking_quality(scored)
    assert (quality[quality["k"] == 3]["regret"] == 0.0).all() and quality["ndcg"].between(0, 1).all()
