"""The study's searcher: cells are handed out when their inputs are done, retrieval is planned once; its progress
reads as short lines in a log and as a live table in a terminal."""

import io
import json
import pickle

from ray.tune.search import Searcher
from rich.console import Console

from pipelines.cells import CellJob, TrialJob
from pipelines.progress import LiveTable, LogLines, Progress, StageProgress, display_for
from pipelines.scheduler import CellScheduler
from spot_core.stages.catalogue import plan_stages
from spot_core.study import Cell, StudyConfig
from spot_core.tags import Stage


def design() -> list:
    config = StudyConfig(name="t", model="tiny-llama", sources=["mnli", "sst2"], targets=["rte"], seeds=[0])
    return plan_stages(config, ["source", "target", "transfer"])  # 2 sources, 1 target, 2 transfers


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scheduler(cells, finished=(), plan_more=None, lines=None, clock=None, show=None) -> CellScheduler:
    show = show or (lines.append if lines is not None else lambda line: None)
    waits_for = (Stage.SOURCE, Stage.TARGET)
    return CellScheduler(cells, set(finished), job_of, plan_more, waits_for, 2, show, clock=clock or Clock())


def job_of(cell: Cell) -> CellJob:
    """A cell's job, as the study makes it but with nothing to run."""
    return CellJob(cell.key, cell.label, out_dir="", stage=str(cell.stage), spec={}, tags={}, tasks={})


def labels(configs) -> list[str]:
    return [c["label"] for c in configs]


def test_a_transfer_waits_for_its_own_source_only():
    cells = design()
    s = scheduler(cells)
    first = [s.suggest(f"t{i}") for i in range(3)]
    assert labels(first) == ["source:mnli_v1:s0", "source:sst2_v1:s0", "target:rte_v1:s0"]
    assert s.suggest("t3") is None  # both transfers wait for their source
    s.on_trial_complete("t1", {"best_score": 1.0})  # sst2 finishes first
    assert labels([s.suggest("t4")]) == ["transfer:sst2_v1->rte_v1:s0"]
    assert s.suggest("t5") is None  # mnli's transfer still waits
    s.on_trial_complete("t0", {})
    assert labels([s.suggest("t6")]) == ["transfer:mnli_v1->rte_v1:s0"]
    for trial in ("t2", "t4", "t6"):
        s.on_trial_complete(trial, {})
    assert s.suggest("t7") == Searcher.FINISHED


def test_a_failed_source_blocks_its_transfers_and_the_rest_goes_on():
    s = scheduler(design())
    for i in range(3):
        s.suggest(f"t{i}")
    s.on_trial_complete("t0", error=True)  # mnli's source fails after its retries
    s.on_trial_complete("t1", {})
    assert labels([s.suggest("t3")]) == ["transfer:sst2_v1->rte_v1:s0"]
    s.on_trial_complete("t2", {})
    s.on_trial_complete("t3", {})
    assert s.suggest("t4") == Searcher.FINISHED
    assert s.why == {
        "source:mnli_v1:s0": "the trial failed (its MLflow run has the error tag)",
        "transfer:mnli_v1->rte_v1:s0": "source:mnli_v1:s0 did not finish",
    }


def test_finished_cells_are_skipped_and_count_as_done_inputs():
    cells = design()
    sources = [c for c in cells if c.stage is Stage.SOURCE]
    s = scheduler([c for c in cells if c.stage is not Stage.SOURCE], finished={c.key for c in sources})
    assert labels([s.suggest(f"t{i}") for i in range(3)]) == [
        "target:rte_v1:s0",
        "transfer:mnli_v1->rte_v1:s0",
        "transfer:sst2_v1->rte_v1:s0",
    ]


def test_retrieval_is_planned_once_sources_and_targets_have_settled():
    cells = design()
    extra = [c for c in cells if c.stage is Stage.TRANSFER]  # stand-ins for retrieval cells
    calls = []

    def plan_more(done):
        calls.append(set(done))
        return extra, {"retrieval:cb_v1": "no finished source and target runs to rank"}

    lines = []
    s = scheduler([c for c in cells if c.stage is not Stage.TRANSFER], plan_more=plan_more, lines=lines)
    for i in range(3):
        s.suggest(f"t{i}")
    s.on_trial_complete("t0", {})
    s.on_trial_complete("t1", {})
    assert s.suggest("t3") is None and calls == []  # the target is still running
    s.on_trial_complete("t2", {})
    assert labels([s.suggest("t4"), s.suggest("t5")]) == [c.label for c in extra]
    assert len(calls) == 1 and len(calls[0]) == 3 and s.planned == extra
    assert s.why == {"retrieval:cb_v1": "no finished source and target runs to rank"}
    # the target's last cell and the planned cells in one line; the sources, unchanged, are left out
    assert lines[-3].startswith("target 1/1 done | transfer 0/2 done | ETA ")
    assert lines[-2:] == ["transfer 0/2 done, 1 running | ETA 0 s", "transfer 0/2 done, 2 running | ETA 0 s"]


