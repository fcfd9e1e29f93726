"""Transfer methods compared on the same targets and seeds: SPoT (oracle, retrieval), ATTEMPT (Asai et al. 2022)
and MPT (Wang et al. 2023) against prompt tuning from scratch; their scores and what each costs.

Methods (rows), each listed only where the study has its runs:
    baseline          prompt tuning from scratch (stage target)
    oracle            SPoT's oracle: per target, the source run whose transfer has the best mean over seeds
                      (`retrieval.pick_best_of_top_k` over every source run, as Table 3's oracle; undefined, so
                      NaN, until every candidate has every seed)
    weighted_average  SPoT retrieval: the similarity-weighted average of the top-k source prompts, one row per k
    mixture           SPoT retrieval: a prompt trained on the top-k sources' tasks plus the target, one row per k
    attempt           ATTEMPT, one row per variant (its runs' source: "attempt-all", "attempt-top{k}")
    mpt               MPT: the target's prompt from the shared prompt of one multitask run on every source

What a method needs (N: the study's source runs): `source_runs` trained before the target's, and `target_runs` per
target and seed. baseline 0 / 1; oracle N / N (a transfer from each source run); weighted_average N (every source
run is ranked by its task embedding, then the top k averaged) / 1; mixture N + 1 (ranked, plus the mixture prompt)
/ 1; attempt: the source prompts it mixed (its attention's prompts, a task counted once per source run) / 1 --
a top-k variant mixes k, but ranking them needed every source run and the target's baseline runs, as retrieval
does; mpt 1 (the multitask run) / 1.

Costs per run come from the facts table: trainable parameters (the median over a method's runs on a target),
steps and seconds to the best validation score (means). Missing runs stay NaN, never zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from spot_core.analysis.candidates import RANKING_COLUMNS
from spot_core.analysis.frames import (
    FACT_COLUMNS,
    check_attention,
    check_facts,
    check_runs,
    order,
    pair_matrix,
    seed_table,
    stage,
    study_seeds,
)
from spot_core.analysis.retrieval import pick_best_of_top_k, strategy_runs, summarise_row
from spot_core.tags import OWN_PROMPT, Retrieval, Stage

METHOD_LABELS = {
    "baseline": "Baseline (prompt tuning)",
    "oracle": "SPoT oracle",
    "weighted_average": "SPoT weighted average",
    "mixture": "SPoT mixture",
    "attempt": "ATTEMPT",
    "mpt": "MPT",
}
COST_COLUMNS = ["trainable_params", "best_step", "seconds_to_best", "source_runs", "target_runs"]
MEMBER_COLUMNS = ["method", "variant", "key", "target", "seed", "score", "source_runs", "target_runs"]


def method_label(method: str, variant: str = "") -> str:
    """The report's name of a method row ("SPoT mixture (top-3)", "ATTEMPT (attempt-all)")."""
    return METHOD_LABELS.get(method, method) + (f" ({variant})" if variant else "")


def method_runs(
    runs: pd.DataFrame, attention: pd.DataFrame | None = None, seeds: Sequence[int] | None = None
) -> tuple[list[tuple[str, str]], pd.DataFrame]:
    """The runs each method's score rests on.

    Returns:
        The (method, variant) pairs the study has, in the module's order (the oracle whenever there are transfer
        runs, defined or not), and their runs: columns MEMBER_COLUMNS (source_runs and target_runs per run, see
        the module's docstring; an ATTEMPT run without attention rows has NaN source_runs).
    """
    runs = check_runs(runs)
    seeds = study_seeds(runs) if seeds is None else list(seeds)
    n = int(len(stage(runs, Stage.SOURCE)))
    present, parts = [], []

    def add(rows: pd.DataFrame, method: str, variant: str, source_runs, target_runs: int) -> None:
        present.append((method, variant))
        rows = rows.assign(method=method, variant=variant, source_runs=source_runs, target_runs=target_runs)
        parts.append(rows.loc[:, MEMBER_COLUMNS].astype({"source_runs": float, "target_runs": float}))

    if not stage(runs, Stage.TARGET).empty:
        add(stage(runs, Stage.TARGET), "baseline", "", 0, 1)
    if not stage(runs, Stage.TRANSFER).empty:
        add(_oracle_runs(runs, seeds), "oracle", "", n, n)
    retrieved = strategy_runs(runs)
    for strategy in Retrieval:  # SPoT's order: weighted average, then mixture
        for k, rows in retrieved[retrieved["strategy"] == strategy].groupby("k", sort=True):
            add(rows, strategy.value, f"top-{k}", n + int(strategy is Retrieval.MIXTURE), 1)
    mixed = _mixed_prompts(attention)
    for variant, rows in stage(runs, Stage.ATTEMPT).groupby("source", sort=True):
        add(rows, "attempt", variant, rows["key"].map(mixed), 1)
    if not stage(runs, Stage.MPT).empty:
        add(stage(runs, Stage.MPT), "mpt", "", 1, 1)
    members = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=MEMBER_COLUMNS)
    return present, members


