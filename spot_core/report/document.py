"""The study report as one document: `report.md` and a standalone `report.html` with the same content.

Sections hold Markdown prose, figures (PNG files under the output folder), tables (the `.md` files `write_table`
wrote) and optionally a config block. The HTML is produced by a deliberately small Markdown subset converter
(paragraphs, bullet lists, fenced code, inline code/bold/italic/links) plus `markdown_table_to_html` for the
tables; everything else is escaped, so odd text can only look plain, never break the page.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from spot_core.report.tables import markdown_table_to_html

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}
img{max-width:100%;height:auto}figure{margin:1.5em 0}figcaption{font-size:.9em;color:#555}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}caption{caption-side:bottom;font-size:.9em;color:#555}
th,td{padding:.25em .6em}thead th{border-bottom:1px solid #444}tbody tr:last-child td{border-bottom:1px solid #444}
table{border-top:1px solid #444}pre{background:#f6f6f6;padding:.8em;overflow-x:auto}"""


_BULLET = re.compile(r"^\s*[-*] ")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


@dataclass(frozen=True)
class FigureRef:
    """A figure with a caption; plain `Path`s in `Section.figures` get a caption made from the file name."""

    path: Path
    caption: str


def figure(paths: list[Path], caption: str) -> FigureRef:
    """The PNG among a figure's written files (`heatmap`, `k_curve`, ... return PNG and PDF), with a caption."""
    return FigureRef(next(p for p in paths if p.suffix == ".png"), caption)


@dataclass
class Section:
    """One section of the report.

    Attributes:
        heading: the section heading.
        text: Markdown paragraphs shown under the heading.
        figures: PNG paths (relative to the report folder, or absolute inside it), or `FigureRef`s.
        tables: the `.md` files written by `write_table`, embedded inline.
        config: YAML text shown in a code block (e.g. the resolved study config), or None.
    """

    heading: str
    text: str = ""
    figures: list[Path | FigureRef] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    config: str | None = None

    def __post_init__(self) -> None:
        if not self.heading.strip():
            raise ValueError("Section.heading must be a non-empty string")
        self.figures = [f if isinstance(f, FigureRef) else FigureRef(Path(f), _caption_from(Path(f)))
                        for f in self.figures]
        self.tables = [Path(t) for t in self.tables]


def config_section(heading: str, yaml_text: str, text: str = "") -> Section:
    """A section that shows a configuration (YAML) verbatim, e.g. the study's resolved config."""
    return Section(heading=heading, text=text, config=yaml_text)


def write_document(out_dir: Path, *, title: str, sections: list[Section]) -> list[Path]:
    """Write `<out_dir>/report.md` and `<out_dir>/report.html`.

    Args:
        out_dir: the report folder; figure and table paths are resolved against it.
        title: the document title.
        sections: the sections, in order.

    Returns:
        The Markdown and HTML paths.

    Raises:
        FileNotFoundError: a figure or table file does not exist.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_parts, html_parts = [f"# {title}\n"], [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        md, page = _render_section(section, out_dir)
        md_parts.append(md)
        html_parts.append(page)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text("\n".join(md_parts), encoding="utf-8")
    html_path.write_text(_page(title, "\n".join(html_parts)), encoding="utf-8")
    return [md_path, html_path]


def _render_section(section: Section, out_dir: Path) -> tuple[str, str]:
    md = [f"## {section.heading}\n"]
    page = [f'<h2 id="{_slug(section.heading)}">{html.escape(section.heading)}</h2>']
    if section.text.strip():
        md.append(section.text.strip() + "\n")
        page.append(markdown_to_html(section.text))
    for figure in section.figures:
        # Percent-encoded so a space or bracket in a file name cannot break the Markdown link.
        src = quote(_relative(figure.path, out_dir))
        caption = figure.caption.replace("[", "(").replace("]", ")")
        md.append(f"![{caption}]({src})\n")
        page.append(f'<figure><img src="{html.escape(src)}" alt="{html.escape(figure.caption)}">'
                    f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>")
    for table in section.tables:
        text = (out_dir / _relative(table, out_dir)).read_text(encoding="utf-8")
        md.append(text.strip() + "\n")
        page.append(markdown_table_to_html(text))
    if section.config is not None:
        md.append(f"```yaml\n{section.config.rstrip()}\n```\n")
        page.append(f'<pre><code class="language-yaml">{html.escape(section.config.rstrip())}</code></pre>')
    return "\n".join(md), "\n".join(page)


def _relative(path: Path, out_dir: Path) -> str:
    """The path as the documents refer to it: relative to the report folder, with forward slashes."""
    full = path if path.is_absolute() else out_dir / path
    if not full.exists():
        raise FileNotFoundError(f"report file {full} does not exist")
    try:
        return full.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError as error:
        raise ValueError(f"report file {full} lies outside the report folder {out_dir}") from error


def _caption_from(path: Path) -> str:
    return path.stem.replace("_", " ")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>\n{_CSS}\n</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def markdown_to_html(text: str) -> str:
    """The Markdown subset the report's prose uses: paragraphs, "#" headings, "- " lists, ``` fences, inline markup."""
    out, block, fence = [], [], None
    for line in text.strip().splitlines() + [""]:
        if fence is not None:  # inside a code fence blank lines belong to the code
            if line.strip().startswith("```"):
                out.append(_code(fence))
                fence = None
            else:
                fence.append(line)
        elif line.strip().startswith("```") or not line.strip():
            out.append(_block(block))
            block, fence = [], ([] if line.strip() else None)
        else:
            block.append(line)
    if fence is not None:  # an unclosed fence still shows its code
        out.append(_code(fence))
    return "\n".join(part for part in out if part)


def _code(lines: list[str]) -> str:
    return "<pre><code>" + html.escape("\n".join(lines)) + "</code></pre>"


def _block(lines: list[str]) -> str:
    if not lines:
        return ""
    heading = _HEADING.match(lines[0])
    if heading and len(lines) == 1:  # headings inside a section's text sit below the section's <h2>
        level = min(6, len(heading.group(1)) + 2)
        return f"<h{level}>{_inline(heading.group(2))}</h{level}>"
    if all(_BULLET.match(ln) for ln in lines):
        return "<ul>" + "".join("<li>" + _inline(_BULLET.sub("", ln)) + "</li>" for ln in lines) + "</ul>"
    return f"<p>{_inline(' '.join(ln.strip() for ln in lines))}</p>"


def _inline(text: str) -> str:
    text = html.escape(text, quote=True)
    # Code first, so markup characters inside backticks stay literal.
    parts = re.split(r"(`[^`]+`)", text)
    for i, part in enumerate(parts):
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            parts[i] = f"<code>{part[1:-1]}</code>"
            continue
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        part = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", part)
        parts[i] = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', part)
    return "".join(parts)
