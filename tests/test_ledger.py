"""The report pipeline's tables from MLflow runs: the runs table (the retrieval column from the run's tag, or, for
runs logged before the study wrote that tag, from their display name), the facts and ATTEMPT's attention; the keyed
ledger's parent and child runs in a store, and a study trial's child runs (`pipelines.cells.train_cell`)."""

import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from pipelines import cells
from pipelines.cells import CellJob, TrialJob
from pipelines.ledger import (
    curves_table,
    facts_table,
    read_tags,
    retrieval_ledger,
    runs_table,
    score_histories,
    stage_artifacts,
    study_ledger,
)
from pipelines.tracking import open_store
from spot_core.analysis.frames import ATTENTION_COLUMNS, FACT_COLUMNS, RUN_COLUMNS, check_facts, check_runs
from spot_core.run_dir import RunDir
from spot_core.stages.catalogue import stage_of
from spot_core.tags import ATTENTION


def mlflow_run(key: str, stage: str, score: float = 70.0, **tags: str) -> SimpleNamespace:
    tags = {"cell_key": key, "stage": stage, "task": "rte_v1", "target": "rte_v1", "seed": "0"} | tags
    return SimpleNamespace(data=SimpleNamespace(tags=tags, metrics={"best/val_score": score}))


@pytest.mark.parametrize(
    "stage, tags, expected",
    [
        ("retrieval", {"source": "wavg-top3", "k": "3", "retrieval": "weighted_average"}, "weighted_average"),
        ("retrieval", {"source": "renamed", "k": "2", "retrieval": "mixture"}, "mixture"),  # the tag wins
        ("retrieval", {"source": "wavg-top3", "k": "3"}, "weighted_average"),  # logged before the tag
        ("retrieval", {"source": "mix-top12", "k": "12"}, "mixture"),
        ("retrieval_mixture", {"k": "2"}, "mixture"),
        ("retrieval", {"source": "wavg-topx"}, ""),
        ("transfer", {"source": "mnli_v1"}, ""),
        ("transfer", {"source": "mix-top2"}, ""),  # a source task could be named so; only retrieval runs parse
        ("target", {}, ""),
    ],
)
def test_retrieval_comes_from_its_tag_else_from_the_legacy_display_name(stage, tags, expected):
    assert read_tags(mlflow_run("x", stage, **tags).data.tags).get("retrieval", "") == expected  # the stage's reader


def test_the_runs_table_has_the_analysis_columns_and_keeps_the_display_name():
    runs = [
        mlflow_run("b", "target"),
        mlflow_run("w", "retrieval", source="wavg-top2", k="2"),
        mlflow_run("m", "retrieval", source="mix-top2", k="2", retrieval="mixture"),
        mlflow_run("t", "transfer", source="mnli_v1", source_key="s"),
    ]
    table = runs_table(runs, ["mnli_v1"], ["rte_v1"])
    assert list(table.columns) == list(RUN_COLUMNS)
    by_key = table.set_index("key")
    assert by_key["retrieval"].to_dict() == {"b": "", "w": "weighted_average", "m": "mixture", "t": ""}
    assert by_key.loc["w", "source"] == "wavg-top2" and by_key.loc["w", "k"] == 2
    assert check_runs(table)["retrieval"].tolist() == table["retrieval"].tolist()


def tracked_run(key: str, stage: str, params: dict, metrics: dict) -> SimpleNamespace:
    tags = {"cell_key": key, "stage": stage, "task": "rte_v1", "target": "rte_v1", "seed": "0"}
    data = SimpleNamespace(tags=tags, params=params, metrics=metrics)
    return SimpleNamespace(info=SimpleNamespace(run_id=f"id-{key}"), data=data)


class FakeClient:
    """The MlflowClient calls the ledger makes for the facts and attention tables, answering from dicts."""

    def __init__(self, histories: dict, artifacts: dict):
        self.histories, self.artifacts = histories, artifacts

    def get_metric_history(self, run_id: str, name: str) -> list:
        assert name == "val/score"
        return [SimpleNamespace(step=s, value=v, timestamp=t) for s, v, t in self.histories.get(run_id, [])]

    def list_artifacts(self, run_id: str) -> list:
        return [SimpleNamespace(path=name) for name in self.artifacts.get(run_id, {})]

    def download_artifacts(self, run_id: str, name: str, tmp: str) -> str:
        path = Path(tmp) / run_id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.artifacts[run_id][name]))
        return str(path)


def test_facts_come_from_the_param_and_the_score_history_fetched_once():
    runs = [
        tracked_run("a", "target", {"trainable_params": "1536"}, {"best/step": 20.0}),
        tracked_run("old", "target", {}, {"best/step": 10.0}),  # logged before trainable_params existed
        tracked_run("z", "zero_shot", {}, {}),  # no training: no best step
    ]
    # a resumed at step 20 logs it twice: the last one counts (as in the curves); times from its first evaluation
    histories = {"id-a": [(10, 50.0, 1_000), (20, 60.0, 4_000), (20, 61.0, 9_500)], "id-old": [(10, 55.0, 7_000)]}
    client = FakeClient(histories, {})
    scores = score_histories(client, runs)
    facts = check_facts(facts_table(runs, scores)).set_index("key")
    assert list(facts.reset_index().columns) == list(FACT_COLUMNS)
    assert facts.loc["a", "trainable_params"] == 1536 and facts.loc["a", "best_step"] == 20
    assert facts.loc["a", "seconds_to_best"] == 8.5 and facts.loc["old", "seconds_to_best"] == 0.0
    assert math.isnan(facts.loc["old", "trainable_params"]) and pd.isna(facts.loc["z", "best_step"])
    assert math.isnan(facts.loc["z", "seconds_to_best"])
    assert curves_table(scores).query("key == 'a'")["score"].tolist() == [50.0, 61.0]


