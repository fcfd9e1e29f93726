"""A Ray Tune searcher that hands out a study's cells as their inputs become ready.

One Tuner runs the whole study: a transfer cell is suggested as soon as its source cell has finished (not when
the whole source stage has), and the retrieval cells are planned once every source and target cell of the run
has settled. Trial actors are reused from the first cell to the last, so the study pays Ray's worker start-up
(importing torch, transformers and MLflow in each worker) once, not once per stage.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from statistics import fmean
from typing import Any

from ray.tune.search import Searcher

from pipelines.progress import Display, Progress, StageProgress, display_for
from spot_core.study import Cell
from spot_core.tags import Stage

PENDING, RUNNING, DONE, FAILED, BLOCKED = "pending", "running", "done", "failed", "blocked"
ProgressSink = Callable[[str], None]


class CellScheduler(Searcher):
    """Suggests `{"cell": key, **config_of(cell)}` for each cell whose inputs are done, most upstream first.

    Args:
        cells: the cells to run (already finished ones excluded).
        finished: keys that have a FINISHED run (the ledger); inputs in it count as done.
        config_of: the trial config of a cell (plain, picklable values).
        plan_more: called once, when no cell of the stages in `waits_for` is left pending or running, with the
            keys done by then; returns further cells (the retrieval stage), or problems as (name, why).
        waits_for: the cell stages plan_more needs settled.
        concurrency: trials that run at once (for the ETA).
        show: how progress is shown (`pipelines.progress.display_for`): None for a live table in a terminal and
            short lines of the stages that changed otherwise; a callable of one line (`print`) for those lines
            always; or a `Display`.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        cells: Iterable[Cell],
        finished: set[str],
        config_of: Callable[[Cell], dict[str, Any]],
        plan_more: Callable[[set[str]], tuple[list[Cell], dict[str, str]]] | None = None,
        waits_for: Iterable[Stage] = (),
        concurrency: int = 1,
        show: Display | ProgressSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self.cells: dict[str, Cell] = {}
        self.state: dict[str, str] = {}
        self.why: dict[str, str] = {}  # label -> reason, for failed and blocked cells and unplannable targets
        self.done = set(finished)
        self.config_of, self.plan_more, self.concurrency = config_of, plan_more, max(concurrency, 1)
        self.display, self.clock, self.closed = display_for(show), clock, False
        self.waits_for = set(waits_for)
        self.trials: dict[str, str] = {}  # trial id -> cell key
        self.started: dict[str, float] = {}
        self.durations: dict[Stage, list[float]] = defaultdict(list)  # seconds per finished cell
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
        cell = self._next_ready()
        if cell is None and not self._upstream_open():
            self._plan_more()
            cell = self._next_ready()
        if cell is None:
            if RUNNING in self.state.values():
                return None
            self._show()  # cells blocked just now, and the end of a live display
            return Searcher.FINISHED
        self.state[cell.key] = RUNNING
        self.trials[trial_id] = cell.key
        self.started[cell.key] = self.clock()
        self._show()
        return {"cell": cell.key, **self.config_of(cell)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self.trials.pop(trial_id, None)
        if key is None:
            return
        ran = self.clock() - self.started.pop(key)
        if error:
            self.state[key] = FAILED
            self.why.setdefault(self.cells[key].label, "the trial failed (its MLflow run has the error tag)")
        else:  # only finished cells time the ETA: a failure may end at once or after its retries
            self.durations[self.cells[key].stage].append(ran)
            self.state[key] = DONE
            self.done.add(key)
        if not self._upstream_open():  # plan now, so the progress line and ETA count the planned cells
            self._plan_more()
        self._show()

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Nothing to save: a study resumes from the MLflow ledger, never from Tune's experiment state."""

    # --- bookkeeping ------------------------------------------------------------------------------------
    def _next_ready(self) -> Cell | None:
        """The first pending cell whose inputs are done; cells whose inputs failed become blocked."""
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
                return cell
        return None

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
        stage planned before it (handed out first), at `concurrency` cells at a time; a cell takes its stage's mean
        so far (else the mean of all cells), a running one that less the time it has run."""
        now, rows, ahead = self.clock(), [], 0.0
        everything = [d for ds in self.durations.values() for d in ds]
        counts = Counter((self.cells[k].stage, s) for k, s in self.state.items())
        for stage in dict.fromkeys(self.cells[k].stage for k in self.state):
            mean = fmean(self.durations[stage] or everything) if everything else None
            if mean is not None:
                running = [now - self.started[k] for k, s in self.state.items()
                           if s == RUNNING and self.cells[k].stage is stage]
                ahead += counts[stage, PENDING] * mean + sum(max(mean - ran, 0.0) for ran in running)
            rows.append(StageProgress(
                stage.value, sum(n for (st, _), n in counts.items() if st is stage), counts[stage, DONE],
                counts[stage, RUNNING], counts[stage, FAILED], counts[stage, BLOCKED],
                None if mean is None else ahead / self.concurrency,
            ))
        eta = ahead / self.concurrency if everything else None
        return Progress(tuple(rows), eta, now)

    def _show(self) -> None:
        if self.closed:
            return
        self.display.update(self.progress())
        if not any(s in (PENDING, RUNNING) for s in self.state.values()) and self.plan_more is None:
            self.display.close()  # every cell has settled: end a live display, so what follows prints below it
            self.closed = True
