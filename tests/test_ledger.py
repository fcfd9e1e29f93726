"""The report pipeline's runs table from MLflow runs: the retrieval column from the run's tag, or, for runs logged
before the study wrote that tag, from their display name."""

from types import SimpleNamespace

import pytest

from pipelines.ledger import retrieval_strategy, runs_table
from spot_core.analysis.frames import RUN_COLUMNS, check_runs


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
