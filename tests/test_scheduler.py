"""The study's searcher: cells are handed out when their inputs are done, retrieval is planned once."""

from ray.tune.search import Searcher

from pipelines.scheduler import CellScheduler
from spot_core.stages.catalogue import plan_stages
from spot_core.study import StudyConfig
from spot_core.tags import Stage


def design() -> list:
    config = StudyConfig(name="t", model="tiny-llama", sources=["mnli", "sst2"], targets=["rte"], seeds=[0])
    return plan_stages(config, ["source", "target", "transfer"])  # 2 sources, 1 target, 2 transfers


def scheduler(cells, finished=(), plan_more=None, lines=None) -> CellScheduler:
    show = lines.append if lines is not None else lambda line: None
    waits_for = (Stage.SOURCE, Stage.TARGET)
    return CellScheduler(cells, set(finished), lambda c: {"label": c.label}, plan_more, waits_for, 2, show)


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
    assert lines[-1].startswith("  source 2/2 done, 0 running | target 1/1 done, 0 running") and "ETA" in lines[-1]


def test_with_everything_upstream_finished_retrieval_is_planned_at_once():
    cells = design()
    upstream, extra = cells[:3], cells[3:]
    s = scheduler([], finished={c.key for c in upstream}, plan_more=lambda done: (extra, {}))
    assert s.planned == extra and len(s.cells) == 2  # the driver sees there is work before it starts Tune
    assert s.suggest("t0")["label"] == extra[0].label
    done = scheduler([], finished={c.key for c in cells}, plan_more=lambda done: (extra, {}))
    assert done.planned == extra and not done.cells  # planned, all finished: nothing to run
    assert done.suggest("t0") == Searcher.FINISHED
