"""Retrieval evaluation (SPoT section 3.3, Table 3): best of top-k, top-k weighted average and mixture, oracle.

Rules every row follows, so that rows compare like with like:
- A target enters a row only with a score for every study seed and a complete baseline (all seeds); otherwise
  it is left out of that row's average and `n_left_out` counts it. Missing runs are never read as zero.
- A row's score is, per seed, the average over its targets, then mean and std (ddof=1) over seeds. Abs. is the
  same for score - baseline mean, Rel. for the relative error reduction (score - base) / (100 - base).
- Best of top-k picks, per target, the candidate with the best mean over seeds among the k most similar
  (ties: the higher ranked); it is undefined when one of the k lacks a seed, since that one might be best.
  The oracle is best of all N candidates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from spot_core.analysis.candidates import METHODS, score_candidates, transfer_seed_scores
from spot_core.analysis.frames import check_runs, complete_baseline, seed_table, stage, study_seeds
from spot_core.analysis.transfer import relative_error_reduction
from spot_core.similarity import Similarity

PAPER_KS = (1, 3, 6, 9, 12, 15)
SUMMARY_COLUMNS = ["strategy", "method", "k", "score", "score_std", "abs", "abs_std", "rel", "rel_std"]
COUNT_COLUMNS = ["n_targets", "n_cells", "n_left_out"]
_NO_PICK = pd.Series({"source": "", "rank": 0, "similarity": np.nan, "score": np.nan, "gain": np.nan, "rel": np.nan})
LABELS = {
    "baseline": "Baseline",
    "oracle": "Oracle (Brute-force)",
    "weighted_average": "Top-k weighted average",
    "mixture": "Top-k multi-task mixture",
}


def best_of_top_k(ranked: Sequence[str], scores: Mapping[str, float], k: int) -> str | None:
    """The candidate with the best score among the first k ranked; ties go to the higher ranked.

    Returns:
        Its name, or None when one of the first k has no score (absent or NaN): that one might have been best.
    """
    top = list(ranked[:k])
    values = [scores.get(name, np.nan) for name in top]
    if not top or any(np.isnan(v) for v in values):
        return None
    return top[int(np.argmax(values))]  # argmax returns the first maximum: the higher-ranked candidate


def pick_best_of_top_k(
    ranking: pd.DataFrame, runs: pd.DataFrame, ks: Sequence[int] | None = None, seeds: Sequence[int] | None = None
) -> pd.DataFrame:
    """Best of top-k per (method, target, k), for k in `ks` (default 1..N; k > N is skipped).

    Returns:
        DataFrame with columns method, target, k, n_candidates (N), source_key and source of the pick ("" when
        undefined), rank and similarity of the pick (0 / NaN when undefined), score (its mean over seeds),
        seed_scores (tuple in study seed order), gain and rel (against the complete baseline; NaN without one).
        k = N is the oracle.
    """
    runs = check_runs(runs)
    seeds = study_seeds(runs) if seeds is None else list(seeds)
    scored = score_candidates(ranking, runs, seeds)
    table = transfer_seed_scores(runs, seeds)
    per_seed = dict(zip(table.index, table.to_numpy(dtype=float), strict=True))
    rows = []
    for (method, target), group in scored.groupby(["method", "target"], sort=False):
        ranked = list(group["source_key"])
        scores = dict(zip(ranked, group["score"].where(group["complete"]), strict=True))
        by_key = group.set_index("source_key")
        for k in (k for k in (range(1, len(ranked) + 1) if ks is None else ks) if k <= len(ranked)):
            pick = best_of_top_k(ranked, scores, k)
            row = by_key.loc[pick] if pick else _NO_PICK
            values = per_seed[(target, pick)] if pick else np.full(len(seeds), np.nan)
            rows.append(
                (method, target, k, len(ranked), pick or "", row["source"], int(row["rank"]), row["similarity"])
                + (row["score"], tuple(float(v) for v in values), row["gain"], row["rel"])
            )
    columns = ["method", "target", "k", "n_candidates", "source_key", "source", "rank", "similarity", "score"]
    return pd.DataFrame(rows, columns=columns + ["seed_scores", "gain", "rel"])


def summarise_row(values: pd.DataFrame, base: pd.Series, targets: Sequence[str]) -> dict[str, float | int]:
    """One Table 3 row from per-target, per-seed scores.

    Args:
        values: target x seed scores (NaN where missing); targets absent from it count as missing.
        base: target -> complete baseline mean (NaN when incomplete).
        targets: the targets this row should cover.

    Returns:
        score, score_std, abs, abs_std, rel, rel_std, n_targets, n_cells, n_left_out. Rel. averages over the
        targets where it is defined (a baseline of 100 leaves no error to reduce).
    """
    table = values.reindex(list(targets)).astype(float)
    bases = base.reindex(table.index).to_numpy(dtype=float)
    keep = table.notna().all(axis=1).to_numpy() & ~np.isnan(bases) & (table.shape[1] > 0)
    scores, bases = table.to_numpy()[keep], bases[keep][:, None]
    gains = scores - bases
    rels = relative_error_reduction(scores, np.broadcast_to(bases, scores.shape))
    out: dict[str, float | int] = {}
    for name, per_target in (("score", scores), ("abs", gains), ("rel", rels)):
        defined = per_target[~np.isnan(per_target).any(axis=1)]
        per_seed = defined.mean(axis=0) if len(defined) else np.full(scores.shape[1], np.nan)
        out[name] = float(per_seed.mean()) if per_seed.size else np.nan
        out[f"{name}_std"] = float(per_seed.std(ddof=1)) if per_seed.size > 1 else np.nan
    out.update(n_targets=int(keep.sum()), n_cells=int(scores.size), n_left_out=int(len(table) - keep.sum()))
    return out


def strategy_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The retrieval runs of a strategy, with the runs table's columns plus `strategy` (weighted_average |
    mixture: their `retrieval`); their `k` says how many source runs they drew on."""
    rows = stage(check_runs(runs), "retrieval")
    rows = rows[rows["retrieval"] != ""]
    return rows.assign(strategy=rows["retrieval"])


