"""What every report figure shares: display names for tasks, the matplotlib style, and deterministic saving.

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot, so no global figure state leaks
between calls; the style is applied with `rc_context` so the caller's rcParams are left untouched.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import text_to_path

_P = ParamSpec("_P")
_R = TypeVar("_R")

_VERSION = re.compile(r"_v\d+$")

RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    # TrueType subsets instead of Type 3 fonts: text stays selectable and journals accept the PDF.
    "pdf.fonttype": 42,
    "hatch.linewidth": 0.6,
    "savefig.dpi": 150,
}
DPI = 150
# None removes the key: the default PNG `Software` and PDF `Producer`/`CreationDate` carry the matplotlib version
# and the wall-clock time, which would make re-renders differ byte for byte.
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": "spot report", "Producer": None, "CreationDate": None, "ModDate": None}


def styled(build: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `build` under the report's rcParams (text created inside picks them up; nothing global changes)."""

    @functools.wraps(build)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with mpl.rc_context(RC):
            return build(*args, **kwargs)

    return wrapper


# Widths are measured from the font's outlines, without hinting; Agg's hinted glyphs come out up to ~2 % wider.
_HINTING = 1.04


def text_width(text: str, size: float | str) -> float:
    """Inches that the widest line of `text` takes in the report's font at `size` (points, or a relative size
    such as "large" under the current rcParams); no renderer needed."""
    prop = FontProperties(family=RC["font.family"], size=size)
    widths = [text_to_path.get_text_width_height_descent(line, prop, ismath=False)[0] for line in text.split("\n")]
    return max(widths) * _HINTING / 72


def wrap_text(text: str, width: float, size: float | str) -> str:
    """`text` with line breaks between words so that no line is wider than `width` inches at `size`.

    A single word wider than that stays whole on its own line; existing line breaks are kept. Figures wrap their
    titles and labels with it before layout, so a long title takes two lines instead of running off the canvas.
    """
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and text_width(candidate, size) > width:
                lines.append(line)
                candidate = word
            line = candidate
        lines.append(line)
    return "\n".join(lines)


def display_name(task: str) -> str:
    """A task name for a figure: the version suffix dropped, also inside mixtures ("a_v1+b_v2" -> "a+b")."""
    return "+".join(_VERSION.sub("", part) for part in str(task).split("+"))


def display_names(tasks: Iterable[str]) -> list[str]:
    """`display_name` for each task, unless two tasks would then share a name (rte_v1 and rte_v2): keep all full."""
    tasks = [str(t) for t in tasks]
    short = [display_name(t) for t in tasks]
    collides = len(set(short)) < len(set(tasks))
    return tasks if collides else short


@styled
def save_figure(fig: Figure, path_stem: Path) -> list[Path]:
    """Write `<stem>.png` and `<stem>.pdf` with no timestamps or versions inside, so re-renders are byte-identical.

    Args:
        fig: the figure; it is not reused afterwards, so its memory goes with it.
        path_stem: output path without a suffix; parent folders are created.

    Returns:
        The PNG and PDF paths.
    """
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = path_stem.with_name(path_stem.name + ".png"), path_stem.with_name(path_stem.name + ".pdf")
    fig.savefig(png, format="png", dpi=DPI, metadata=PNG_METADATA)
    # The layout is in figure fractions, whatever the format: the PDF keeps the one the PNG's save computed instead
    # of running the constrained layout again (about a third of a figure's saving without its fonts).
    fig.set_layout_engine("none")
    fig.savefig(pdf, format="pdf", metadata=PDF_METADATA)
    fig.clear()
    return [png, pdf]
