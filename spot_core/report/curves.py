"""Best-of-top-k curves: the score retrieval reaches when it may try the k most similar source prompts."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from spot_core.report.style import save_figure, styled, text_width, wrap_text

METHOD_LABELS = {"avg_tokens": "avg. tokens", "per_token": "per-token"}
SIZE = (5.2, 3.4)
COLORS = ("#1f77b4", "#d95f02", "#1b9e77", "#7570b3", "#e7298a")
MARKERS = ("o", "s", "^", "D", "v")


def k_curve(
    curves: pd.DataFrame,
    path_stem: Path,
    *,
    oracle: float,
    baseline: float,
    title: str,
    ylabel: str = "average target score",
) -> list[Path]:
    """Plot best-of-top-k score against k and write `<path_stem>.png` and `<path_stem>.pdf`.

    Args: as `k_curve_figure`; path_stem: output path without a suffix.

    Returns:
        The PNG and PDF paths.
    """
    fig = k_curve_figure(curves, oracle=oracle, baseline=baseline, title=title, ylabel=ylabel)
    return save_figure(fig, path_stem)


@styled
def k_curve_figure(curves: pd.DataFrame, *, oracle: float, baseline: float, title: str,
                   ylabel: str = "average target score") -> Figure:
    """One line per method with a mean +- std band, and the oracle and baseline as horizontal references.

    Args:
        curves: columns `k`, `method`, `mean`, `std` (NaN std: no band at that k); methods are drawn in order of
            first appearance.
        oracle: the brute-force best over all candidates.
        baseline: prompt tuning from scratch on the target.
        title: the figure title.
        ylabel: the y-axis label.
    """
    missing = {"k", "method", "mean", "std"} - set(curves.columns)
    if missing:
        raise ValueError(f"curves lacks columns {sorted(missing)}; expected k, method, mean, std")
    fig = Figure(figsize=SIZE, layout="constrained")
    ax = fig.add_subplot()
    for index, (method, rows) in enumerate(curves.groupby("method", sort=False)):
        _draw_method(ax, rows.sort_values("k"), str(method), index)
    ax.axhline(oracle, color="black", linestyle="--", linewidth=1.0, label=f"oracle ({oracle:.1f})")
    ax.axhline(baseline, color="#7f7f7f", linestyle=":", linewidth=1.2, label=f"baseline ({baseline:.1f})")
    ks = np.sort(curves["k"].unique())
    ax.set_xticks(ks, [str(int(k)) for k in ks])
    ax.set_xlabel("k (source prompts tried)")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", color="#e0e0e0", linewidth=0.6)
    ax.set_axisbelow(True)
    # Outside the axes: inside, the legend would sit on the curves that climb towards the oracle line.
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", frameon=False)
    # The title starts over the axes and must end before the legend: the figure less the legend (its labels,
    # handles and pads) and the y axis's labels.
    legend = max(text_width(label, mpl.rcParams["legend.fontsize"]) for label in labels) + 0.6
    ax.set_title(wrap_text(title, SIZE[0] - legend - 0.8, mpl.rcParams["axes.titlesize"]), loc="left")
    return fig


def _draw_method(ax, rows: pd.DataFrame, method: str, index: int) -> None:
    k, mean, std = (rows[c].to_numpy(dtype=float) for c in ("k", "mean", "std"))
    color = COLORS[index % len(COLORS)]
    # Each later method is drawn thinner on top, so curves that coincide (small studies often rank alike) stay
    # visible as a line inside a wider one instead of one hiding the other.
    width = max(3.5 - 1.5 * index, 1.0)
    ax.plot(k, mean, marker=MARKERS[index % len(MARKERS)], markersize=2 + 2 * width, color=color, linewidth=width,
            label=METHOD_LABELS.get(method, method.replace("_", " ")))
    # Where std is NaN (one seed) the band simply has a gap rather than pretending zero spread.
    ax.fill_between(k, mean - std, mean + std, color=color, alpha=0.18, linewidth=0)