def retrieval_summary(
    ranking: pd.DataFrame,
    runs: pd.DataFrame,
    ks: Sequence[int] | None = None,
    retrieval_method: Similarity | str = Similarity.AVG_TOKENS,
    targets: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Every retrieval row of a study: baseline, oracle, best of top-k per method and k, and each k of the
    weighted-average and mixture runs (listed under `retrieval_method`, the similarity the retrieval stage
    ranked with).

    Args:
        ranking: `rank_candidates` output (one or both methods).
        runs: the runs table.
        ks: best-of-top-k ks (default 1..N).
        retrieval_method: the study's retrieval similarity; the weighted-average and mixture rows go under it.
        targets: the targets every row should cover (default those of the baseline runs and the ranking).
        seeds: the study's seeds (default those of the baseline runs).

    Returns:
        DataFrame with columns strategy (baseline | oracle | best_of_top_k | weighted_average | mixture), method
        ("" for baseline and oracle), k (0 for baseline; N for the oracle), score, score_std, abs, abs_std, rel,
        rel_std, n_targets, n_cells, n_left_out (see `summarise_row`), in the paper's order. The baseline's abs
        and rel are 0 by construction; their stds are the baseline's own spread over seeds.
    """
    runs = check_runs(runs)
    seeds = study_seeds(runs) if seeds is None else list(seeds)
    base = complete_baseline(runs, seeds)
    if targets is None:
        targets = sorted(set(stage(runs, "target")["target"]) | set(ranking["target"]))
    picks = pick_best_of_top_k(ranking, runs, None, seeds)
    # The pool, hence the oracle, is the same for every method: take the first method's.
    oracle = picks[picks["k"] == picks["n_candidates"]].drop_duplicates("target")
    if ks is not None:
        picks = picks[picks["k"].isin(ks)]

    def row(strategy: str, method: str, k: int, values: pd.DataFrame) -> dict:
        return {"strategy": strategy, "method": method, "k": k, **summarise_row(values, base, targets)}

    def pick_values(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(frame["seed_scores"].tolist(), index=frame["target"], columns=seeds)

    rows = [row("baseline", "", 0, seed_table(stage(runs, "target"), "target", seeds))]
    if len(oracle):
        rows.append(row("oracle", "", int(oracle["n_candidates"].max()), pick_values(oracle)))
    for (method, k), group in picks.groupby(["method", "k"], sort=False):
        rows.append(row("best_of_top_k", method, int(k), pick_values(group)))
    for (strategy, k), group in strategy_runs(runs).groupby(["strategy", "k"], sort=True):
        rows.append(row(strategy, Similarity(retrieval_method).value, int(k), seed_table(group, "target", seeds)))
    return _sorted(pd.DataFrame(rows, columns=SUMMARY_COLUMNS + COUNT_COLUMNS))


def _sorted(summary: pd.DataFrame) -> pd.DataFrame:
    """Paper order: baseline, oracle, then per method (avg_tokens first) best of top-k, weighted average, mixture."""
    strategy = {"baseline": 0, "oracle": 1, "best_of_top_k": 2, "weighted_average": 3, "mixture": 4}
    method = {"": -1, **{m.value: i for i, m in enumerate(METHODS)}}
    keys = pd.DataFrame({"m": summary["method"].map(method), "s": summary["strategy"].map(strategy)})
    order = np.lexsort((summary["k"].to_numpy(), keys["s"].to_numpy(), keys["m"].to_numpy()))
    return summary.iloc[order].reset_index(drop=True)


def table3(summary: pd.DataFrame, ks: Sequence[int] = PAPER_KS) -> pd.DataFrame:
    """The retrieval rows laid out like SPoT's Table 3, for a renderer to format.

    Rows: Baseline; Oracle (Brute-force); then per similarity method "Best of Top-k" for each k in `ks` that the
    summary has (k <= N), "Top-k weighted average" and "Top-k multi-task mixture" at their best k. The best k
    is the highest score among the ks that cover the most targets (ties: the smaller k), so a k that rests on
    fewer targets cannot win by leaving hard ones out.

    Args:
        summary: `retrieval_summary` output.
        ks: the best-of-top-k rows to show; the paper's are 1, 3, 6, 9, 12, 15.

    Returns:
        DataFrame with columns row (label), then the summary's columns.
    """
    parts = [summary[summary["strategy"].isin(["baseline", "oracle"])]]
    for method in (m.value for m in METHODS if m.value in set(summary["method"])):
        rows = summary[summary["method"] == method]
        parts.append(rows[(rows["strategy"] == "best_of_top_k") & rows["k"].isin(ks)])
        for strategy in ("weighted_average", "mixture"):
            parts.append(best_k(rows[rows["strategy"] == strategy]))
    table = pd.concat(parts, ignore_index=True)
    labels = [LABELS.get(s, f"Best of Top-{k}") for s, k in zip(table["strategy"], table["k"], strict=True)]
    return table.assign(row=labels)[["row"] + SUMMARY_COLUMNS + COUNT_COLUMNS]


def best_k(rows: pd.DataFrame) -> pd.DataFrame:
    """The row (as a one-row frame) with the best score among those covering the most targets; ties: smaller k."""
    covered = rows[rows["n_targets"] == rows["n_targets"].max()].dropna(subset=["score"])
    if covered.empty:
        return rows.iloc[:0]
    covered = covered.sort_values("k", kind="stable")
    return covered.loc[[covered["score"].idxmax()]]


def search_space(picks: pd.DataFrame) -> pd.DataFrame:
    """What retrieval saves and what it keeps, per (method, k).

    Both gains average over the same targets: those with a defined oracle and baseline (an undefined best of
    top-k there is impossible, its candidates being a subset of the oracle's).

    Args:
        picks: `pick_best_of_top_k` output with k = N included (the default ks).

    Returns:
        DataFrame with columns method, k, n_candidates (N), reduction (1 - k / N, %), gain and oracle_gain (mean
        absolute gains over the targets), gain_kept (gain / oracle_gain, %; NaN unless the oracle gains), n_targets.
    """
    rows = []
    for method, group in picks.groupby("method", sort=False):
        oracle = group[group["k"] == group["n_candidates"]].set_index("target")["gain"].dropna()
        n = int(group["n_candidates"].max())
        oracle_gain = float(oracle.mean()) if len(oracle) else np.nan
        for k, at_k in group[group["target"].isin(oracle.index)].groupby("k", sort=True):
            gain = float(at_k["gain"].mean())
            kept = gain / oracle_gain * 100.0 if oracle_gain > 0 else np.nan
            rows.append((method, int(k), n, (1.0 - k / n) * 100.0, gain, oracle_gain, kept, len(oracle)))
    columns = ["method", "k", "n_candidates", "reduction", "gain", "oracle_gain", "gain_kept", "n_targets"]
    return pd.DataFrame(rows, columns=columns)
