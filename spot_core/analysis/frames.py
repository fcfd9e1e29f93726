"""The input tables of the analysis and the small reshapes every computation shares.

`runs`: one row per finished training run (cell) of a study:
    key         the cell's unique key
    stage       source | target | transfer | retrieval_mixture | retrieval, and Su et al.'s stages: zero_shot |
                neurons | cross_source | projector | cross_zero_shot | cross_transfer (spot_core.stages)
    task        the task the run trained on ("rte_v1"; a mixture "mnli_v1+rte_v1")
    source      transfer: the source task; retrieval: a display name, "wavg-top{k}" or "mix-top{k}"; "" otherwise
    source_key  transfer, zero_shot and cross-model runs: the key of the source run the prompt came from;
                neurons: the run whose prompt it probed; "" otherwise
    target      the target task of target / transfer / retrieval runs; "" otherwise
    seed, k     the run's seed; retrieval's k (0 otherwise)
    score       the run's best validation score, 0-100
    retrieval   retrieval and retrieval_mixture runs: how the retrieval built the init, weighted_average (the
                similarity-weighted average of the top-k source prompts) | mixture (a prompt trained on the top-k
                sources' tasks plus the target); "" otherwise (see RETRIEVALS)

`curves`: key, step, score: the validation score at each evaluation of each run.

`facts`: one row per finished run, what its training cost (the run's MLflow param and metrics):
    key                the run's key
    trainable_params   how many numbers training changed (float; NaN for runs logged before the param existed)
    best_step          the step of the best validation score (nullable int; NA for a run without evaluations)
    seconds_to_best    wall-clock seconds from the first evaluation to the one at best_step (NaN when unknown):
                       the time from the first logged val/score to the best one, so set-up and data loading
                       before the first evaluation do not count

`attention`: ATTEMPT runs' mean attention over the prompts they mix on the validation examples, long form:
    key      the ATTEMPT run's key
    prompt   a source task ("sst2_v1"), or OWN_PROMPT for the target's own prompt
    weight   the mean attention weight (a run's weights sum to 1)
    A run that mixed two source runs of one task has two rows for it: the rows count the prompts it mixed.

A missing cell has no row. Nothing here fills a gap with zero: gaps are NaN and counts say what a number rests on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spot_core.tags import Retrieval, Stage

RUN_COLUMNS = ("key", "stage", "task", "source", "source_key", "target", "seed", "k", "score", "retrieval")
CURVE_COLUMNS = ("key", "step", "score")
FACT_COLUMNS = ("key", "trainable_params", "best_step", "seconds_to_best")
ATTENTION_COLUMNS = ("key", "prompt", "weight")
STAGES = tuple(s.value for s in Stage)  # the built-in catalogue's cell stages, in the report's order (added ones last)
RETRIEVALS = tuple(r.value for r in Retrieval)


def check_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table with its columns checked and typed (a copy; row order kept).

    Raises:
        ValueError: a column is missing, or a stage or retrieval is unknown.
    """
    missing = [c for c in RUN_COLUMNS if c not in runs.columns]
    if missing:
        raise ValueError(f"runs lacks columns {missing}; expected {list(RUN_COLUMNS)}")
    out = runs.loc[:, list(RUN_COLUMNS)].copy()
    for column in ("key", "stage", "task", "source", "source_key", "target", "retrieval"):
        out[column] = out[column].fillna("").astype(str)
    out["seed"] = out["seed"].astype(int)
    out["k"] = out["k"].fillna(0).astype(int)
    out["score"] = out["score"].astype(float)
    if (out["stage"] == "").any():  # a stage beyond STAGES is one a study added (`stage_modules`)
        raise ValueError("runs.stage has empty values: every run is of a stage")
    unknown = sorted(set(out["retrieval"]) - {"", *RETRIEVALS})
    if unknown:
        raise ValueError(f"runs.retrieval has unknown values {unknown}; allowed {list(RETRIEVALS)} or ''")
    return out.reset_index(drop=True)


def check_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """The curves table checked and sorted by (key, step)."""
    missing = [c for c in CURVE_COLUMNS if c not in curves.columns]
    if missing:
        raise ValueError(f"curves lacks columns {missing}; expected {list(CURVE_COLUMNS)}")
    out = curves.loc[:, list(CURVE_COLUMNS)].astype({"key": str, "step": int, "score": float})
    return out.sort_values(["key", "step"], kind="stable").reset_index(drop=True)


def check_facts(facts: pd.DataFrame) -> pd.DataFrame:
    """The facts table checked and typed (best_step a nullable int), one row per key (the last wins).

    Raises:
        ValueError: a column is missing.
    """
    _require(facts, FACT_COLUMNS, "facts")
    out = facts.loc[:, list(FACT_COLUMNS)].astype({"key": str, "trainable_params": float, "seconds_to_best": float})
    out["best_step"] = pd.to_numeric(out["best_step"]).astype("Int64")
    return out.drop_duplicates("key", keep="last").reset_index(drop=True)


def check_attention(attention: pd.DataFrame) -> pd.DataFrame:
    """The attention table checked and typed (a copy; rows, repeated prompts included, kept in order).

    Raises:
        ValueError: a column is missing.
    """
    _require(attention, ATTENTION_COLUMNS, "attention")
    out = attention.loc[:, list(ATTENTION_COLUMNS)].astype({"key": str, "prompt": str, "weight": float})
    return out.reset_index(drop=True)


