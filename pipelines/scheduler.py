"""A Ray Tune searcher that hands out a study's cells as their inputs become ready.

One Tuner runs the whole study: a transfer cell is suggested as soon as its source cell has finished (not when
the whole source stage has), and the retrieval cells are planned once every source and target cell of the run
has settled. Trial actors are reused from the first cell to the last, so the study pays Ray's worker start-up
(importing torch, transformers and MLflow in each worker) once, not once per stage.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ray.tune.search import Searcher

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
        show: where progress lines go.
    """

    def __init__(
        self,
        cells: Iterable[Cell],
        finished: set[str],
        config_of: Callable[[Cell], dict[str, Any]],
        plan_more: Callable[[set[str]], tuple[list[Cell], dict[str, str]]] | None = None,
        waits_for: Iterable[Stage] = (),
        concurrency: int = 1,
        show: ProgressSink = print,
    ):
        super().__init__()
        self.cells: dict[str, Cell] = {}
        self.state: dict[str, str] = {}
        self.why: dict[str, str] = {}  # label -> reason, for failed and blocked cells and unplannable targets
        self.done = set(finished)
        self.config_of, self.plan_more, self.concurrency, self.show = config_of, plan_more, concurrency, show
        self.waits_for = set(waits_for)
        self.trials: dict[str, str] = {}  # trial id -> cell key
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
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
            return None if RUNNING in self.state.values() else Searcher.FINISHED
        self.state[cell.key] = RUNNING
        self.trials[trial_id] = cell.key
        self.started[cell.key] = time.monotonic()
        self._show()
        return {"cell": cell.key, **self.config_of(cell)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self.trials.pop(trial_id, None)
        if key is None:
            return
        self.durations.append(time.monotonic() - self.started.pop(key))
        if error:
            self.state[key] = FAILED
            self.why.setdefault(self.cells[key].label, "the trial failed (its MLflow run has the error tag)")
        else:
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

    def _show(self) -> None:
        counts = Counter((self.cells[k].stage.value, s) for k, s in self.state.items())
        stages = dict.fromkeys(self.cells[k].stage.value for k in self.state)
        parts = []
        for stage in stages:
            total = sum(n for (st, _), n in counts.items() if st == stage)
            line = f"{stage} {counts[stage, DONE]}/{total} done, {counts[stage, RUNNING]} running"
            bad = counts[stage, FAILED] + counts[stage, BLOCKED]
            parts.append(line + (f", {bad} failed" if bad else ""))
        eta = ""
        if self.durations:  # the mean cell so far, for the cells left (retrieval ones count once planned)
            left = sum(s in (PENDING, RUNNING) for s in self.state.values())
            eta = f"  ETA {left * sum(self.durations) / len(self.durations) / self.concurrency / 60:.1f} min"
        self.show("  " + " | ".join(parts) + eta)
