"""The report's Table 1 section (SPoT section 2): prompt tuning, model tuning, SPoT and multi-task model tuning
from each source, by benchmark (GLUE, SuperGLUE: mean ± std over seeds, with the number of seeds), and per task.

Writes tables/table1 and tables/table1_tasks (.csv, .md, .tex: "mean ± std (n)" cells) and tables/table1_values
(the numbers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spot_core.analysis.frames import StudyResults
from spot_core.analysis.generic import benchmark_scores, method_runs, task_scores
from spot_core.report.document import Section
from spot_core.report.tables import write_table


def generic_sections(results: StudyResults, runs: pd.DataFrame, out: Path) -> list[Section]:
    """ "Generic transfer (Table 1)" when the study has model-tuning runs (stages model_tuning,
    multitask_model_tuning) beside other rows; nothing otherwise."""
    rows = method_runs(runs)
    if not rows["method"].str.contains("ModelTuning").any():
        return []
    benchmarks = benchmark_scores(runs, results.targets)
    names = list(dict.fromkeys(benchmarks.columns.get_level_values(0)))
    shown = pd.DataFrame(
        {f"{b} ({benchmarks[(b, 'tasks')].dropna().iloc[0]} tasks)": _cells(benchmarks, b) for b in names},
        index=[_label(m, s) for m, s in benchmarks.index],
    ).rename_axis("method")
    caption = "Table 1 layout: each benchmark's mean score over its tasks among the targets, mean ± std over seeds (n)"
    t1 = write_table(shown, out / "tables/table1", caption=caption)[1]
    values = benchmarks.copy()
    values.columns = [f"{b}_{stat}" for b, stat in values.columns]
    write_table(values, out / "tables/table1_values", caption="Table 1's numbers", float_fmt="{:.3f}")
    tasks = task_scores(runs, results.targets)
    per_task = pd.DataFrame(
        {t: _cells(tasks, t) for t in dict.fromkeys(tasks.columns.get_level_values(0))},
        index=[_label(m, s) for m, s in tasks.index],
    ).rename_axis("method")
    t2 = write_table(per_task, out / "tables/table1_tasks", caption="Per target task: mean ± std over seeds (n)")[1]
    return [Section("Generic transfer (Table 1)", _text(benchmarks, names), [], [t1, t2])]


def _label(method: str, source: str) -> str:
    return f"{method} ({source})" if source else method


def _cells(table: pd.DataFrame, column: str) -> list[str | None]:
    """ "80.1 ± 0.3 (2)" per row of `table`'s `column` group; None (missing) where no seed counts."""
    out = []
    for mean, std, n in zip(table[(column, "mean")], table[(column, "std")], table[(column, "n")], strict=True):
        if pd.isna(mean):
            out.append(None)
            continue
        out.append(f"{mean:.1f}" + ("" if np.isnan(std) else f" ± {std:.1f}") + f" ({int(n)})")
    return out


def _text(benchmarks: pd.DataFrame, names: list[str]) -> str:
    return (
        "SPoT's generic comparison (Vu et al. 2022, Table 1): prompt tuning and model tuning on each target, and "
        "SPoT and multi-task model tuning from each source (a task or a mixture). A benchmark's score is the mean "
        "of its tasks' scores (a task's score: the mean of its metrics) over the benchmark's tasks among this "
        "study's targets; a seed counts only where the row has every one of them, and (n) says how many seeds did. "
        f"Benchmarks: {', '.join(names)}; rows: {len(benchmarks)}."
    )
