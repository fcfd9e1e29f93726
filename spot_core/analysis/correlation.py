"""How well task similarity predicts transfer: correlation (SPoT section 3.2), NDCG and regret@k (Vu et al. 2020).

One point per candidate (source run) and target: its similarity to the target (`rank_candidates`) against the
relative error reduction of its transfer, the mean over target seeds (`score_candidates`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from spot_core.analysis.candidates import neuron_window_rankings, score_candidates

MIN_POINTS = 3  # a line through two points always fits; below three, r says nothing


def correlation_points(scored: pd.DataFrame) -> pd.DataFrame:
    """The scatter-plot data: candidates with at least one transfer seed and a defined rel.

    Args:
        scored: `score_candidates` output.

    Returns:
        DataFrame with columns method, target, source, source_key, similarity, rel, n (seeds the rel rests on).
    """
    points = scored[(scored["n"] > 0) & scored["rel"].notna()]
    columns = ["method", "target", "source", "source_key", "similarity", "rel", "n"]
    return points.loc[:, columns].reset_index(drop=True)


def correlate(x: Sequence[float], y: Sequence[float]) -> dict[str, float | int]:
    """Pearson r and Spearman rho with their two-sided p-values; NaN below three points or for constant input."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out = {"n": len(x), "pearson_r": np.nan, "pearson_p": np.nan, "spearman_rho": np.nan, "spearman_p": np.nan}
    if len(x) < MIN_POINTS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out  # scipy would warn and return NaN for constant input anyway
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
    out.update(pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue))
    out.update(spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue))
    return out


def correlations(points: pd.DataFrame) -> pd.DataFrame:
    """Per (method, target): similarity vs relative error reduction.

    Returns:
        DataFrame with columns method, target, n, pearson_r, pearson_p, spearman_rho, spearman_p.
    """
    rows = [
        {"method": method, "target": target, **correlate(group["similarity"], group["rel"])}
        for (method, target), group in points.groupby(["method", "target"], sort=False)
    ]
    columns = ["method", "target", "n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p"]
    return pd.DataFrame(rows, columns=columns)


def graded_relevance(true_scores: Sequence[float]) -> np.ndarray:
    """Relevance N - true rank: the best candidate gets N - 1, the worst 0; ties share the better rank.

    A rank-based grade keeps NDCG independent of the score scale (scores are 0-100; 2^score gains would be
    dominated by the single best candidate).
    """
    scores = np.asarray(true_scores, dtype=float)
    true_rank = stats.rankdata(-scores, method="min")
    return (len(scores) - true_rank).astype(float)


def ndcg(relevance_in_ranked_order: Sequence[float], k: int | None = None) -> float:
    """NDCG@k = DCG@k / ideal DCG@k, DCG@k = sum_{i=1..k} rel_i / log2(i + 1); NaN when the ideal DCG is 0."""
    rel = np.asarray(relevance_in_ranked_order, dtype=float)
    k = len(rel) if k is None else min(k, len(rel))
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = float(np.sort(rel)[::-1][:k] @ discounts)
    return float(rel[:k] @ discounts) / ideal if ideal > 0 else math.nan


def regret_at_k(true_scores_in_ranked_order: Sequence[float], k: int) -> float:
    """(O - M_k) / O * 100: O the best true score of all candidates, M_k the best among the first k ranked."""
    scores = np.asarray(true_scores_in_ranked_order, dtype=float)
    best = scores.max()
    return float((best - scores[:k].max()) / best * 100.0) if best != 0 else math.nan


def ranking_quality(scored: pd.DataFrame, ks: Sequence[int] | None = None) -> pd.DataFrame:
    """NDCG@k and regret@k of each similarity ranking against the true transfer ranking.

    The true ranking needs every candidate's full set of seeds (as the oracle does); a target with an
    incomplete candidate gets NaN, and n_complete says how many candidates were complete.

    Args:
        scored: `score_candidates` output.
        ks: cut-offs (default 1..N); N itself gives NDCG@N (regret@N is 0 by definition).

    Returns:
        DataFrame with columns method, target, k, n_candidates, n_complete, ndcg, regret.
    """
    rows = []
    for (method, target), group in scored.groupby(["method", "target"], sort=False):
        group = group.sort_values("rank", kind="stable")
        complete = bool(group["complete"].all())
        scores = group["score"].to_numpy(dtype=float)
        relevance = graded_relevance(scores) if complete else None
        for k in (k for k in (range(1, len(group) + 1) if ks is None else ks) if k <= len(group)):
            quality = (ndcg(relevance, k), regret_at_k(scores, k)) if complete else (math.nan, math.nan)
            rows.append((method, target, k, len(group), int(group["complete"].sum()), *quality))
    columns = ["method", "target", "k", "n_candidates", "n_complete", "ndcg", "regret"]
    return pd.DataFrame(rows, columns=columns)


def indicator_summary(stats_table: pd.DataFrame, quality: pd.DataFrame, k: int = 1) -> pd.DataFrame:
    """Which indicator predicts transfer best: per method (indicator), the means over targets of Pearson r and
    Spearman rho (`correlations`), and of NDCG@k and regret@k (`ranking_quality`); ordered by mean Pearson r,
    best first (NaN last). `targets` counts the targets with a correlation."""
    corr = stats_table.groupby("method", sort=False).agg(
        targets=("pearson_r", "count"), pearson_r=("pearson_r", "mean"), spearman_rho=("spearman_rho", "mean")
    )
    at_k = quality[quality["k"] == k].groupby("method", sort=False)[["ndcg", "regret"]].mean()
    table = corr.join(at_k.rename(columns={"ndcg": f"ndcg@{k}", "regret": f"regret@{k}"}), how="outer")
    table = table.reindex(list(dict.fromkeys([*corr.index, *at_k.index])))
    order = table["pearson_r"].fillna(-np.inf).sort_values(ascending=False, kind="stable").index
    return table.loc[order].reset_index().rename(columns={"index": "method"})


def neuron_window_scores(
    runs: pd.DataFrame, neurons: Mapping[str, np.ndarray], targets: Sequence[str], windows: int = 3
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`correlations` and `ranking_quality` of the neuron overlap within each of `windows` consecutive windows of
    layers (`ranking.neuron_window_rankings`; Su et al. 2022 find the later layers' overlap tells tasks apart
    best), to set beside the whole-model indicators in `indicator_summary`. Empty tables without masks."""
    if not neurons:
        return pd.DataFrame(columns=["method"]), pd.DataFrame(columns=["method", "k"])
    scored = score_candidates(neuron_window_rankings(runs, neurons, targets, windows), runs)
    return correlations(correlation_points(scored)), ranking_quality(scored)