def test_with_everything_upstream_finished_retrieval_is_planned_at_once():
    cells = design()
    upstream, extra = cells[:3], cells[3:]
    s = scheduler([], finished={c.key for c in upstream}, plan_more=lambda done: (extra, {}))
    assert s.planned == extra and len(s.cells) == 2  # the driver sees there is work before it starts Tune
    assert s.suggest("t0")["label"] == extra[0].label
    done = scheduler([], finished={c.key for c in cells}, plan_more=lambda done: (extra, {}))
    assert done.planned == extra and not done.cells  # planned, all finished: nothing to run
    assert done.suggest("t0") == Searcher.FINISHED


# --- progress ---------------------------------------------------------------------------------------------------
# The full study's nine stages (config stages source..cross_model), sized like a 4 x 6 study with 2 seeds.
NINE = {
    Stage.SOURCE: 4,
    Stage.TARGET: 6,
    Stage.TRANSFER: 24,
    Stage.ZERO_SHOT: 24,
    Stage.NEURONS: 10,
    Stage.CROSS_SOURCE: 2,
    Stage.PROJECTOR: 1,
    Stage.CROSS_ZERO_SHOT: 3,
    Stage.CROSS_TRANSFER: 6,
}


def nine_stages() -> list[Cell]:
    return [Cell(stage, f"task{i}_v1", 0, "", f"{stage}-{i}") for stage, n in NINE.items() for i in range(n)]


def test_log_lines_are_short_and_name_only_the_stages_that_changed():
    clock, lines = Clock(), []
    s = scheduler(nine_stages(), lines=lines, clock=clock)
    s.suggest("t0")
    # the first line of a study lists every stage with work, wrapped into lines under 100 characters
    first = list(lines)
    assert all(len(line) < 100 for line in first) and 2 <= len(first) <= 4
    assert " | ".join(first).split(" | ") == [
        "source 0/4 done, 1 running",
        "target 0/6 done",
        "transfer 0/24 done",
        "zero_shot 0/24 done",
        "neurons 0/10 done",
        "cross_source 0/2 done",
        "projector 0/1 done",
        "cross_zero_shot 0/3 done",
        "cross_transfer 0/6 done",
    ]
    s.suggest("t1")
    assert lines[-1] == "source 0/4 done, 2 running"  # no ETA before a cell has finished
    clock.now += 90
    s.on_trial_complete("t0", {})
    # 2 sources pending, the running one at its mean already, 76 more cells: 78 x 90 s, 2 at a time
    assert lines[-1] == "source 1/4 done, 1 running | ETA 58.5 min"
    s.on_trial_complete("t1", error=True)
    assert lines[-1] == "source 1/4 done, 1 failed | ETA 58.5 min"
    before = len(lines)
    s.suggest("t2")
    s.suggest("t3")
    assert lines[before:] == [
        "source 1/4 done, 1 running, 1 failed | ETA 58.5 min",
        "source 1/4 done, 2 running, 1 failed | ETA 58.5 min",
    ]
    assert all(len(line) < 100 for line in lines)


def test_blocked_cells_and_a_finished_study_in_the_log():
    lines = []
    s = scheduler(design(), lines=lines)
    for i in range(3):
        s.suggest(f"t{i}")
    s.on_trial_complete("t0", error=True)  # mnli's source: its transfer is blocked at the next suggest
    s.on_trial_complete("t1", {})
    s.suggest("t3")
    assert lines[-1] == "transfer 0/2 done, 1 running, 1 blocked | ETA 0 s"
    s.on_trial_complete("t2", {})
    s.on_trial_complete("t3", {})
    assert lines[-2:] == ["target 1/1 done | ETA 0 s", "transfer 1/2 done, 1 blocked"]  # settled: no ETA


