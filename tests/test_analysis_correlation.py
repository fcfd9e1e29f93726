"""Correlation, NDCG and regret@k with hand-computed answers (and scipy as the reference on a random case)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from spot_core.analysis import correlate, correlation_points, correlations, graded_relevance, ndcg, ranking_quality
from spot_core.analysis import regret_at_k as regret


def test_perfectly_linear_points_correlate_fully():
    out = correlate([0.1, 0.2, 0.3, 0.4], [5.0, 7.0, 9.0, 11.0])
    assert out["pearson_r"] == pytest.approx(1.0) and out["spearman_rho"] == pytest.approx(1.0)
    assert out["pearson_p"] == pytest.approx(0.0, abs=1e-6) and out["n"] == 4


def test_a_random_case_matches_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=12), rng.normal(size=12)
    out = correlate(x, y)
    assert out["pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert out["pearson_p"] == pytest.approx(stats.pearsonr(x, y).pvalue)
    assert out["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert out["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)


def test_too_few_or_constant_points_give_nan_with_their_count():
    two = correlate([0.1, 0.2], [1.0, 2.0])
    assert two["n"] == 2 and math.isnan(two["pearson_r"]) and math.isnan(two["spearman_p"])
    assert math.isnan(correlate([0.1, 0.2, 0.3], [4.0, 4.0, 4.0])["pearson_r"])


def scored(complete=True) -> pd.DataFrame:
    """Three candidates per target, ranked c1, c2, c3; true scores 70, 90, 80 (t) and 60, 50, 40 (u)."""
    return pd.DataFrame(
        {
            "method": "avg_tokens",
            "target": ["t"] * 3 + ["u"] * 3,
            "rank": [1, 2, 3] * 2,
            "source_key": ["c1", "c2", "c3"] * 2,
            "source": ["a", "b", "c"] * 2,
            "similarity": [0.9, 0.5, 0.1] * 2,
            "score": [70.0, 90.0, 80.0, 60.0, 50.0, 40.0],
            "n": [2, 2, 2, 2, 2, 1 if not complete else 2],
            "complete": [True] * 5 + [complete],
            "rel": [10.0, 50.0, 30.0, 20.0, 0.0, -20.0],
        }
    )


def test_correlations_per_target_and_scatter_points():
    points = correlation_points(scored())
    assert list(points.columns) == ["method", "target", "source", "source_key", "similarity", "rel", "n"]
    table = correlations(points).set_index("target")
    assert table.loc["u", "pearson_r"] == pytest.approx(stats.pearsonr([0.9, 0.5, 0.1], [20, 0, -20]).statistic)
    assert table.loc["u", "spearman_rho"] == pytest.approx(1.0) and table.loc["t", "n"] == 3
    assert table.loc["t", "spearman_rho"] == pytest.approx(-0.5)


def test_graded_relevance_is_n_minus_true_rank():
    assert graded_relevance([70.0, 90.0, 80.0]).tolist() == [0.0, 2.0, 1.0]
    assert graded_relevance([70.0, 90.0, 90.0]).tolist() == [0.0, 2.0, 2.0]  # ties share the better rank


def test_ndcg_of_perfect_and_reversed_rankings():
    assert ndcg([2.0, 1.0, 0.0]) == 1.0 and ndcg([2.0, 1.0, 0.0], k=1) == 1.0
    ideal = 2 + 1 / math.log2(3)
    assert ndcg([0.0, 1.0, 2.0]) == pytest.approx((1 / math.log2(3) + 2 / 2) / ideal)  # 0.6199
    assert ndcg([0.0, 1.0, 2.0]) == pytest.approx(0.6199, abs=1e-4)
    assert ndcg([0.0, 1.0, 2.0], k=1) == 0.0 and math.isnan(ndcg([0.0]))


def test_regret_at_k():
    in_ranked_order = [70.0, 80.0, 75.0, 90.0]
    assert regret(in_ranked_order, 1) == pytest.approx(20 / 90 * 100)
    assert regret(in_ranked_order, 2) == pytest.approx(10 / 90 * 100)
    assert regret(in_ranked_order, 3) == pytest.approx(10 / 90 * 100) and regret(in_ranked_order, 4) == 0.0


def test_ranking_quality_needs_every_candidate_complete():
    quality = ranking_quality(scored(complete=False)).set_index(["target", "k"])
    # t: relevance in ranked order 0, 2, 1
    assert quality.loc[("t", 3), "ndcg"] == pytest.approx((2 / math.log2(3) + 1 / 2) / (2 + 1 / math.log2(3)))
    assert quality.loc[("t", 1), "regret"] == pytest.approx(20 / 90 * 100)
    assert quality.loc[("u", 3), "n_complete"] == 2 and math.isnan(quality.loc[("u", 1), "ndcg"])
    assert ranking_quality(scored()).set_index(["target", "k"]).loc[("u", 2), "ndcg"] == 1.0
