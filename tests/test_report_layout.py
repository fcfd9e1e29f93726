"""Every figure keeps its text on the canvas, from a 1x1 study to 16 sources x 10 targets.

A figure is drawn as `save_figure` draws it (Agg, the report's rcParams and DPI), recording every text artist
that is actually drawn (titles, axis labels, tick labels, colour-bar labels, annotations); each one's window
extent must lie inside the canvas.
"""

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from spot_core.report import correlation_figure, correlation_scatter, heatmap_figure, k_curve_figure
from spot_core.report.style import DPI, RC, text_width, wrap_text

TASKS = [
    "mnli_v1",
    "qqp_v1",
    "squad_v1",
    "sst2_v1",
    "record_v1",
    "cxc_v1",
    "yelp_polarity_v1",
    "winogrande_v1",
    "c4_v1",
    "cosmos_qa_v1",
    "race_v1",
    "drop_v1",
    "hellaswag_v1",
    "anli_v1",
    "qnli_v1",
    "goemotions_v1",
]
# The report's longest titles and colour-bar labels (spot_core.report.study and su).
HEATMAPS = [
    ("Relative error reduction over the baseline (%)", "(score - base) / (100 - base), %", 0.0, ".1f"),
    ("Zero-shot transfer: relative performance (%)", "zero-shot score / target's own prompt score (%)", 100.0, ".0f"),
    ("Task similarity (negative Euclidean distance)", "-distance", None, ".2f"),
]
# (sources, targets): the smallest study, the smoke study's 2-column grids, and the largest we support.
GRIDS = [(1, 1), (2, 2), (3, 2), (2, 3), (16, 10), (10, 16), (1, 16), (16, 1)]
SCATTER_TITLE = "Similarity (negative Euclidean distance) vs relative error reduction"


def drawn_texts(fig, monkeypatch) -> tuple[list[Text], object]:
    """Draw `fig` as the PNG is drawn; the texts that were drawn (visible, non-empty) and the renderer."""
    drawn, draw = [], Text.draw

    def record(self, renderer):
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        return draw(self, renderer)

    monkeypatch.setattr(Text, "draw", record)
    FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    with mpl.rc_context(RC):
        fig.canvas.draw()
    monkeypatch.setattr(Text, "draw", draw)
    return drawn, fig.canvas.get_renderer()


def assert_on_canvas(fig, monkeypatch, expect: list[str]) -> list[Text]:
    texts, renderer = drawn_texts(fig, monkeypatch)
    width, height = fig.canvas.get_width_height()
    off = []
    for text in texts:
        box = text.get_window_extent(renderer)
        if box.x0 < -0.5 or box.y0 < -0.5 or box.x1 > width + 0.5 or box.y1 > height + 0.5:
            off.append(f"{text.get_text()!r} at x {box.x0:.0f}..{box.x1:.0f}, y {box.y0:.0f}..{box.y1:.0f}")
    assert not off, f"text off the {width}x{height} canvas: " + "; ".join(off)
    shown = {t.get_text().replace("\n", " ") for t in texts}
    assert set(expect) <= shown, f"not drawn: {set(expect) - shown}"  # the check saw what it should
    return texts


def title_of(ax, texts: list[Text]) -> Text:
    """The drawn text artist of the axes' (left) title."""
    return next(t for t in texts if t.axes is ax and t.get_text() == ax.get_title(loc="left"))


def grid(rows: int, cols: int, seed: int = 0) -> pd.DataFrame:
    values = np.random.default_rng(seed).normal(100, 60, (rows, cols))
    return pd.DataFrame(values, index=TASKS[:rows], columns=TASKS[::-1][:cols])


@pytest.mark.parametrize(("rows", "cols"), GRIDS, ids=[f"{r}x{c}" for r, c in GRIDS])
@pytest.mark.parametrize(("title", "value_label", "center", "fmt"), HEATMAPS, ids=["rel", "zero_shot", "similarity"])
def test_heatmap_text_stays_on_the_canvas(rows, cols, title, value_label, center, fmt, monkeypatch):
    matrix = grid(rows, cols)
    counts = pd.DataFrame(2, index=matrix.index, columns=matrix.columns)
    counts.iloc[0, 0] = 1  # a thin cell: two-line annotations, taller cells
    matrix.iloc[-1, -1] = np.nan
    fig = heatmap_figure(matrix, title=title, value_label=value_label, center=center, fmt=fmt, counts=counts)
    texts = assert_on_canvas(fig, monkeypatch, [title, value_label, "source task", "target task", "mnli"])
    colorbar_ticks = [t for t in fig.axes[1].get_yticklabels() if t in texts]
    assert colorbar_ticks, "the colour bar's tick labels were drawn and checked"


