"""Tables in three forms: CSV (full precision, for re-analysis), Markdown (for the report) and LaTeX (for a paper).

Markdown and LaTeX are written here rather than through `DataFrame.to_markdown` / `Styler.to_latex`, which need
tabulate and jinja2, neither a dependency of the project. Cells that are already strings ("80.1 ± 0.3") pass
through; floats are formatted with `float_fmt`; NaN is "–" in Markdown and "--" in LaTeX.
"""

from __future__ import annotations

import html
import re
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd

MD_MISSING = "–"
TEX_MISSING = "--"
CAPTION_PREFIX = "Table: "
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "±": r"$\pm$", "–": "--", "—": "---", "→": r"$\rightarrow$", "≥": r"$\geq$", "≤": r"$\leq$",
                "Δ": r"$\Delta$"}
_NUMBER_START = re.compile(r"^[-+−]?\.?\d")
_TEX_PATTERN = re.compile("|".join(re.escape(c) for c in _TEX_SPECIAL))


def mean_std(mean: float, std: float, n: float | None = None) -> str | None:
    """A table cell "80.1 ± 0.3 (2)": mean ± std over seeds (no spread shown for one seed, NaN std) and, given, how
    many seeds; None (shown as missing) without a mean."""
    if pd.isna(mean):
        return None
    return f"{mean:.1f}" + ("" if pd.isna(std) else f" ± {std:.1f}") + ("" if n is None else f" ({int(n)})")


def write_table(df: pd.DataFrame, path_stem: Path, *, caption: str, float_fmt: str = "{:.1f}") -> list[Path]:
    """Write `<stem>.csv`, `<stem>.md` and `<stem>.tex`.

    Args:
        df: the table; a non-default index (names of tasks, methods) becomes the first column(s).
        path_stem: output path without a suffix; parent folders are created.
        caption: the table caption (Markdown: a "Table: ..." line under the table; LaTeX: \\caption).
        float_fmt: `str.format` pattern for float cells.

    Returns:
        The CSV, Markdown and LaTeX paths.
    """
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    csv, md, tex = (path_stem.with_name(path_stem.name + suffix) for suffix in (".csv", ".md", ".tex"))
    df.to_csv(csv, lineterminator="\n")
    header, rows, numeric = _cells(df, float_fmt)
    md.write_text(to_markdown(header, rows, numeric, caption), encoding="utf-8")
    tex.write_text(to_latex(header, rows, numeric, caption, label=f"tab:{path_stem.name}"), encoding="utf-8")
    return [csv, md, tex]


def _cells(df: pd.DataFrame, float_fmt: str) -> tuple[list[str], list[list[str | None]], list[bool]]:
    """Header, body cells as strings (None = missing) and, per column, whether it holds numbers (right-aligned)."""
    if not isinstance(df.index, pd.RangeIndex) or df.index.name is not None:
        # An unnamed index gets an empty header cell, not pandas' "index".
        df = df.rename_axis([name or "" for name in df.index.names]).reset_index(allow_duplicates=True)
    header = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in df.columns]
    rows = [[_format(value, float_fmt) for value in row] for row in df.itertuples(index=False)]
    numeric = [_is_numeric(df.iloc[:, i], [row[i] for row in rows]) for i in range(df.shape[1])]
    return header, rows, numeric


def _is_numeric(column: pd.Series, cells: list[str | None]) -> bool:
    """Right-align numbers, and also pre-formatted numbers such as "80.1 ± 0.3"."""
    if pd.api.types.is_bool_dtype(column):
        return False
    if pd.api.types.is_numeric_dtype(column):
        return True
    present = [c for c in cells if c is not None]
    return bool(present) and all(_NUMBER_START.match(c) for c in present)


def _format(value, float_fmt: str) -> str | None:
    if value is None or (isinstance(value, Real) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_ | Integral):
        return str(value)
    if isinstance(value, Real):
        return unsigned_zero(float_fmt.format(float(value)))
    return str(value)


def unsigned_zero(text: str) -> str:
    """Drop the sign of a formatted number that rounds to zero ("-0.0" -> "0.0").

    "-0.0" would read as a (tiny) negative transfer where the value is zero at the shown precision.
    """
    if text.startswith("-") and not any(c in "123456789" for c in text):
        return text[1:]
    return text


def to_markdown(header: list[str], rows: list[list[str | None]], numeric: list[bool], caption: str = "") -> str:
    """A GitHub pipe table; numeric columns right-aligned, missing cells "–", "|" inside cells escaped."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", r"\|").replace("\n", " ") for c in cells) + " |"

    rule = "|" + "|".join("---:" if right else ":---" for right in numeric) + "|"
    body = [line([MD_MISSING if c is None else c for c in row]) for row in rows]
    text = "\n".join([line(header), rule, *body]) + "\n"
    return text + (f"\n{CAPTION_PREFIX}{caption}\n" if caption else "")


def to_latex(header: list[str], rows: list[list[str | None]], numeric: list[bool], caption: str, *,
             label: str) -> str:
    """A booktabs `table` environment with caption and label; text escaped, missing cells "--"."""

    def line(cells: list[str]) -> str:
        return "    " + " & ".join(cells) + r" \\"

    body = [line([TEX_MISSING if c is None else latex_escape(c) for c in row]) for row in rows]
    return "\n".join([
        r"\begin{table}[t]",
        r"  \centering",
        rf"  \caption{{{latex_escape(caption)}}}",
        rf"  \label{{{label}}}",
        r"  \begin{tabular}{" + "".join("r" if right else "l" for right in numeric) + "}",
        r"    \toprule",
        line([latex_escape(h) for h in header]),
        r"    \midrule",
        *body,
        r"    \bottomrule",
        r"  \end{tabular}",
        r"\end{table}",
    ]) + "\n"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters and spell out the few non-ASCII symbols tables use (± -> $\\pm$)."""
    return _TEX_PATTERN.sub(lambda m: _TEX_SPECIAL[m.group(0)], text)


def markdown_table_to_html(markdown: str) -> str:
    """Convert a table written by `to_markdown` (pipe table plus optional "Table: " caption) into an HTML table."""
    lines = [ln for ln in markdown.strip().splitlines() if ln.strip()]
    caption = next((ln[len(CAPTION_PREFIX):] for ln in lines if ln.startswith(CAPTION_PREFIX)), None)
    table = [_split_row(ln) for ln in lines if ln.startswith("|")]
    if len(table) < 2:
        raise ValueError("not a pipe table: expected a header line and an alignment line starting with '|'")
    header, rule, body = table[0], table[1], table[2:]
    align = ["right" if cell.strip().endswith(":") and not cell.strip().startswith(":") else "left" for cell in rule]
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for row in body:
        cells = (f'<td style="text-align:{a}">{html.escape(c)}</td>' for c, a in zip(row, align, strict=False))
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody>\n</table>")
    return "\n".join(out)


def _split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
    return [c.strip().replace(r"\|", "|") for c in cells]