def _oracle_runs(runs: pd.DataFrame, seeds: Sequence[int]) -> pd.DataFrame:
    """The transfer runs of each target's oracle pick (none for a target whose oracle is undefined)."""
    sources, transfers = stage(runs, Stage.SOURCE), stage(runs, Stage.TRANSFER)
    targets = sorted(set(transfers["target"]))
    ranking = pd.DataFrame(
        [
            ("oracle", t, i, key, task, np.nan)
            for t in targets
            for i, (key, task) in enumerate(zip(sources["key"], sources["task"], strict=True), start=1)
        ],
        columns=RANKING_COLUMNS,
    )
    if ranking.empty:
        return transfers.iloc[:0]
    picks = pick_best_of_top_k(ranking, runs, [len(sources)], seeds)
    picked = picks.loc[picks["source_key"] != "", ["target", "source_key"]]
    return transfers.merge(picked, on=["target", "source_key"])


def _mixed_prompts(attention: pd.DataFrame | None) -> pd.Series:
    """ATTEMPT run key -> how many source prompts it mixed (its attention rows but the target's own)."""
    if attention is None or attention.empty:
        return pd.Series(dtype=float)
    rows = check_attention(attention)
    return rows[rows["prompt"] != OWN_PROMPT].groupby("key").size().astype(float)


def method_comparison(
    runs: pd.DataFrame,
    facts: pd.DataFrame | None = None,
    attention: pd.DataFrame | None = None,
    targets: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Every method on every target: score, gain over the baseline and costs.

    Args:
        runs: the runs table. facts: FACT_COLUMNS (costs NaN without it). attention: ATTENTION_COLUMNS (ATTEMPT's
        source_runs NaN without it). targets: row order (default every target with runs, sorted). seeds: the
        study's seeds (default the baseline's).

    Returns:
        One row per (method, target), methods in `method_runs`' order: method, variant, target, mean, std
        (ddof=1, NaN for one run), n, seed_scores (tuple in seed order, NaN where missing), complete (the method
        has every seed and the baseline is complete), gain (mean - baseline mean), then COST_COLUMNS. A target
        without runs of a method has NaN values and n = 0.
    """
    runs = check_runs(runs)
    seeds = study_seeds(runs) if seeds is None else list(seeds)
    present, members = method_runs(runs, attention, seeds)
    facts = check_facts(pd.DataFrame(columns=list(FACT_COLUMNS)) if facts is None else facts)
    members = members.merge(facts, on="key", how="left")
    members["best_step"] = members["best_step"].astype(float)
    targets = order(targets, members["target"])
    base = stage(runs, Stage.TARGET).groupby("target")["score"].mean().reindex(targets)
    base_complete = seed_table(stage(runs, Stage.TARGET), "target", seeds).reindex(targets).notna().all(axis=1)
    rows = []
    for method, variant in present:
        mine = members[(members["method"] == method) & (members["variant"] == variant)]
        values = seed_table(mine, "target", seeds).reindex(targets)
        for target in targets:
            row = _target_row(mine[mine["target"] == target])
            complete = bool(values.loc[target].notna().all() and base_complete[target] and len(seeds))
            rows.append(
                {"method": method, "variant": variant, "target": target, **row, "complete": complete}
                | {"seed_scores": tuple(float(v) for v in values.loc[target]), "gain": row["mean"] - base[target]}
            )
    columns = ["method", "variant", "target", "mean", "std", "n", "seed_scores", "complete", "gain", *COST_COLUMNS]
    return pd.DataFrame(rows, columns=columns).astype({col: float for col in COST_COLUMNS})


def _target_row(on: pd.DataFrame) -> dict[str, float | int]:
    """Score (mean, std with ddof=1, n) and costs of a method's runs on one target; NaN without runs."""
    scores = on["score"].dropna()
    return {
        "mean": float(scores.mean()) if len(scores) else np.nan,
        "std": float(scores.std(ddof=1)) if len(scores) > 1 else np.nan,
        "n": len(scores),
        "trainable_params": on["trainable_params"].median(),
        "best_step": on["best_step"].mean(),
        "seconds_to_best": on["seconds_to_best"].mean(),
        "source_runs": on["source_runs"].median(),
        "target_runs": on["target_runs"].median(),
    }


