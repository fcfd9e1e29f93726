"""A Ray Tune searcher that hands out a study's cells as their inputs become ready.

One Tuner runs the whole study: a transfer cell is suggested as soon as its source cell has finished (not when
the whole source stage has), and the retrieval cells are planned once every source and target cell of the run
has settled. Trial actors are reused from the first cell to the last, so the study pays Ray's worker start-up
(importing torch, transformers and MLflow in each worker) once, not once per stage.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from ray.tune.search import Searcher

from pipelines.cells import CellJob, TrialJob
from pipelines.progress import Display, Progress, StageProgress, display_for
from spot_core.study import Cell
from spot_core.tags import Stage

PENDING, RUNNING, DONE, FAILED, BLOCKED = "pending", "running", "done", "failed", "blocked"
ProgressSink = Callable[[str], None]


class CellScheduler(Searcher):
    """Suggests a trial (`pipelines.cells.TrialJob`, as the config Tune carries) of each cell whose inputs are done,
    most upstream first; or, with `cells_per_trial` K > 1, of a pack of up to K ready cells of one pack key (the same
    backbone), cells of the first one's stage first. A trial reports the cells that failed in it, alone, as
    `failed_cells` (JSON: key -> why).

    Args:
        cells: the cells to run (already finished ones excluded).
        finished: keys that have a FINISHED run (the ledger); inputs in it count as done.
        config_of: what a trial needs to run a cell (`pipelines.cells.CellJob`: plain, picklable values).
        plan_more: called once, when no cell of the stages in `waits_for` is left pending or running, with the
            keys done by then; returns further cells (the retrieval stage), or problems as (name, why).
        waits_for: the cell stages plan_more needs settled.
        concurrency: cells that run at once (for the ETA): trials at once x cells per trial.
        show: how progress is shown (`pipelines.progress.display_for`): None for a live table in a terminal and
            short lines of the stages that changed otherwise; a callable of one line (`print`) for those lines
            always; or a `Display`.
        clock: monotonic seconds (tests pass their own).
        cells_per_trial: the most cells a trial trains as one pack.
        pack_key: what cells must share to train as one pack (their stage's pack runner and backbone); None for
            a cell that runs alone.
        price: a cell's estimated seconds, or any weight relative to the other cells' (the stage catalogue's cost:
            a scoring cell is cheaper than a training cell, a short run than a long one); the ETA weighs every
            cell left by its price, scaled by what the finished cells measured (`progress`). None: every cell
            weighs 1.0, so a cell is estimated at the mean time of the finished ones.
    """

    def __init__(
        self,
        cells: Iterable[Cell],
        finished: set[str],
        config_of: Callable[[Cell], CellJob],
        plan_more: Callable[[set[str]], tuple[list[Cell], dict[str, str]]] | None = None,
        waits_for: Iterable[Stage] = (),
        concurrency: int = 1,
        show: Display | ProgressSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        cells_per_trial: int = 1,
        pack_key: Callable[[Cell], Hashable | None] = lambda cell: None,
        price: Callable[[Cell], float] | None = None,
    ):
        super().__init__()
        self.cells: dict[str, Cell] = {}
        self.state: dict[str, str] = {}
        self.why: dict[str, str] = {}  # label -> reason, for failed and blocked cells and unplannable targets
        self.done = set(finished)
        self.config_of, self.plan_more, self.concurrency = config_of, plan_more, max(concurrency, 1)
        self.display, self.clock, self.closed = display_for(show), clock, False
        self.waits_for = set(waits_for)
        self.cells_per_trial, self.pack_key = max(cells_per_trial, 1), pack_key
        self.trials: dict[str, list[str]] = {}  # trial id -> its cells' keys
        self.started: dict[str, float] = {}
        self.price, self.prices = price or (lambda cell: 1.0), {}  # prices: cell key -> its price, asked once
        self.measured: dict[Stage, list[tuple[float, float]]] = defaultdict(list)  # (seconds, price) per finished cell
        self.planned: list[Cell] = []  # what plan_more returned, finished cells included
        self.complete_plan = False  # plan_more ran and planned for everything it was asked to (no problems)
        self._add(cells)
        if not self._upstream_open():
            self._plan_more()

    def _add(self, cells: Iterable[Cell]) -> None:
        for cell in cells:
            if cell.key not in self.cells and cell.key not in self.done:
                self.cells[cell.key] = cell
                self.state[cell.key] = PENDING

    # --- Searcher interface ---------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        ready = self._ready()
        if not ready and not self._upstream_open():
            self._plan_more()
            ready = self._ready()
        if not ready:
            if RUNNING in self.state.values():
                return None
            self._show()  # cells blocked just now, and the end of a live display
            return Searcher.FINISHED
        cells = self._pack(ready)
        for cell in cells:
            self.state[cell.key] = RUNNING
            self.started[cell.key] = self.clock()
        self.trials[trial_id] = [cell.key for cell in cells]
        self._show()
        return TrialJob.of_cells([self.config_of(cell) for cell in cells]).config()  # one cell or a pack alike

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        keys = self.trials.pop(trial_id, None)
        if keys is None:
            return
        alone = json.loads((result or {}).get("failed_cells", "{}"))  # cells of a pack that failed on their own
        for key in keys:
            ran = self.clock() - self.started.pop(key)
            if error or key in alone:
                self.state[key] = FAILED
                why = alone.get(key, "the trial failed (its MLflow run has the error tag)")
                self.why.setdefault(self.cells[key].label, why)
            else:  # only finished cells time the ETA: a failure may end at once or after its retries
                self.measured[self.cells[key].stage].append((ran, self._priced(key)))
                self.state[key] = DONE
                self.done.add(key)
        if not self._upstream_open():  # plan now, so the progress line and ETA count the planned cells
            self._plan_more()
        self._show()

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Nothing to save: a study resumes from the MLflow ledger, never from Tune's experiment state."""

    # --- bookkeeping ------------------------------------------------------------------------------------
    def _ready(self) -> list[Cell]:
        """The pending cells whose inputs are done, in order; cells whose inputs failed become blocked."""
        ready = []
        for key, state in self.state.items():
            if state != PENDING:
                continue
            cell = self.cells[key]
            lost = [c for c in cell.inputs if self.state.get(c.key) in (FAILED, BLOCKED)]
            if lost:
                self.state[key] = BLOCKED
                self.why[cell.label] = f"{lost[0].label} did not finish"
                continue
            if all(c.key in self.done for c in cell.inputs):
                ready.append(cell)
        return ready

    def _pack(self, ready: list[Cell]) -> list[Cell]:
        """The first ready cell, and up to cells_per_trial - 1 more of its pack key, its own stage's first (runs
        of one stage have one length: the pack stays full longer)."""
        first, key = ready[0], self.pack_key(ready[0])
        if key is None or self.cells_per_trial == 1:
            return [first]
        mates = [c for c in ready[1:] if self.pack_key(c) == key]
        mates.sort(key=lambda c: c.stage != first.stage)  # stable: each group keeps its order
        return [first, *mates[: self.cells_per_trial - 1]]

    def _plan_more(self) -> None:
        if self.plan_more:
            self.planned, problems = self.plan_more(set(self.done))
            self.plan_more, self.complete_plan = None, not problems
            self.why.update(problems)
            self._add(self.planned)

    def _upstream_open(self) -> bool:
        return any(
            self.cells[k].stage in self.waits_for and s in (PENDING, RUNNING)
            for k, s in self.state.items()
        )

    def progress(self) -> Progress:
        """Each stage's counts and ETA. A stage's ETA is the time to work off its own cells and those of every
        stage planned before it (handed out first), at `concurrency` cells at a time. A cell left is estimated at
        its price times the measured/priced ratio of its stage's finished cells (of all finished cells while its
        stage has none), a running one at that less the time it has run (never below 0): the prices say how the
        cells compare, the measured times what a unit of price takes on this machine."""
        now, rows, ahead = self.clock(), [], 0.0
        pooled = _ratio([m for ms in self.measured.values() for m in ms])
        counts = Counter((self.cells[k].stage, s) for k, s in self.state.items())
        for stage in dict.fromkeys(self.cells[k].stage for k in self.state):
            own = _ratio(self.measured[stage])
            ratio = pooled if own is None else own
            if ratio is not None:
                ahead += sum(self._left(k, ratio, now) for k in self.state if self.cells[k].stage == stage)
            rows.append(StageProgress(
                str(stage), sum(n for (st, _), n in counts.items() if st == stage), counts[stage, DONE],
                counts[stage, RUNNING], counts[stage, FAILED], counts[stage, BLOCKED],
                None if ratio is None else ahead / self.concurrency,
            ))
        eta = None if pooled is None else ahead / self.concurrency
        return Progress(tuple(rows), eta, now)

    def _priced(self, key: str) -> float:
        """A cell's price, asked once (a price may cost a little to work out, and progress runs at every event)."""
        if key not in self.prices:
            self.prices[key] = self.price(self.cells[key])
        return self.prices[key]

    def _left(self, key: str, ratio: float, now: float) -> float:
        """Seconds of work a cell has left at `ratio` seconds per unit of price: none once it has settled."""
        if self.state[key] == PENDING:
            return self._priced(key) * ratio
        if self.state[key] == RUNNING:
            return max(self._priced(key) * ratio - (now - self.started[key]), 0.0)
        return 0.0

    def _show(self) -> None:
        if self.closed:
            return
        self.display.update(self.progress())
        if not any(s in (PENDING, RUNNING) for s in self.state.values()) and self.plan_more is None:
            self.display.close()  # every cell has settled: end a live display, so what follows prints below it
            self.closed = True


def _ratio(measured: list[tuple[float, float]]) -> float | None:
    """Seconds per unit of price over finished cells' (seconds, price) pairs; None without cells or prices."""
    priced = math.fsum(p for _, p in measured)
    return math.fsum(s for s, _ in measured) / priced if priced > 0 else None