def test_attention_is_the_mean_of_each_attempt_runs_artifact():
    runs = [
        tracked_run("att", "attempt", {}, {}),
        tracked_run("bare", "attempt", {}, {}),  # no artifact: no rows
        tracked_run("t", "target", {}, {}),
    ]
    record = {"prompts": ["mnli_v1", "mnli_v1", "target"], "mean": [0.2, 0.3, 0.5], "examples": [[0.2, 0.3, 0.5]]}
    client = FakeClient({}, {"id-att": {RunDir.ATTENTION: record}, "id-t": {RunDir.ATTENTION: record}})
    table = stage_artifacts(client, runs)[ATTENTION]  # what the ATTEMPT stage reads from its runs' artifacts
    assert list(table.columns) == list(ATTENTION_COLUMNS)
    assert table.values.tolist() == [["att", "mnli_v1", 0.2], ["att", "mnli_v1", 0.3], ["att", "target", 0.5]]


# --- the keyed ledger in a store: a parent per scope, its child runs found again by key ------------------------------
def test_a_key_finished_once_is_found_again_and_a_rerun_reuses_the_parent(tmp_path):
    client, experiment_id = open_store(f"sqlite:///{tmp_path}/mlflow.db", "spot-retrieve")
    runs = retrieval_ledger(client, experiment_id, "r1")
    with runs.open_parent("retrieve-rte_v1", "top_k: 3\n", {"top_k": 3}) as parent:
        with runs.child(parent.run_id, "k1", "baseline", {"role": "baseline"}):
            pass
        left = runs.child(parent.run_id, "k2", "source", {"role": "source"})  # left RUNNING, as by a process killed
    again = retrieval_ledger(client, experiment_id, "r1")
    assert again.finished_keys() == {"k1"} and again.finished("k1") and not again.finished("k2")
    assert retrieval_ledger(client, experiment_id, "r2").finished_keys() == set()  # another retrieval's runs
    with again.open_parent("retrieve-rte_v1", "top_k: 4\n", {"top_k": 4}) as reopened:
        assert reopened.run_id == parent.run_id  # one parent per key, RUNNING again
        assert client.get_run(left.run_id).info.status == "KILLED"  # what the earlier process left: KILLED
    tags = client.get_run(parent.run_id).data.tags
    assert (tags["kind"], tags["retrieve_key"], tags["top_k"], tags["config"]) == ("retrieve", "r1", "4", "top_k: 4\n")
    (child,) = again.children("FINISHED")
    assert child.data.tags["run_key"] == "k1" and child.data.tags["mlflow.parentRunId"] == parent.run_id


def cell_jobs(tmp_path: Path, *keys: str) -> dict:
    """A trial's config of cells named by what their stage's run does with them."""
    jobs = [
        CellJob(key, f"source:{key}", str(tmp_path / key), "source", {"then": key}, {"stage": "source"}, {})
        for key in keys
    ]
    return TrialJob.of_cells(jobs).config()


def test_a_trial_trains_each_key_once_under_its_child_run_and_a_stopped_trial_kills_its_open_runs(
    tmp_path, monkeypatch
):
    def run(spec: dict, out_dir: Path, tracker) -> dict:  # the stage's work, without a model
        if spec["then"] == "fails":
            raise ValueError("loss is nan")
        if spec["then"] == "stops":
            raise KeyboardInterrupt
        RunDir(out_dir).finish({"best/val_score": 1.0})
        return {"best/val_score": 1.0}

    monkeypatch.setattr(cells, "stage_of", lambda kind: replace(stage_of(kind), run=run, run_pack=None))
    monkeypatch.setattr(cells.torch, "set_num_threads", lambda n: None)  # this process's threads stay as they are
    monkeypatch.setattr(cells, "release_memory", lambda worker: None)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client, experiment_id = open_store(uri, "spot-study")
    runs = study_ledger(client, experiment_id, "s")
    with runs.open_parent("study-s", "", {}) as parent:

        def trial(*keys: str) -> dict:
            return cells.train_cell(cell_jobs(tmp_path, *keys), uri, experiment_id, parent.run_id, "s", 1)

        assert trial("fine", "fails") == {"failed_cells": json.dumps({"fails": "ValueError: loss is nan"})}
        assert trial("fine") == {"failed_cells": "{}"}  # finished in an earlier attempt: not opened again
        with pytest.raises(KeyboardInterrupt):
            trial("stops", "after")  # the trial itself stops: its open cells' runs end KILLED
    ended = {r.data.tags["cell_key"]: r for r in runs.children()}
    assert len(runs.children()) == 4 and {k: r.info.status for k, r in ended.items()} == {
        "fine": "FINISHED",
        "fails": "FAILED",
        "stops": "KILLED",
        "after": "KILLED",
    }
    assert ended["fails"].data.tags["error"] == "ValueError: loss is nan"
    assert ended["fine"].data.metrics["pack/cells"] == 2.0 and "time/cell_seconds" in ended["fine"].data.metrics
    assert {r.data.tags["mlflow.parentRunId"] for r in ended.values()} == {parent.run_id}