def method_average(comparison: pd.DataFrame) -> pd.DataFrame:
    """Each method averaged over the targets where it and the baseline are complete (`complete`).

    Args:
        comparison: `method_comparison` output.

    Returns:
        One row per method: method, variant, mean, std, gain, gain_std, rel, rel_std (as a Table 3 row,
        `retrieval.summarise_row`: per seed the average over the targets, then mean and std over seeds; the mean
        is the average of the per-target means), COST_COLUMNS averaged over the same targets, n_targets,
        n_left_out.
    """
    base_rows = comparison[comparison["method"] == "baseline"].set_index("target")
    base = base_rows["mean"].where(base_rows["complete"]) if len(base_rows) else pd.Series(dtype=float)
    rows = []
    for (method, variant), group in comparison.groupby(["method", "variant"], sort=False):
        values = pd.DataFrame(group["seed_scores"].tolist(), index=group["target"])
        row = summarise_row(values, base, list(group["target"]))
        kept = group[group["complete"]]
        rows.append(
            {
                "method": method,
                "variant": variant,
                "mean": row["score"],
                "std": row["score_std"],
                "gain": row["abs"],
                "gain_std": row["abs_std"],
                "rel": row["rel"],
                "rel_std": row["rel_std"],
                **{c: kept[c].mean() if len(kept) else np.nan for c in COST_COLUMNS},
                "n_targets": row["n_targets"],
                "n_left_out": row["n_left_out"],
            }
        )
    columns = ["method", "variant", "mean", "std", "gain", "gain_std", "rel", "rel_std", *COST_COLUMNS]
    return pd.DataFrame(rows, columns=[*columns, "n_targets", "n_left_out"])


def attention_matrix(
    attention: pd.DataFrame,
    runs: pd.DataFrame,
    sources: Sequence[str],
    targets: Sequence[str],
    variant: str | None = None,
) -> pd.DataFrame:
    """ATTEMPT's mean attention on each source task's prompt for each target, as sources x targets.

    Per run, a task mixed from two source runs gets the mean of their weights; then the mean over the target's
    ATTEMPT runs (seeds). A weight says how much ATTEMPT drew on a source for the target: a transferability
    indicator, ranked like the others by `attention_ranking`.

    Args:
        attention: ATTENTION_COLUMNS. runs: the runs table. sources: row order; OWN_PROMPT among them gives the
        target's own prompt's weight. targets: column order. variant: the ATTEMPT runs' source ("attempt-all");
        None pools every variant (top-k runs weigh fewer prompts, so their weights run higher).

    Returns:
        sources x targets floats; NaN where no run weighed the prompt (never 0).
    """
    attempt = stage(check_runs(runs), Stage.ATTEMPT)
    attempt = attempt if variant is None else attempt[attempt["source"] == variant]
    rows = check_attention(attention).merge(attempt[["key", "target"]], on="key")
    per_run = rows.groupby(["key", "target", "prompt"], sort=False)["weight"].mean().reset_index()
    values = per_run.groupby(["prompt", "target"])["weight"].mean().rename_axis(["source", "target"])
    return pair_matrix(values, sources, targets).rename_axis(index="source", columns="target")


def attention_ranking(
    attention: pd.DataFrame, runs: pd.DataFrame, targets: Sequence[str], variant: str | None = None
) -> pd.DataFrame:
    """The source runs ranked for each target by ATTEMPT's attention on their task (`attention_matrix`), in
    `rank_candidates`' form, so that `score_candidates`, `correlations` and `ranking_quality` treat it as they
    treat the similarity indicators. Source runs whose task ATTEMPT did not weigh for a target are left out;
    ties keep the runs table's order.

    Returns:
        DataFrame with RANKING_COLUMNS, method "attention" (or "attention[variant]").
    """
    runs = check_runs(runs)
    sources = stage(runs, Stage.SOURCE)
    matrix = attention_matrix(attention, runs, sorted(set(sources["task"])), targets, variant)
    method = "attention" if variant is None else f"attention[{variant}]"
    rows = []
    for target in targets:
        weights = sources["task"].map(matrix[target]).astype(float)
        ranked = sources.assign(similarity=weights).dropna(subset=["similarity"])
        ranked = ranked.sort_values("similarity", ascending=False, kind="stable")
        rows += [(method, target, i, r.key, r.task, r.similarity) for i, r in enumerate(ranked.itertuples(), 1)]
    return pd.DataFrame(rows, columns=RANKING_COLUMNS).astype({"rank": int, "similarity": float})