def _require(table: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; expected {list(columns)}")


def stage(runs: pd.DataFrame, name: str) -> pd.DataFrame:
    """The runs of one stage, in the table's order."""
    return runs[runs["stage"] == name]


def study_seeds(runs: pd.DataFrame) -> list[int]:
    """The study's seeds: those of its target (baseline) runs; transfers and retrieval runs share them."""
    return sorted(set(stage(runs, "target")["seed"]))


def seed_table(rows: pd.DataFrame, index: str | list[str], seeds: Sequence[int]) -> pd.DataFrame:
    """Scores as index x seed (columns exactly `seeds`, NaN where a run is missing).

    Duplicate (index, seed) rows, which a finished study does not have, are averaged rather than dropped.
    """
    if rows.empty:
        return pd.DataFrame(columns=list(seeds), dtype=float)
    table = rows.pivot_table(index=index, columns="seed", values="score", aggfunc="mean")
    return table.reindex(columns=list(seeds)).astype(float)


def complete_baseline(runs: pd.DataFrame, seeds: Sequence[int]) -> pd.Series:
    """Target -> baseline mean over seeds; NaN for a target whose baseline lacks a seed."""
    table = seed_table(stage(runs, "target"), "target", seeds)
    return table.mean(axis=1).where(table.notna().all(axis=1) & (len(seeds) > 0))


def mean_std_n(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """mean, std (ddof=1: NaN for a single value) and n of `score` per group."""
    grouped = rows.groupby(by, sort=True)["score"]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()})


def order(given: Sequence[str] | None, present: pd.Series) -> list[str]:
    """The caller's order when given, else the values present sorted (empty strings dropped)."""
    if given is not None:
        return list(given)
    return sorted(v for v in set(present) if v)


def pair_matrix(values: pd.Series, sources: Sequence[str], targets: Sequence[str]) -> pd.DataFrame:
    """A (source, target)-indexed series as a sources x targets float matrix; NaN where a pair has no value."""
    wide = values.unstack("target") if len(values) else pd.DataFrame()
    return wide.reindex(index=list(sources), columns=list(targets)).astype(float)


def lookup(table: pd.DataFrame, index: pd.DataFrame) -> np.ndarray:
    """The rows of a seed table at `index` (one row per row of `index`, NaN rows where the table has none).

    Returns:
        [len(index), len(table.columns)] float array.
    """
    out = np.full((len(index), table.shape[1]), np.nan)
    if len(index) and len(table):
        keys = pd.MultiIndex.from_frame(index) if index.shape[1] > 1 else pd.Index(index.iloc[:, 0])
        out = table.reindex(keys).to_numpy(dtype=float)
    return out


def nan_mean(values) -> float:
    """The mean of the values that are not NaN; NaN (without numpy's empty-slice warning) when none is."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def order_runs(table: pd.DataFrame, sources: Sequence[str], targets: Sequence[str]) -> pd.DataFrame:
    """The runs in the planner's order: stage (STAGES, added stages after), source (a source run's own task),
    target, k, seed; ties keep their order."""
    rank = lambda column, names: column.map({n: i for i, n in enumerate(names)}).fillna(len(names))  # noqa: E731
    source = table["source"].where(table["stage"] != Stage.SOURCE, table["task"])
    table = table.assign(_s=rank(table["stage"], STAGES), _a=rank(source, sources), _b=rank(table["target"], targets))
    table = table.sort_values(["_s", "_a", "source", "_b", "target", "k", "seed", "key"], kind="stable")
    return table.drop(columns=["_s", "_a", "_b"]).reset_index(drop=True)


@dataclass
class StudyResults:
    """What a study logged, as the analysis and the report read it (the tables above).

    Attributes:
        name: the study's name.
        runs: one row per finished run.
        curves: validation score per evaluation (key, step, score).
        embeddings: run key -> task embedding [L, H] (the runs of the stages retrieval compares), numpy.
        sources, targets: the design's order (versioned names); rows and columns follow it.
        planned: how many cells the study planned (None when unknown), to say how complete it is.
        retrieval_similarity: the similarity the retrieval stage ranked with.
        task_embedding: what `embeddings` are: the early prompt checkpoints (SPoT) or their displacement from the
            initial prompt.
        config: the study's configuration (YAML) shown in the report.
        notes: Markdown written into the report's summary (what the reader should know).
        facts: each run's trainable parameters, step of and seconds to its best validation score (FACT_COLUMNS).
        artifacts: what the stages' runs left for the report, by name (each stage's `RunArtifact`s: e.g.
            "attention", ATTEMPT's mean attention as ATTENTION_COLUMNS; "neurons", run key -> activated-neuron
            mask [layers, L, I]).
        sections: the stages' report sections (`StageDef.report`), in the catalogue's order: each takes the
            results, the checked runs table and the report folder, and returns the report's sections.
        extra_sections: sections written as they are, after the stages' ones.
    """

    name: str
    runs: pd.DataFrame
    curves: pd.DataFrame
    embeddings: Mapping[str, np.ndarray]
    sources: Sequence[str]
    targets: Sequence[str]
    planned: int | None = None
    retrieval_similarity: str = "avg_tokens"
    task_embedding: str = "prompt"
    config: str = ""
    notes: str = ""
    facts: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FACT_COLUMNS)))
    artifacts: dict[str, Any] = field(default_factory=dict)
    sections: Sequence[Callable[[StudyResults, pd.DataFrame, Path], list]] = ()
    extra_sections: list = field(default_factory=list)

    def artifact(self, name: str, empty: Any = None) -> Any:
        """What the stages' runs left under `name`, or `empty` when no run left it."""
        return self.artifacts.get(name, empty)
