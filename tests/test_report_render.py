"""The report's rendering layer: files written, byte-identical re-renders, missing cells shown as missing."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spot_core.report import (
    FigureRef,
    Section,
    config_section,
    correlation_figure,
    correlation_scatter,
    display_name,
    display_names,
    heatmap,
    heatmap_figure,
    k_curve,
    k_curve_figure,
    markdown_table_to_html,
    markdown_to_html,
    write_document,
    write_table,
)
from spot_core.report.scatter import panel_title
from spot_core.report.tables import unsigned_zero


@pytest.fixture
def matrix():
    return pd.DataFrame(
        [[58.9, np.nan, -3.04], [-0.04, 20.0, 7.5]],
        index=["mnli_v1", "record_v1"],
        columns=["cb_v1", "wsc_v1", "rte_v1"],
    )


@pytest.fixture
def curves():
    rows = [
        (k, m, 76 + k / 5 + (m == "per_token") * 0.3, 1.0 if k != 9 else np.nan)
        for m in ("avg_tokens", "per_token")
        for k in (1, 3, 6, 9)
    ]
    return pd.DataFrame(rows, columns=["k", "method", "mean", "std"])


@pytest.fixture
def points():
    rng = np.random.default_rng(0)
    rows = [
        (t, s, rng.uniform(0.2, 0.9), rng.normal(0, 10))
        for t in ("cr_v1", "cb_v1", "wsc_v1")
        for s in ("mnli_v1", "qqp_v1", "squad_v1", "sst2_v1")
    ]
    points = pd.DataFrame(rows, columns=["target", "source", "similarity", "rel"])
    stats = pd.DataFrame(
        {"pearson_r": [0.42, -0.1], "pearson_p": [0.08, 0.9], "spearman_rho": [0.4, 0.0], "n": [4, 4]},
        index=["cr_v1", "cb_v1"],
    )
    return points, stats


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def _assert_rerender_identical(render, tmp_path: Path) -> list[Path]:
    first = render(tmp_path / "a")
    snapshot = {p.name: p.read_bytes() for p in first}
    second = render(tmp_path / "a")
    assert [p.name for p in second] == list(snapshot)
    for path in second:
        assert path.read_bytes() == snapshot[path.name], f"{path.name} differs between two renders"
    return second


def test_display_names_drop_versions_unless_they_would_collide():
    assert display_name("mnli_v1") == "mnli"
    assert display_name("mnli_v1+qqp_v12") == "mnli+qqp"
    assert display_name("yelp_polarity") == "yelp_polarity"
    assert display_names(["rte_v1", "cb_v1"]) == ["rte", "cb"]
    assert display_names(["rte_v1", "rte_v2"]) == ["rte_v1", "rte_v2"]


def test_heatmap_writes_png_and_pdf_byte_identically(matrix, tmp_path):
    paths = _assert_rerender_identical(
        lambda d: heatmap(matrix, d / "rel", title="rel", value_label="relative error reduction (%)"), tmp_path
    )
    assert [p.name for p in paths] == ["rel.png", "rel.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
    assert b"CreationDate" not in paths[1].read_bytes()


def test_heatmap_annotates_values_and_marks_missing_cells(matrix):
    fig = heatmap_figure(matrix, title="t", value_label="v")
    # row-major: the NaN cell (mnli -> wsc) reads n/a, never a number
    assert _texts(fig) == ["58.9", "n/a", "-3.0", "0.0", "20.0", "7.5"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cb", "wsc", "rte"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mnli", "record"]
    assert ax.get_xlabel() == "target task" and ax.get_ylabel() == "source task"
    assert len([p for p in ax.patches if p.get_hatch()]) == 1


def test_heatmap_colour_scale_is_symmetric_around_center_or_sequential(matrix):
    diverging = heatmap_figure(matrix, title="t", value_label="v", center=0.0).axes[0].collections[0].norm
    assert (diverging.vmin, diverging.vmax) == (-58.9, 58.9)
    sequential = heatmap_figure(matrix, title="t", value_label="v", center=None).axes[0].collections[0].norm
    assert (sequential.vmin, sequential.vmax) == (-3.04, 58.9)


def test_heatmap_shows_how_many_runs_a_thin_cell_rests_on(matrix):
    counts = pd.DataFrame(3, index=matrix.index, columns=matrix.columns)
    counts.loc["record_v1", "rte_v1"] = 1
    texts = _texts(heatmap_figure(matrix, title="t", value_label="v", counts=counts))
    assert texts[-1] == "7.5\n(n=1)" and texts[0] == "58.9"
    assert _texts(heatmap_figure(matrix, title="t", value_label="v", counts=counts, expected_n=1))[-1] == "7.5"
    with pytest.raises(ValueError, match="shape"):
        heatmap_figure(matrix, title="t", value_label="v", counts=counts.iloc[:1])


def test_heatmap_text_is_light_on_dark_cells():
    fig = heatmap_figure(pd.DataFrame([[-10.0, 0.0, 10.0]]), title="t", value_label="v")
    assert [t.get_color() for t in fig.axes[0].texts] == ["white", "black", "white"]


def test_numbers_rounding_to_zero_lose_their_sign(tmp_path):
    assert unsigned_zero(format(-0.04, ".1f")) == "0.0" and unsigned_zero(format(-0.06, ".1f")) == "-0.1"
    assert unsigned_zero("-0.00e+00") == "0.00e+00" and unsigned_zero("-10") == "-10"
    write_table(pd.DataFrame({"x": [-0.04]}), tmp_path / "z", caption="z")
    assert "| 0.0 |" in (tmp_path / "z.md").read_text()


def test_k_curve_draws_each_method_and_the_references(curves, tmp_path):
    fig = k_curve_figure(curves, oracle=80.0, baseline=75.0, title="k")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["avg. tokens", "per-token", "oracle (80.0)", "baseline (75.0)"]
    assert list(fig.axes[0].get_xticks()) == [1, 3, 6, 9]
    paths = _assert_rerender_identical(
        lambda d: k_curve(curves, d / "k_curve", oracle=80.0, baseline=75.0, title="k"), tmp_path
    )
    assert [p.name for p in paths] == ["k_curve.png", "k_curve.pdf"]
    with pytest.raises(ValueError, match="std"):
        k_curve_figure(curves.drop(columns="std"), oracle=80.0, baseline=75.0, title="k")


def test_correlation_scatter_has_a_panel_per_target(points, tmp_path):
    points_df, stats = points
    fig = correlation_figure(points_df, stats, title="corr")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title(loc="left") for ax in visible] == [
        "cr  r=0.42 (p=0.08), n=4",
        "cb  r=-0.10 (p=0.9), n=4",
        "wsc  r=n/a (p=n/a), n=n/a",
    ]
    assert sorted(t.get_text() for t in visible[0].texts) == ["mnli", "qqp", "squad", "sst2"]
    assert len(visible[0].lines) == 2  # the zero line and the least-squares line
    paths = _assert_rerender_identical(lambda d: correlation_scatter(points_df, stats, d / "corr", title="c"), tmp_path)
    assert [p.name for p in paths] == ["corr.png", "corr.pdf"]


def test_correlation_panel_skips_the_fit_below_three_points():
    points = pd.DataFrame(
        {"target": ["cb_v1"] * 2, "source": ["a_v1", "b_v1"], "similarity": [0.1, 0.2], "rel": [1.0, 2.0]}
    )
    fig = correlation_figure(points, pd.DataFrame(), title="c")
    assert len(fig.axes[0].lines) == 1
    assert panel_title("cr", pd.Series({"pearson_r": 0.5, "pearson_p": 1e-5, "n": 6})) == "cr  r=0.50 (p<0.001), n=6"


def test_write_table_writes_csv_markdown_and_booktabs_latex(tmp_path):
    df = pd.DataFrame(
        {"score": ["80.1 ± 0.3", "74.7 ± 1.1"], "abs_gain": [6.04, np.nan], "n": [3, 3]},
        index=pd.Index(["oracle_v1", "base"], name="method"),
    )
    paths = _assert_rerender_identical(lambda d: write_table(df, d / "t3", caption="Top 10% of rel_err"), tmp_path)
    csv, md, tex = paths
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex"]
    assert pd.read_csv(csv, index_col=0).loc["oracle_v1", "abs_gain"] == 6.04  # full precision
    md_text, tex_text = md.read_text(), tex.read_text()
    assert "| method | score | abs_gain | n |" in md_text
    assert "| base | 74.7 ± 1.1 | – | 3 |" in md_text and "| oracle_v1 | 80.1 ± 0.3 | 6.0 | 3 |" in md_text
    assert "|:---|---:|---:|---:|" in md_text
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex_text.count(rule) == 1
    assert r"oracle\_v1 & 80.1 $\pm$ 0.3 & 6.0 & 3 \\" in tex_text
    assert r"base & 74.7 $\pm$ 1.1 & -- & 3 \\" in tex_text
    assert r"\caption{Top 10\% of rel\_err}" in tex_text and r"abs\_gain" in tex_text
    assert "rel_err" not in tex_text.replace(r"rel\_err", "")


def test_markdown_tables_round_trip_to_html():
    md = "| a | b |\n|:---|---:|\n| x \\| y | <1> |\n\nTable: cap & more\n"
    page = markdown_table_to_html(md)
    assert "<caption>cap &amp; more</caption>" in page
    assert "<th>a</th><th>b</th>" in page
    assert '<td style="text-align:left">x | y</td><td style="text-align:right">&lt;1&gt;</td>' in page
    with pytest.raises(ValueError, match="pipe table"):
        markdown_table_to_html("no table here")


def test_markdown_prose_converts_and_escapes():
    page = markdown_to_html("A **b** `c_d` <x>\n\n- one\n- two\n\n```\nk: v\n```")
    assert page == (
        "<p>A <strong>b</strong> <code>c_d</code> &lt;x&gt;</p>\n<ul><li>one</li><li>two</li></ul>\n"
        "<pre><code>k: v</code></pre>"
    )


def test_document_references_every_figure_and_table(matrix, curves, tmp_path):
    heatmap(matrix, tmp_path / "figures" / "rel", title="rel", value_label="v")
    k_curve(curves, tmp_path / "figures" / "k", oracle=80.0, baseline=75.0, title="k")
    write_table(matrix, tmp_path / "tables" / "rel", caption="Relative error reduction")
    sections = [
        Section(
            "Transfer", text="Rows are sources.", figures=[Path("figures/rel.png")], tables=[Path("tables/rel.md")]
        ),
        Section("Retrieval", figures=[FigureRef(tmp_path / "figures" / "k.png", "best of top-k")]),
        config_section("Configuration", "study:\n  seeds: 3\n"),
    ]
    paths = _assert_rerender_identical(
        lambda d: write_document(tmp_path, title="SPoT report", sections=sections), tmp_path
    )
    md, page = (p.read_text() for p in paths)
    assert [p.name for p in paths] == ["report.md", "report.html"]
    assert "![rel](figures/rel.png)" in md and "![best of top-k](figures/k.png)" in md
    assert "| mnli | 58.9 | – | -3.0 |" not in md  # tables keep the full task names
    assert "| mnli_v1 | 58.9 | – | -3.0 |" in md and "Table: Relative error reduction" in md
    assert "```yaml\nstudy:\n  seeds: 3\n```" in md
    assert page.count("<img ") == 2
    assert '<img src="figures/rel.png"' in page and '<img src="figures/k.png"' in page
    assert "<table>" in page and '<pre><code class="language-yaml">study:' in page


def test_document_rejects_missing_files_and_empty_headings(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_document(tmp_path, title="r", sections=[Section("S", figures=[Path("nope.png")])])
    with pytest.raises(ValueError, match="heading"):
        Section(" ")
