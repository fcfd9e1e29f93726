"""The report pipeline's tables from MLflow runs: the runs table (the retrieval column from the run's tag, or, for
runs logged before the study wrote that tag, from their display name), the facts and ATTEMPT's attention."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from pipelines.ledger import (
    attention_table,
    curves_table,
    facts_table,
    retrieval_strategy,
    runs_table,
    score_histories,
)
from spot_core.analysis.frames import ATTENTION_COLUMNS, FACT_COLUMNS, RUN_COLUMNS, check_facts, check_runs
from spot_core.run_dir import RunDir


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
    assert retrieval_strategy(mlflow_run("x", stage, **tags).data.tags) == expected


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
    table = attention_table(client, runs)
    assert list(table.columns) == list(ATTENTION_COLUMNS)
    assert table.values.tolist() == [["att", "mnli_v1", 0.2], ["att", "mnli_v1", 0.3], ["att", "target", 0.5]]
