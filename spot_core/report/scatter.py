"""Does task similarity predict transfer? One scatter panel per target: similarity vs. relative error reduction."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from spot_core.report.style import display_name, save_figure, styled, text_width, wrap_text

WRAP = 5
PANEL_IN = (2.75, 2.5)
# The plotting area inside a panel, in points, once tick labels and the title have taken their share.
PANEL_PT = ((PANEL_IN[0] - 0.55) * 72, (PANEL_IN[1] - 0.6) * 72)
PANEL_TITLE_SIZE = 9
# Five tick labels like "0.0125" fit a panel's width; Matplotlib's automatic count (eight) runs them together.
TICKS = 5
POINT_COLOR = "#1f77b4"
FIT_COLOR = "#d95f02"


def correlation_scatter(points: pd.DataFrame, stats: pd.DataFrame, path_stem: Path, *, title: str) -> list[Path]:
    """Draw the small-multiples grid and write `<path_stem>.png` and `<path_stem>.pdf`.

    Args: as `correlation_figure`; path_stem: output path without a suffix.

    Returns:
        The PNG and PDF paths.
    """
    return save_figure(correlation_figure(points, stats, title=title), path_stem)


@styled
def correlation_figure(points: pd.DataFrame, stats: pd.DataFrame, *, title: str) -> Figure:
    """One panel per target (wrapped at 5 columns), in order of first appearance in `points`.

    Args:
        points: columns `target`, `source`, `similarity`, `rel` (relative error reduction, %); one row per
            source prompt.
        stats: indexed by target, columns `pearson_r`, `pearson_p`, `spearman_rho`, `n`.
        title: the figure title.
    """
    missing = {"target", "source", "similarity", "rel"} - set(points.columns)
    if missing:
        raise ValueError(f"points lacks columns {sorted(missing)}; expected target, source, similarity, rel")
    targets = list(pd.unique(points["target"]))
    n_cols = min(WRAP, max(len(targets), 1))
    n_rows = max(1, math.ceil(len(targets) / n_cols))
    width, height = PANEL_IN[0] * n_cols + 0.4, PANEL_IN[1] * n_rows + 0.6
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, target in zip(axes, targets, strict=False):
        row = stats.loc[target] if target in stats.index else None
        _panel(ax, points[points["target"] == target], str(target), row, PANEL_PT)
    for ax in axes[len(targets):]:
        ax.set_visible(False)
    size = mpl.rcParams["figure.titlesize"]
    fig.suptitle(wrap_text(title, width - 0.2, size), x=0.01, ha="left")
    fig.supxlabel(wrap_text("task similarity (source, target)", width - 0.6, mpl.rcParams["figure.labelsize"]))
    fig.supylabel(wrap_text("relative error reduction (%)", height - 0.6, mpl.rcParams["figure.labelsize"]))
    return fig


def _panel(ax, rows: pd.DataFrame, target: str, stats: pd.Series | None, panel_pt: tuple[float, float]) -> None:
    x, y = rows["similarity"].to_numpy(dtype=float), rows["rel"].to_numpy(dtype=float)
    ax.axhline(0.0, color="#9a9a9a", linewidth=0.8, zorder=1)
    ax.scatter(x, y, s=14, color=POINT_COLOR, zorder=3, linewidths=0)
    usable = ~(np.isnan(x) | np.isnan(y))
    # A line through fewer than three points (or one x value) says nothing about a trend.
    if usable.sum() >= 3 and np.ptp(x[usable]) > 0:
        slope, intercept = np.polyfit(x[usable], y[usable], 1)
        xs = np.array([x[usable].min(), x[usable].max()])
        ax.plot(xs, slope * xs + intercept, color=FIT_COLOR, linewidth=1.2, zorder=2)
    _label_points(ax, x, y, [display_name(s) for s in rows["source"]], panel_pt)
    ax.set_title(_fitted(panel_title(display_name(target), stats)), fontsize=PANEL_TITLE_SIZE, loc="left")
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(TICKS))
    ax.yaxis.set_major_locator(MaxNLocator(TICKS))
    ax.grid(color="#eeeeee", linewidth=0.5)
    ax.set_axisbelow(True)


def _label_points(ax, x: np.ndarray, y: np.ndarray, names: list[str], panel_pt: tuple[float, float]) -> None:
    """Label each point with its source, greedily choosing a side where the label hits no earlier label or point.

    Positions are estimated in points from the axes' size and limits before layout, which is close enough to keep
    labels of clustered points apart without a renderer.
    """
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    width, height = panel_pt
    px = (x - x0) / ((x1 - x0) or 1.0) * width
    py = (y - y0) / ((y1 - y0) or 1.0) * height
    present = ~(np.isnan(px) | np.isnan(py))
    dots = [_box(a, b, -_DOT, -_DOT, 2 * _DOT, 2 * _DOT) for a, b in zip(px[present], py[present], strict=True)]
    placed: list[tuple[float, float, float, float]] = []
    for i in np.argsort(px, kind="stable"):
        if not present[i]:
            continue
        w, h = _LABEL_SIZE * 0.62 * len(names[i]), _LABEL_SIZE
        boxes = [(_box(px[i], py[i], dx + (0 if ha == "left" else -w if ha == "right" else -w / 2), dy
                       + (0 if va == "bottom" else -h), w, h), dx, dy, ha, va) for dx, dy, ha, va in _SPOTS]
        # Least overlap wins; within the panel counts too, so labels near the edge turn inwards.
        box, dx, dy, ha, va = min(boxes, key=lambda c: _overlap(c[0], placed + dots) + _outside(c[0], width, height))
        placed.append(box)
        ax.annotate(names[i], (x[i], y[i]), xytext=(dx, dy), textcoords="offset points", fontsize=_LABEL_SIZE,
                    ha=ha, va=va, color="#333333", zorder=4)


_DOT, _LABEL_SIZE = 2.2, 5.5
# (dx, dy, ha, va) in points, in order of preference: right, left, above, below, then the diagonals.
_SPOTS = ((3, 0.5, "left", "bottom"), (-3, 0.5, "right", "bottom"), (0, 3, "center", "bottom"),
          (0, -3, "center", "top"), (3, -0.5, "left", "top"), (-3, -0.5, "right", "top"))


def _box(x: float, y: float, dx: float, dy: float, w: float, h: float) -> tuple[float, float, float, float]:
    return x + dx, y + dy, x + dx + w, y + dy + h


def _overlap(box, others) -> float:
    return sum(max(0.0, min(box[2], o[2]) - max(box[0], o[0])) * max(0.0, min(box[3], o[3]) - max(box[1], o[1]))
               for o in others)


def _outside(box, width: float, height: float) -> float:
    inside = max(0.0, min(box[2], width) - max(box[0], 0.0)) * max(0.0, min(box[3], height) - max(box[1], 0.0))
    return (box[2] - box[0]) * (box[3] - box[1]) - inside


def panel_title(target: str, stats: pd.Series | None) -> str:
    """ "cr  r=0.42 (p=0.08), n=6"; missing statistics read "n/a"."""
    r, p, n = (np.nan, np.nan, np.nan) if stats is None else (stats.get("pearson_r"), stats.get("pearson_p"),
                                                             stats.get("n"))
    r_text = "n/a" if _missing(r) else f"{r:.2f}"
    p_text = "p=n/a" if _missing(p) else ("p<0.001" if p < 0.001 else f"p={p:.2g}")
    n_text = "n/a" if _missing(n) else str(int(n))
    return f"{target}  r={r_text} ({p_text}), n={n_text}"


def _fitted(title: str) -> str:
    """A panel title that would run into the next panel gets its statistics on a second line (and wraps further
    if the task name alone is too wide)."""
    width = PANEL_IN[0] - 0.6  # the panel less its y tick labels and pads
    if text_width(title, PANEL_TITLE_SIZE) <= width:
        return title
    return wrap_text(title.replace("  ", "\n", 1), width, PANEL_TITLE_SIZE)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float | np.floating) and np.isnan(value))
