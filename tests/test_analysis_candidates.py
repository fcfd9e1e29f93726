"""Task similarity matrices and candidate rankings on hand-built embeddings with known answers."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import runs_frame

from spot_core.analysis import embedding_keys, rank_candidates, score_candidates, task_similarity_matrix


def runs(*rows) -> pd.DataFrame:
    """Runs from (key, stage, task, source_key, seed, score); target = task except for source runs."""
    return runs_frame(
        *(
            {"key": key, "stage": stage, "task": task, "source_key": src_key}
            | {"target": "" if stage == "source" else task, "seed": seed, "score": score}
            for key, stage, task, src_key, seed, score in rows
        )
    )


# a's tokens point two ways, b's both along their mean: the two measures disagree.
A = np.array([[1.0, 0.0], [0.0, 1.0]])
B = np.array([[1.0, 1.0], [1.0, 1.0]])


def test_similarity_matrix_average_tokens_vs_per_token():
    tasks = {"a": ["ka"], "b": ["kb"], "none": ["kx"]}
    embeddings = {"ka": A, "kb": B}
    avg = task_similarity_matrix(tasks, embeddings, "avg_tokens")
    per = task_similarity_matrix(tasks, embeddings, "per_token")
    assert list(avg.index) == list(avg.columns) == ["a", "b", "none"]
    assert avg.loc["a", "b"] == pytest.approx(1.0)  # mean tokens (.5, .5) and (1, 1)
    assert per.loc["a", "b"] == pytest.approx(1 / math.sqrt(2)) == per.loc["b", "a"]
    assert per.loc["a", "a"] == pytest.approx(0.5)  # orthogonal tokens: pairs 1, 0, 0, 1
    assert avg.loc["a", "a"] == pytest.approx(1.0)
    assert math.isnan(avg.loc["none", "a"]) and math.isnan(avg.loc["none", "none"])


def test_tasks_with_several_runs_average_over_all_pairs():
    x, y = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    matrix = task_similarity_matrix({"p": ["x", "y"], "q": ["x"]}, {"x": x, "y": y})
    assert matrix.loc["p", "q"] == pytest.approx(0.5) and matrix.loc["p", "p"] == pytest.approx(0.5)


def test_embedding_keys_group_runs_by_task():
    table = runs(("s1", "source", "a", "", 0, 1.0), ("s2", "source", "a", "", 1, 1.0), ("t1", "target", "t", "", 0, 1))
    assert embedding_keys(table, {"s1": A, "s2": A, "t1": B}) == {"a": ["s1", "s2"], "t": ["t1"]}
    assert embedding_keys(table, {"s2": A}) == {"a": ["s2"]}


def test_identical_task_embeddings_rank_first_and_ties_keep_run_order():
    g = np.random.default_rng(0)
    target = g.standard_normal((4, 8)).astype(np.float32)
    other = g.standard_normal((4, 8)).astype(np.float32)
    table = runs(
        ("far", "source", "x", "", 0, 50.0),
        ("twin_a", "source", "y", "", 0, 50.0),
        ("twin_b", "source", "y", "", 1, 50.0),
        ("no_emb", "source", "z", "", 0, 50.0),
        ("t0", "target", "t", "", 0, 60.0),
    )
    embeddings = {"far": other, "twin_a": target.copy(), "twin_b": target.copy(), "t0": target}
    ranking = rank_candidates(table, embeddings)
    for method in ("avg_tokens", "per_token"):
        ranked = ranking[ranking["method"] == method]
        assert list(ranked["source_key"]) == ["twin_a", "twin_b", "far"]  # no_emb cannot be ranked
        assert list(ranked["rank"]) == [1, 2, 3] and list(ranked["source"]) == ["y", "y", "x"]
    assert ranking.iloc[0]["similarity"] == pytest.approx(1.0)


def test_similarity_averages_over_the_targets_runs():
    table = runs(("s", "source", "a", "", 0, 1.0), ("t0", "target", "t", "", 0, 1.0), ("t1", "target", "t", "", 1, 1))
    embeddings = {"s": np.array([[1.0, 0.0]]), "t0": np.array([[1.0, 0.0]]), "t1": np.array([[0.0, 1.0]])}
    ranking = rank_candidates(table, embeddings, methods=["avg_tokens"])
    assert list(ranking.columns) == ["method", "target", "rank", "source_key", "source", "similarity"]
    assert ranking["similarity"].tolist() == [pytest.approx(0.5)]


def test_candidates_carry_their_true_transfer_scores():
    table = runs(
        ("b0", "target", "t", "", 0, 60.0),
        ("b1", "target", "t", "", 1, 64.0),
        ("x0", "transfer", "t", "s1", 0, 70.0),
        ("x1", "transfer", "t", "s1", 1, 74.0),
        ("y0", "transfer", "t", "s2", 0, 66.0),
    )
    ranking = pd.DataFrame(
        {"method": "avg_tokens", "target": "t", "rank": [1, 2, 3], "source_key": ["s2", "s1", "s3"]}
        | {"source": ["b", "a", "c"], "similarity": [0.9, 0.5, 0.1]}
    )
    scored = score_candidates(ranking, table).set_index("source_key")
    assert scored.loc["s1", "score"] == 72.0 and scored.loc["s1", "complete"]
    assert scored.loc["s1", "rel"] == pytest.approx(10 / 38 * 100) and scored.loc["s1", "base"] == 62.0
    assert scored.loc["s2", "n"] == 1 and not scored.loc["s2", "complete"] and scored.loc["s2", "score"] == 66.0
    assert scored.loc["s3", "n"] == 0 and math.isnan(scored.loc["s3", "score"])
