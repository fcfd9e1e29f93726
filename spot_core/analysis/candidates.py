"""Task similarity between tasks of a study and the ranking of source runs for each target (SPoT section 3.2).

The measures themselves live in `similarity`; this module applies them to a study's runs. A candidate
is one source run (several per source task when there are source seeds), named by its key; a target is
represented by all its baseline runs' task embeddings, and a candidate's similarity is the mean over them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from spot_core.analysis.frames import check_runs, complete_baseline, lookup, nan_mean, seed_table, stage, study_seeds
from spot_core.analysis.transfer import relative_error_reduction
from spot_core.similarity import Indicator, Similarity, layer_windows, rank_sources, task_similarity

METHODS = tuple(Indicator)
RANKING_COLUMNS = ["method", "target", "rank", "source_key", "source", "similarity"]


def embedding_keys(
    runs: pd.DataFrame, embeddings: Mapping[str, np.ndarray], stages: Sequence[str] = ("source", "target")
) -> dict[str, list[str]]:
    """Task -> keys of its runs (of the given stages) that have a task embedding, tasks sorted, keys in run order.

    A task that is both a source and a target pools both stages' runs unless `stages` says otherwise.
    """
    runs = check_runs(runs)
    rows = runs[runs["stage"].isin(stages) & runs["key"].isin(embeddings.keys())]
    return {task: list(group["key"]) for task, group in rows.groupby("task", sort=True)}


def task_similarity_matrix(
    tasks: Mapping[str, Sequence[str]],
    embeddings: Mapping[str, np.ndarray],
    method: Indicator | str = Similarity.AVG_TOKENS,
) -> pd.DataFrame:
    """Similarity between every two tasks, each the mean over all pairs of their runs.

    Args:
        tasks: task -> keys of its runs; rows and columns follow this order.
        embeddings: run key -> task embedding [L, H] (neuron_overlap: run key -> neuron mask).
        method: an indicator (see `similarity`).

    Returns:
        A tasks x tasks DataFrame; NaN where a task has no run with an embedding.
    """
    stacks = {task: [embeddings[k] for k in keys if k in embeddings] for task, keys in tasks.items()}
    names = list(tasks)
    values = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names[i:], start=i):
            if stacks[a] and stacks[b]:
                # Both measures are symmetric, so each pair is computed once.
                values[i, j] = values[j, i] = task_similarity(stacks[a], stacks[b], method)
    return pd.DataFrame(values, index=pd.Index(names, name="task"), columns=pd.Index(names, name="task"))


def rank_candidates(
    runs: pd.DataFrame,
    embeddings: Mapping[str, np.ndarray],
    methods: Sequence[Indicator | str] = METHODS,
    targets: Sequence[str] | None = None,
    neurons: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Every source run ranked by similarity to each target, per indicator.

    neuron_overlap compares the runs' activated-neuron masks (`neurons`, run key -> mask), every other indicator
    their task embeddings; an indicator without its inputs is left out.

    Candidates are the stage "source" runs with an embedding, in the runs table's order, which breaks ties (the
    study plans source runs in the order the retrieval stage ranks them). Source runs without an embedding
    cannot be ranked and are not candidates; a target without an embedded baseline run gets no ranking.

    Returns:
        DataFrame with columns method, target, rank (1 = most similar), source_key, source, similarity;
        targets in the given order (default sorted), then by rank.
    """
    runs = check_runs(runs)
    base = stage(runs, "target")
    targets = list(targets) if targets is not None else sorted(set(base["target"]))
    rows = []
    for method in (Indicator(m) for m in methods):
        features = (neurons or {}) if method is Indicator.NEURON_OVERLAP else embeddings
        sources = stage(runs, "source")
        sources = sources[sources["key"].isin(features.keys())]
        candidates = {key: features[key] for key in sources["key"]}
        source_task = dict(zip(sources["key"], sources["task"], strict=True))
        for target in targets:
            target_runs = [features[k] for k in base.loc[base["target"] == target, "key"] if k in features]
            if not target_runs or not candidates:
                continue
            for rank, (key, sim) in enumerate(rank_sources(target_runs, candidates, method), start=1):
                rows.append((method.value, target, rank, key, source_task[key], sim))
    return pd.DataFrame(rows, columns=RANKING_COLUMNS).astype({"rank": int, "similarity": float})


def neuron_window_rankings(
    runs: pd.DataFrame, neurons: Mapping[str, np.ndarray], targets: Sequence[str], windows: int = 3
) -> pd.DataFrame:
    """`rank_candidates` by the neuron overlap within each of `windows` consecutive windows of layers
    (`similarity.layer_windows`), the method named `neuron_overlap[a-b]` (layers a..b, counted from 1).

    Args:
        runs: the runs table.
        neurons: run key -> activated-neuron mask [layers, L, I]; all with the same number of layers.
        targets: the targets to rank for.
        windows: how many windows to split the layers into.

    Returns:
        `rank_candidates`' columns, window after window; empty without masks.
    """
    if not neurons:
        return pd.DataFrame(columns=RANKING_COLUMNS)
    rankings = []
    for window in layer_windows(next(iter(neurons.values())).shape[0], windows):
        masks = {key: mask[window] for key, mask in neurons.items()}
        ranked = rank_candidates(runs, {}, [Indicator.NEURON_OVERLAP], targets, neurons=masks)
        rankings.append(ranked.assign(method=f"{Indicator.NEURON_OVERLAP.value}[{window.start + 1}-{window.stop}]"))
    return pd.concat(rankings, ignore_index=True)


def transfer_seed_scores(runs: pd.DataFrame, seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """The transfer runs as (target, source_key) x seed scores, NaN where a run is missing."""
    runs = check_runs(runs)
    seeds = study_seeds(runs) if seeds is None else list(seeds)
    return seed_table(stage(runs, "transfer"), ["target", "source_key"], seeds)


def score_candidates(ranking: pd.DataFrame, runs: pd.DataFrame, seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """The ranking with each candidate's true transfer result on the target.

    Returns:
        The ranking's columns plus score (mean over the target seeds present), n (how many seeds),
        complete (all study seeds present), base (the baseline mean; NaN unless the baseline has every seed, so
        all gains compare with a full baseline), gain and rel (relative error reduction of the mean score, %).
    """
    runs = check_runs(runs)
    seeds = study_seeds(runs) if seeds is None else list(seeds)
    table = transfer_seed_scores(runs, seeds)
    per_seed = lookup(table, ranking[["target", "source_key"]])
    out = ranking.reset_index(drop=True).copy()
    out["n"] = (~np.isnan(per_seed)).sum(axis=1)
    out["score"] = [nan_mean(row) for row in per_seed]
    out["complete"] = (out["n"] == len(seeds)) & (len(seeds) > 0)
    out["base"] = out["target"].map(complete_baseline(runs, seeds)).astype(float)
    out["gain"] = out["score"] - out["base"]
    out["rel"] = relative_error_reduction(out["score"], out["base"])
    return out