@pytest.mark.parametrize(("sources", "targets"), [*GRIDS, (4, 5)], ids=[f"{r}x{c}" for r, c in [*GRIDS, (4, 5)]])
def test_scatter_grid_text_stays_on_the_canvas_and_panel_titles_apart(sources, targets, monkeypatch):
    rng = np.random.default_rng(1)
    names = TASKS[::-1][:targets]
    points = pd.DataFrame(
        [(t, s, rng.uniform(0.01, 0.03), rng.normal(0, 40)) for t in names for s in TASKS[:sources]],
        columns=["target", "source", "similarity", "rel"],
    )
    stats = pd.DataFrame({"pearson_r": -0.123, "pearson_p": 0.0123, "spearman_rho": 0.1, "n": sources}, index=names)
    fig = correlation_figure(points, stats, title=SCATTER_TITLE)
    texts = assert_on_canvas(
        fig, monkeypatch, [SCATTER_TITLE, "task similarity (source, target)", "relative error reduction (%)"]
    )
    boxes = [title_of(ax, texts).get_window_extent(fig.canvas.get_renderer()) for ax in fig.axes if ax.get_visible()]
    assert len(boxes) == targets
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), "two panel titles run into each other"


@pytest.mark.parametrize(("ks", "methods"), [(1, 1), (3, 2), (16, 4)])
def test_k_curve_text_stays_on_the_canvas(ks, methods, monkeypatch):
    names = ["avg_tokens", "per_token", "euclidean", "neuron_overlap"][:methods]
    curves = pd.DataFrame(
        [(k, m, 70 + k, 1.0) for m in names for k in range(1, ks + 1)], columns=["k", "method", "mean", "std"]
    )
    title = "Best of top-k retrieved source prompts, mean over every target of the study"
    fig = k_curve_figure(curves, oracle=80.123, baseline=-75.0, title=title)
    texts = assert_on_canvas(fig, monkeypatch, ["k (source prompts tried)", "average target score", "baseline (-75.0)"])
    renderer = fig.canvas.get_renderer()
    title_box = title_of(fig.axes[0], texts).get_window_extent(renderer)
    assert title_box.x1 > title_box.x0 and "\n" in title_of(fig.axes[0], texts).get_text()  # wrapped
    assert not title_box.overlaps(fig.legends[0].get_window_extent(renderer)), "the title runs into the legend"


def test_wrapped_figures_render_byte_identically(tmp_path):
    points = pd.DataFrame(
        {
            "target": ["yelp_polarity_v1"] * 3 + ["cb_v1"] * 3,
            "source": ["a_v1", "b_v1", "c_v1"] * 2,
            "similarity": [0.1, 0.2, 0.3] * 2,
            "rel": [1.0, -2.0, 3.0] * 2,
        }
    )
    stats = pd.DataFrame(
        {"pearson_r": [0.5, -0.5], "pearson_p": [0.01, 0.2], "n": [3, 3]}, index=["yelp_polarity_v1", "cb_v1"]
    )
    first = {p.name: p.read_bytes() for p in correlation_scatter(points, stats, tmp_path / "c", title=SCATTER_TITLE)}
    again = {p.name: p.read_bytes() for p in correlation_scatter(points, stats, tmp_path / "c", title=SCATTER_TITLE)}
    assert first == again


def test_wrap_text_breaks_between_words_to_the_width():
    with mpl.rc_context(RC):
        text = "Zero-shot transfer: relative performance (%)"
        wrapped = wrap_text(text, 2.0, 10)
        assert wrapped.replace("\n", " ") == text and wrapped.count("\n") == 1
        assert all(text_width(line, 10) <= 2.0 for line in wrapped.split("\n"))
        assert wrap_text(text, 10.0, 10) == text  # fits: unchanged
        assert wrap_text("a_very_long_task_name b", 0.5, 10) == "a_very_long_task_name\nb"  # a word stays whole
        assert wrap_text("line one\nline two", 10.0, 10) == "line one\nline two"
        assert text_width("xx", 20) > text_width("xx", 10) > text_width("x", 10)