def test_stage_eta_counts_the_work_handed_out_before_it():
    clock = Clock()
    s = scheduler(design(), clock=clock)  # 2 sources, 1 target, 2 transfers; 2 cells at a time
    s.suggest("t0"), s.suggest("t1")
    clock.now += 60
    s.on_trial_complete("t0", {})
    clock.now += 30  # the other source has run 90 s of its mean 60: nothing left to count
    rows = {r.stage: r for r in s.progress().stages}
    assert rows["source"].eta_s == 0.0 and rows["target"].eta_s == 30.0 and rows["transfer"].eta_s == 90.0
    assert s.progress().eta_s == 90.0



def test_the_eta_weighs_each_cell_by_its_price_and_the_measured_time_per_unit():
    clock = Clock()
    price = {Stage.SOURCE: 10.0, Stage.TARGET: 1.0, Stage.TRANSFER: 1.0}
    s = CellScheduler(design(), set(), job_of, waits_for=(Stage.SOURCE, Stage.TARGET),
                      concurrency=2, show=lambda line: None, clock=clock, price=lambda c: price[c.stage])
    for i in range(3):
        s.suggest(f"t{i}")  # both sources (price 10) and the target (price 1) run
    clock.now += 100
    s.on_trial_complete("t0", {})  # a 10-priced cell took 100 s: 10 s per unit of price, for every stage yet
    # the other source (100 s) and the target (10 s) have run 100 s already; the two transfers: 2 x 1 x 10 s
    assert s.progress().eta_s == (0.0 + 0.0 + 2 * 10.0) / 2
    clock.now += 20
    s.on_trial_complete("t2", {})  # the target took 120 s for a price of 1: its own stage's ratio is 120
    rows = {r.stage: r for r in s.progress().stages}
    # the running source keeps its stage's 10 s a unit (100 s, run 120 s: none left); the transfers, whose stage has
    # no finished cell, the pooled (100 + 120) s / (10 + 1) = 20 s a unit: 2 x 20 s, 2 at a time
    assert rows["source"].eta_s == 0.0 and rows["target"].eta_s == 0.0
    assert rows["transfer"].eta_s == s.progress().eta_s == 2 * 20.0 / 2


def test_without_prices_a_cell_is_estimated_at_the_mean_of_the_finished_ones():
    clock = Clock()
    s = scheduler(design(), clock=clock)
    for i in range(3):
        s.suggest(f"t{i}")
    clock.now += 100
    s.on_trial_complete("t0", {})
    clock.now += 20
    s.on_trial_complete("t2", {})  # sources 100 s, targets 120 s so far: the transfers take the mean of both
    assert s.progress().eta_s == 2 * 110.0 / 2

def render(table) -> str:
    console = Console(file=io.StringIO(), width=110, color_system=None)
    console.print(table)
    return console.file.getvalue()


def test_the_live_table_has_a_row_per_stage_with_counts_and_eta():
    clock = Clock()
    live = LiveTable(clock=clock)
    assert [c.header for c in live.table().columns] == ["stage", "", "done", "running", "failed", "ETA"]
    live.progress = Progress(
        (
            StageProgress("source", 4, done=4, eta_s=0.0),
            StageProgress("transfer", 12, done=3, running=2, failed=1, blocked=2, eta_s=600.0),
            StageProgress("zero_shot", 12),
        ),
        eta_s=900.0,
        at=clock.now,
    )
    table = live.table()
    cells = [[str(c) if isinstance(c, str) else "bar" for c in column.cells] for column in table.columns]
    assert list(zip(*cells, strict=True)) == [
        ("source", "bar", "4/4", "", "", "done"),
        ("transfer", "bar", "3/12", "2", "1 (+2 blocked)", "10.0 min"),
        ("zero_shot", "bar", "0/12", "", "", ""),
    ]
    assert table.caption == "7/28 cells done, about 15.0 min left"
    clock.now += 120  # between updates the ETAs count down
    text = render(live.table())
    assert "8.0 min" in text and "about 13.0 min left" in text
    assert [line.split()[0] for line in text.splitlines()[1:4]] == ["source", "transfer", "zero_shot"]


