"""The report's Table 1 section (SPoT section 2): prompt tuning, model tuning, SPoT and multi-task model tuning
from each source, by benchmark (GLUE, SuperGLUE: mean ± std over seeds, with the number of seeds), and per task.

Writes tables/table1 and tables/table1_tasks (.csv, .md, .tex: "mean ± std (n)" cells) and tables/table1_values
(the numbers); across model sizes (Figure 1: `size_section`, several studies of one design), figures/figure1 and
tables/figure1."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from spot_core.analysis.frames import StudyResults
from spot_core.analysis.generic import benchmark_scores, method_runs, task_scores
from spot_core.report.curves import COLORS, MARKERS
from spot_core.report.document import Section
from spot_core.report.style import save_figure, styled
from spot_core.report.tables import mean_std, write_table


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
    """`mean_std` per row of `table`'s `column` group (its mean, std and n)."""
    stats = zip(table[(column, "mean")], table[(column, "std")], table[(column, "n")], strict=True)
    return [mean_std(*v) for v in stats]


def _text(benchmarks: pd.DataFrame, names: list[str]) -> str:
    return (
        "SPoT's generic comparison (Vu et al. 2022, Table 1): prompt tuning and model tuning on each target, and "
        "SPoT and multi-task model tuning from each source (a task or a mixture). A benchmark's score is the mean "
        "of its tasks' scores (a task's score: the mean of its metrics) over the benchmark's tasks among this "
        "study's targets; a seed counts only where the row has every one of them, and (n) says how many seeds did. "
        f"Benchmarks: {', '.join(names)}; rows: {len(benchmarks)}."
    )


@styled
def size_figure(points: pd.DataFrame, benchmark: str) -> Figure:
    """`benchmark`'s score against the parameter count (log scale): a line per row label, a band of ± std."""
    colors, markers = (*COLORS, "#66a61e", "#e6ab02", "#a6761d", "#666666"), (*MARKERS, "P", "X", "*", "h")
    fig = Figure(figsize=(5.6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (label, rows) in enumerate(points.groupby("label", sort=False)):
        x, y, s = (rows[c].to_numpy(dtype=float) for c in ("params", "mean", "std"))
        color = colors[i % len(colors)]
        ax.plot(x, y, marker=markers[i % len(markers)], color=color, label=label, linewidth=max(3.0 - i, 1.0))
        ax.fill_between(x, y - s, y + s, color=color, alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    sizes = sorted(set(points["params"].astype(float)))
    ax.set_xticks(sizes, [f"{p / 1e9:.1f}B" if p >= 1e9 else f"{p / 1e6:.0f}M" for p in sizes])
    ax.xaxis.set_minor_formatter(NullFormatter())  # the sizes' own ticks only: minor labels overlap
    ax.set_xlabel("model parameters")
    ax.set_ylabel(f"{benchmark} score")
    ax.grid(color="#e0e0e0", linewidth=0.6)
    ax.set_axisbelow(True)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", frameon=False)
    ax.set_title(f"{benchmark} by model size", loc="left")
    return fig


def size_section(points: pd.DataFrame, out: Path, benchmark: str = "SuperGLUE") -> Section:
    """Figure 1 (SPoT): `benchmark`'s score against the model's parameter count (log scale), a line per row of
    Table 1, from the same design's studies at several model sizes; and its table."""
    figure_paths = save_figure(size_figure(points, benchmark), out / "figures/figure1")
    shown = points.assign(score=[mean_std(*v) for v in zip(points["mean"], points["std"], points["n"], strict=True)])
    table = write_table(
        shown[["label", "study", "params", "score"]].set_index(["label", "study"]),
        out / "tables/figure1",
        caption=f"Figure 1's points: {benchmark} mean ± std over seeds (n) per method and model size",
        float_fmt="{:.0f}",
    )[1]
    text = (
        f"SPoT's Figure 1: each method's {benchmark} score (Table 1's benchmark mean) against the parameter count of "
        f"the model (log scale), one study per size: {', '.join(dict.fromkeys(points['study']))}."
    )
    return Section(f"{benchmark} across model sizes (Figure 1)", text, [figure_paths[0]], [table])
