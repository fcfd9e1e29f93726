"""SPoT's generic comparison (section 2, Table 1): each method's benchmark scores over the study's targets.

Rows: PROMPTTUNING (stage target), MODELTUNING (model_tuning), SPoT from each source (transfer: the target prompt
started from that source's prompt; SPoT's sources are mixtures) and MULTI-TASK MODELTUNING from each source
(mt_target). A run's `score` is already its task's score (the mean of the task's metrics, `Task.score`). A
benchmark's score, per row and seed, is the mean over its tasks among the study's targets; a seed counts only where
the row has a run of every one of those tasks (no mean over fewer tasks than the design's). The table gives mean and
standard deviation over the seeds that count, and their number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from spot_core.tags import BENCHMARK_TASKS, Stage

METHODS = {  # stage -> Table 1's row name (a source's rows add the source)
    Stage.TARGET: "PromptTuning",
    Stage.MODEL_TUNING: "ModelTuning",
    Stage.TRANSFER: "SPoT",
    Stage.MT_TARGET: "Multi-task ModelTuning",
}
GENERIC_COLUMNS = ("method", "source", "task", "seed", "score")


def method_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of Table 1's rows, as (method, source, task, seed, score): "" as the source of the rows that have
    none (prompt tuning, model tuning)."""
    rows = runs[runs["stage"].isin([str(s) for s in METHODS])]
    has_source = rows["stage"].isin([str(Stage.TRANSFER), str(Stage.MT_TARGET)])
    return pd.DataFrame(
        {
            "method": rows["stage"].map({str(k): v for k, v in METHODS.items()}),
            "source": rows["source"].where(has_source, ""),
            "task": rows["target"],
            "seed": rows["seed"],
            "score": rows["score"],
        }
    ).reset_index(drop=True)


def row_order(table: pd.DataFrame) -> list[tuple[str, str]]:
    """Table 1's order: prompt tuning, model tuning, then each source's SPoT and multi-task model tuning rows."""
    rank = {name: i for i, name in enumerate(METHODS.values())}
    pairs = set(zip(table["method"], table["source"], strict=True))
    return sorted(pairs, key=lambda p: (p[1] != "", p[1], rank[p[0]]))


def seed_scores(
    runs: pd.DataFrame, targets: Sequence[str], benchmarks: Mapping[str, Sequence[str]] = BENCHMARK_TASKS
) -> pd.DataFrame:
    """Per row (method, source), benchmark with tasks among `targets` and seed: the mean score over the benchmark's
    tasks, for the seeds where the row has every such task. Columns: method, source, benchmark, seed, score."""
    table = method_runs(runs)
    parts = []
    for name, tasks in benchmarks.items():
        held = [t for t in tasks if t in targets]
        if not held:
            continue
        for (method, source), rows in table[table["task"].isin(held)].groupby(["method", "source"]):
            per_seed = rows.pivot_table(index="seed", columns="task", values="score", aggfunc="mean")
            means = per_seed.reindex(columns=held).dropna().mean(axis=1)
            parts.append(pd.DataFrame({"method": method, "source": source, "benchmark": name,
                                       "seed": means.index, "score": means.to_numpy()}))  # fmt: skip
    columns = ["method", "source", "benchmark", "seed", "score"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def benchmark_scores(
    runs: pd.DataFrame, targets: Sequence[str], benchmarks: Mapping[str, Sequence[str]] = BENCHMARK_TASKS
) -> pd.DataFrame:
    """Per row (method, source) and benchmark with tasks among `targets`: mean, std (ddof 1) and n over the seeds
    where the row has every such task (`seed_scores`), and `tasks`, how many of the benchmark's tasks the design
    holds ("3/8"). Index (method, source); columns (benchmark, statistic)."""
    table, per_seed = method_runs(runs), seed_scores(runs, targets, benchmarks)
    out: dict[tuple[str, str], dict[tuple[str, str], object]] = {pair: {} for pair in row_order(table)}
    for name, tasks in benchmarks.items():
        held = [t for t in tasks if t in targets]
        if not held:
            continue
        scored = per_seed[per_seed["benchmark"] == name]
        for method, source in table[table["task"].isin(held)].groupby(["method", "source"]).groups:
            means = scored[(scored["method"] == method) & (scored["source"] == source)]["score"]
            out[(method, source)].update({
                (name, "mean"): means.mean() if len(means) else np.nan,
                (name, "std"): means.std(ddof=1) if len(means) > 1 else np.nan,
                (name, "n"): len(means),
                (name, "tasks"): f"{len(held)}/{len(tasks)}",
            })  # fmt: skip
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["method", "source"])
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["benchmark", "statistic"])
    return frame


def task_scores(runs: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    """Per row (method, source) and target task: mean, std (ddof 1) and n of the score over seeds. Index (method,
    source); columns (task, statistic), the tasks in `targets`' order."""
    table = method_runs(runs)
    grouped = table.groupby(["method", "source", "task"])["score"]
    stats = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()})
    wide = stats.unstack("task").swaplevel(0, 1, axis=1)
    present = [t for t in targets if t in wide.columns.get_level_values(0)]
    wide = wide.reindex(columns=pd.MultiIndex.from_product([present, ["mean", "std", "n"]]))
    return wide.reindex(pd.MultiIndex.from_tuples(row_order(table), names=["method", "source"]))


def model_size(runs: pd.DataFrame, facts: pd.DataFrame) -> float:
    """A study's model's parameter count: what its model-tuning runs train (every weight); NaN without one."""
    tuned = runs.loc[runs["stage"].isin([str(Stage.MODEL_TUNING), str(Stage.MT_TARGET)]), "key"]
    counts = facts.loc[facts["key"].isin(tuned), "trainable_params"].dropna()
    return float(counts.max()) if len(counts) else np.nan


def size_table(studies: Sequence[tuple[str, float, pd.DataFrame]], benchmark: str = "SuperGLUE") -> pd.DataFrame:
    """Figure 1's points: per study (name, parameter count, its `benchmark_scores`), each row's `benchmark` mean,
    std and n. Columns: study, params, method, source, label, mean, std, n; rows by method, then size."""
    rows = []
    for name, params, table in studies:
        if benchmark not in table.columns.get_level_values(0):
            continue
        for (method, source), values in table[benchmark].iterrows():
            label = f"{method} ({source})" if source else method
            rows.append({"study": name, "params": params, "method": method, "source": source, "label": label,
                         "mean": values["mean"], "std": values["std"], "n": values["n"]})  # fmt: skip
    columns = ["study", "params", "method", "source", "label", "mean", "std", "n"]
    return pd.DataFrame(rows, columns=columns).sort_values(["label", "params"], kind="stable").reset_index(drop=True)
