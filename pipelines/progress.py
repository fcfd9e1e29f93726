"""How a study shows its progress: a live table in a terminal, short lines of what changed in a log file.

The scheduler hands a `Progress` (one `StageProgress` per stage that has cells) to a `Display` whenever a cell
starts or ends. `display_for(show)` picks the display: a callable of one string (e.g. `print`) gets `LogLines`;
None gets `LiveTable` when stdout is a terminal and `LogLines` on stdout otherwise.
"""

from __future__ import annotations

import atexit
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

LINE_WIDTH = 100  # a log line is at most this long; more changed stages go on further lines


@dataclass(frozen=True)
class StageProgress:
    """One stage's cells: how many in all, done, running, failed and blocked (an input failed); `eta_s`: seconds
    until its last cell should be done (None: no cell has finished yet, so no estimate)."""

    stage: str
    total: int
    done: int = 0
    running: int = 0
    failed: int = 0
    blocked: int = 0
    eta_s: float | None = None

    @property
    def settled(self) -> bool:
        return self.done + self.failed + self.blocked == self.total

    def counts(self) -> str:
        """ "source 3/4 done, 1 running, 1 failed" (zero counts left out)."""
        extra = [f"{n} {what}" for n, what in ((self.running, "running"), (self.failed, "failed"),
                                                (self.blocked, "blocked")) if n]
        return ", ".join([f"{self.stage} {self.done}/{self.total} done", *extra])


@dataclass(frozen=True)
class Progress:
    """The study's stages in planning order, the ETA of all its cells, and when it was taken (monotonic s)."""

    stages: tuple[StageProgress, ...]
    eta_s: float | None = None
    at: float = 0.0


def duration(seconds: float) -> str:
    """ "45 s", "2.1 min", "1 h 06 min"."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


class Display:
    """Shows progress; `close` ends it (the scheduler calls it once every cell has settled)."""

    def update(self, progress: Progress) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to end by default."""


class LogLines(Display):
    """Short lines for a log file: only the stages whose counts changed since the last line, and the ETA.

    `source 3/4 done, 1 running | ETA 2.1 min`; when more stages changed than fit `LINE_WIDTH` characters, they
    continue on further lines (the ETA, once a cell has finished and until every cell has settled, ends the last).
    """

    def __init__(self, write: Callable[[str], None]):
        self.write = write
        self.shown: dict[str, StageProgress] = {}

    def update(self, progress: Progress) -> None:
        for line in self.lines(progress):
            self.write(line)

    def lines(self, progress: Progress) -> list[str]:
        """The lines for this update (none when no stage's counts changed)."""
        changed = []
        for row in progress.stages:
            counts = replace(row, eta_s=None)
            if self.shown.get(row.stage) != counts:
                changed.append(row.counts())
                self.shown[row.stage] = counts
        if not changed:
            return []
        settled = all(row.settled for row in progress.stages)
        parts = changed + ([f"ETA {duration(progress.eta_s)}"] if progress.eta_s is not None and not settled else [])
        lines = [parts[0]]
        for part in parts[1:]:
            if len(lines[-1]) + 3 + len(part) <= LINE_WIDTH:
                lines[-1] += " | " + part
            else:
                lines.append(part)
        return lines


class LiveTable(Display):
    """A live table in the terminal, one row per stage: a bar, done/total, running, failed and the ETA, which
    counts down between updates. Started at the first update, so the scheduler stays picklable until Tune has
    saved it; stopped by `close` or, after an error, at exit."""

    def __init__(self, console: Console | None = None, clock: Callable[[], float] = time.monotonic):
        self.console, self.clock = console, clock
        self.progress: Progress | None = None
        self.live: Live | None = None

    def update(self, progress: Progress) -> None:
        self.progress = progress
        if self.live is None:
            self.live = Live(console=self.console or Console(), get_renderable=self.table, refresh_per_second=1,
                             transient=False)
            _start(self.live)
        self.live.refresh()

    def close(self) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.stop()
            self.live = None

    def table(self) -> Table:
        """The table for the latest progress, its ETAs counted down to now."""
        table = Table(box=None, pad_edge=False, header_style="bold")
        for name, justify in (("stage", "left"), ("", "left"), ("done", "right"), ("running", "right"),
                              ("failed", "right"), ("ETA", "right")):
            table.add_column(name, justify=justify)
        if self.progress is None:
            return table
        since = self.clock() - self.progress.at
        for row in self.progress.stages:
            failed = f"{row.failed}" + (f" (+{row.blocked} blocked)" if row.blocked else "")
            table.add_row(row.stage, ProgressBar(total=row.total, completed=row.done, width=20),
                          f"{row.done}/{row.total}", str(row.running) if row.running else "",
                          failed if row.failed or row.blocked else "", self._eta(row.eta_s, since, row.settled))
        rows = self.progress.stages
        table.caption = f"{sum(r.done for r in rows)}/{sum(r.total for r in rows)} cells done"
        if self.progress.eta_s is not None and not all(r.settled for r in rows):
            table.caption += f", about {self._eta(self.progress.eta_s, since, False)} left"
        return table

    @staticmethod
    def _eta(eta_s: float | None, since: float, settled: bool) -> str:
        if settled:
            return "done"
        return "" if eta_s is None else duration(max(eta_s - since, 0.0))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "live": None, "console": None}  # a live display (threads, locks) stays here


_active: list[Live] = []


def _start(live: Live) -> None:
    # Rich allows one live display at a time: one left open by a study that failed (a multirun goes on) ends here.
    while _active:
        _active.pop().stop()
    live.start()
    _active.append(live)
    atexit.register(live.stop)  # a study that raises still gives the terminal its cursor back


def display_for(show: Display | Callable[[str], None] | None) -> Display:
    """The display for the scheduler's `show`: a `Display` as it is, a callable of one line as `LogLines`, None
    as a live table when stdout is a terminal and log lines on stdout otherwise."""
    if isinstance(show, Display):
        return show
    if show is not None:
        return LogLines(show)
    console = Console()
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveTable(console)
    return LogLines(lambda line: print(line, file=sys.stdout, flush=True))