def test_the_scheduler_drives_a_live_table_and_ends_it_when_the_study_settles():
    clock, out = Clock(), io.StringIO()
    live = LiveTable(Console(file=out, width=110, force_terminal=True, color_system=None), clock=clock)
    s = scheduler(design(), clock=clock, show=live)
    pickle.loads(pickle.dumps(live))  # Tune saves the searcher before the first update: it must pickle
    for i in range(3):
        s.suggest(f"t{i}")
    assert live.live is not None and "0/2" in render(live.table())
    for i, trial in enumerate(("t0", "t1", "t2")):
        clock.now += 10
        s.on_trial_complete(trial, {})
        s.suggest(f"t{3 + i}")
    s.on_trial_complete("t3", {})
    s.on_trial_complete("t4", {})
    assert live.live is None  # every cell settled: the display is stopped
    final = out.getvalue().rsplit("stage ", 1)[1].splitlines()  # the last frame drawn
    assert [line.split()[0] for line in final[1:4]] == ["source", "target", "transfer"]
    assert final[3].split()[-2:] == ["2/2", "done"] and final[4].strip() == "5/5 cells done"


def test_display_for_picks_lines_for_a_callable_or_a_log_file(capsys):
    lines = []
    assert isinstance(display_for(lines.append), LogLines)
    assert isinstance(display_for(None), LogLines)  # pytest's stdout is no terminal
    display_for(None).update(Progress((StageProgress("source", 2, done=1),), eta_s=30.0))
    assert capsys.readouterr().out == "source 1/2 done | ETA 30 s\n"


def packing(cells, cells_per_trial, lines=None) -> CellScheduler:
    """A scheduler that packs every cell but the transfers (as if their stage had no pack runner)."""
    return CellScheduler(
        cells,
        set(),
        job_of,
        waits_for=(Stage.SOURCE, Stage.TARGET),
        concurrency=2,
        show=(lines.append if lines is not None else lambda line: None),
        clock=Clock(),
        cells_per_trial=cells_per_trial,
        pack_key=lambda c: None if c.stage is Stage.TRANSFER else "tiny-llama",
    )


def test_a_trial_packs_ready_cells_of_one_pack_key_its_stage_first():
    config = StudyConfig(name="t", model="tiny-llama", sources=["mnli", "sst2"], targets=["rte", "cb"], seeds=[0])
    cells = plan_stages(config, ["source", "target", "transfer"])  # 2 sources, 2 targets, 4 transfers
    lines = []
    s = packing(cells, 3, lines)
    first = s.suggest("t0")
    assert first["label"] == "source:mnli_v1:s0 (+2 packed)" and first["cell"] == cells[0].key
    packed = TrialJob.of(first).cells  # the trial's job, as the worker reads it from Tune's config
    assert [c.label for c in packed] == ["source:mnli_v1:s0", "source:sst2_v1:s0", "target:rte_v1:s0"]
    assert [c.key for c in packed] == [c.key for c in cells[:3]]
    second = s.suggest("t1")  # the one cell left ready: a lone trial, a pack of one
    assert TrialJob.of(second) == TrialJob("target:cb_v1:s0", (job_of(cells[3]),))
    assert json.loads(json.dumps(second)) == second and second["cell"] == cells[3].key  # plain values for Tune
    assert lines[-1] == "target 0/2 done, 2 running"  # cells, not trials
    assert {r.stage: r.running for r in s.progress().stages} == {"source": 2, "target": 2, "transfer": 0}
    assert s.suggest("t2") is None  # the transfers wait for their sources
    # in the pack, sst2's source failed on its own (a NaN): it alone is failed, and blocks its transfers
    s.on_trial_complete("t0", {"failed_cells": json.dumps({cells[1].key: "NonFiniteLossError: loss is nan"})})
    assert s.why == {"source:sst2_v1:s0": "NonFiniteLossError: loss is nan"}
    assert s.state[cells[0].key] == "done" and s.state[cells[2].key] == "done"
    transfers = [s.suggest(f"t{i}") for i in range(3, 5)]  # not packable: one per trial
    assert labels(transfers) == ["transfer:mnli_v1->rte_v1:s0", "transfer:mnli_v1->cb_v1:s0"]
    s.on_trial_complete("t1", error=True)  # a trial that died takes all its cells
    assert s.why["target:cb_v1:s0"].startswith("the trial failed")


def test_one_cell_per_trial_never_packs():
    s = packing(design(), 1)
    assert all(len(TrialJob.of(s.suggest(f"t{i}")).cells) == 1 for i in range(3))
