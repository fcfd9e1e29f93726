"""Annotated heatmaps of source x target matrices (transfer scores, relative error reduction) and task similarities.

Rows and columns keep the DataFrame's order. A NaN cell is a missing experiment: it is drawn grey and hatched with
"n/a", never coloured as a value, so a reader cannot mistake it for zero transfer.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from spot_core.report.style import display_names, save_figure, styled, text_width, wrap_text
from spot_core.report.tables import unsigned_zero

MISSING = "n/a"
MISSING_FACE = "#ececec"
DIVERGING_CMAP = "RdBu"
SEQUENTIAL_CMAP = "viridis"


def heatmap(matrix: pd.DataFrame, path_stem: Path, **options) -> list[Path]:
    """Draw `matrix` as an annotated heatmap and write `<path_stem>.png` and `<path_stem>.pdf`.

    Args: path_stem: output path without a suffix; the rest as `heatmap_figure` (keywords).

    Returns:
        The PNG and PDF paths.
    """
    return save_figure(heatmap_figure(matrix, **options), path_stem)


@styled
def heatmap_figure(
    matrix: pd.DataFrame,
    *,
    title: str,
    value_label: str,
    center: float | None = 0.0,
    fmt: str = ".1f",
    counts: pd.DataFrame | None = None,
    expected_n: int | None = None,
    cmap: str | None = None,
    xlabel: str = "target task",
    ylabel: str = "source task",
) -> Figure:
    """Build the heatmap figure (the texts of `fig.axes[0]` are the cell annotations, row-major).

    Args:
        matrix: [rows, columns] of floats; NaN marks a missing cell.
        title: the figure title.
        value_label: the colourbar label (the quantity and its unit).
        center: the value a diverging colour map is centred on (limits symmetric around it); None for a
            sequential map over the data's range (absolute scores, similarities).
        fmt: format spec of the cell annotations.
        counts: same shape as `matrix`, the number of runs behind each cell; cells resting on fewer runs than
            `expected_n` get "(n=k)" under their value.
        expected_n: the number of runs a full cell has; defaults to the largest count in `counts`.
        cmap: a matplotlib colour map name overriding the default.
        xlabel, ylabel: axis labels.
    """
    values = matrix.to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    labels = _cell_labels(values, fmt, _aligned_counts(matrix, counts), expected_n)
    size, title, value_label = _layout(matrix, labels, title, value_label)
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    norm, colormap = _color_scale(values, center, cmap)
    mesh = ax.pcolormesh(np.ma.masked_invalid(values), norm=norm, cmap=colormap, edgecolors="white", linewidth=0.5)
    _mark_missing(ax, values)
    _annotate(ax, values, labels, mesh, font_size=_font_size(n_rows, n_cols))
    _set_ticks(ax, matrix, xlabel, ylabel)
    colorbar = fig.colorbar(mesh, ax=ax, shrink=min(1.0, max(0.5, 6 / max(n_rows, 1))), aspect=25, pad=0.02)
    colorbar.set_label(value_label)
    colorbar.outline.set_visible(False)
    ax.set_title(title, loc="left")
    return fig


def _aligned_counts(matrix: pd.DataFrame, counts: pd.DataFrame | None) -> np.ndarray | None:
    if counts is None:
        return None
    if counts.shape != matrix.shape:
        raise ValueError(f"counts must have the matrix's shape {matrix.shape}, got {counts.shape}")
    # Align by labels, not by position: a counts frame built in another order must still hit the right cells.
    return counts.reindex(index=matrix.index, columns=matrix.columns).to_numpy(dtype=float)


def _cell_labels(values: np.ndarray, fmt: str, counts: np.ndarray | None, expected_n: int | None) -> np.ndarray:
    """The annotation of every cell: formatted value, "(n=k)" where it rests on too few runs, "n/a" where missing."""
    full = expected_n if expected_n is not None else (np.nanmax(counts) if counts is not None else None)
    labels = np.empty(values.shape, dtype=object)
    for (i, j), value in np.ndenumerate(values):
        if np.isnan(value):
            labels[i, j] = MISSING
            continue
        labels[i, j] = unsigned_zero(format(value, fmt))
        if counts is not None and not np.isnan(counts[i, j]) and counts[i, j] < full:
            labels[i, j] += f"\n(n={int(counts[i, j])})"
    return labels


def _color_scale(values: np.ndarray, center: float | None, cmap: str | None) -> tuple[Normalize, str]:
    present = values[~np.isnan(values)]
    if center is None:
        low, high = (present.min(), present.max()) if present.size else (0.0, 1.0)
        return Normalize(low, high if high > low else low + 1.0), cmap or SEQUENTIAL_CMAP
    spread = np.abs(present - center).max() if present.size else 1.0
    spread = spread if spread > 0 else 1.0
    return Normalize(center - spread, center + spread), cmap or DIVERGING_CMAP


def _mark_missing(ax, values: np.ndarray) -> None:
    for i, j in zip(*np.nonzero(np.isnan(values)), strict=True):
        ax.add_patch(Rectangle((j, i), 1, 1, facecolor=MISSING_FACE, edgecolor="#b0b0b0", hatch="////", lw=0))


def _annotate(ax, values: np.ndarray, labels: np.ndarray, mesh, font_size: float) -> None:
    colormap: Colormap = mesh.get_cmap()
    for (i, j), label in np.ndenumerate(labels):
        missing = np.isnan(values[i, j])
        color = "#505050" if missing else _text_color(colormap(mesh.norm(values[i, j])))
        # The count line is smaller, so the value stays the thing the eye reads first.
        size = font_size if "\n" not in label else font_size * 0.9
        ax.text(j + 0.5, i + 0.5, label, ha="center", va="center", color=color, fontsize=size, linespacing=1.0)


def _text_color(rgba: tuple[float, float, float, float]) -> str:
    """Black on light cells, white on dark ones (WCAG relative luminance of the cell's colour)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if luminance > 0.22 else "white"


def _set_ticks(ax, matrix: pd.DataFrame, xlabel: str, ylabel: str) -> None:
    n_rows, n_cols = matrix.shape
    ax.set_xticks(np.arange(n_cols) + 0.5, display_names(matrix.columns), rotation=45, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks(np.arange(n_rows) + 0.5, display_names(matrix.index))
    ax.set_xlim(0, n_cols)
    ax.set_ylim(n_rows, 0)  # first row on top, as in a table
    ax.tick_params(length=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _font_size(n_rows: int, n_cols: int) -> float:
    return 8.0 if max(n_rows, n_cols) <= 16 else 7.0


def _layout(matrix: pd.DataFrame, labels: np.ndarray, title: str, value_label: str
            ) -> tuple[tuple[float, float], str, str]:
    """The figure size (inches) and the title and colour-bar label wrapped to fit it.

    The margins are measured from the tick labels (slightly over-estimated), so that the title, which starts at
    the axes' left edge, wraps before the canvas's right edge, and the colour-bar label, centred on the axes,
    wraps to the axes' height and the narrower margin: both stay on the canvas at every matrix size.
    """
    n_rows, n_cols = matrix.shape
    longest = max((len(line) for label in labels.flat for line in label.split("\n")), default=3)
    cell_w = max(0.38, 0.075 * longest + 0.12)
    cell_h = 0.42 if any("\n" in label for label in labels.flat) else 0.3
    tick = functools.partial(text_width, size=mpl.rcParams["xtick.labelsize"])
    # y label and pads | y tick labels | cells | colour bar, its tick labels and label
    left = 0.5 + max(map(tick, display_names(matrix.index)), default=0.0)
    right = 1.15
    width = max(3.6, left + n_cols * cell_w + right)
    title = wrap_text(title, width - left - 0.1, mpl.rcParams["axes.titlesize"])
    top = 0.2 + 0.2 * (title.count("\n") + 1)
    bottom = 0.6 + 0.71 * max(map(tick, display_names(matrix.columns)), default=0.0)  # x tick labels at 45 degrees
    height = max(2.8, top + n_rows * cell_h + bottom, top + 1.5 + bottom)
    # Centred on the axes, the label may reach into the narrower of the top and bottom margins.
    room = height - top - bottom + 2 * min(top, bottom) - 0.3
    value_label = wrap_text(value_label, room, mpl.rcParams["axes.labelsize"])
    width += 0.18 * value_label.count("\n")
    return (width, height), title, value_label
