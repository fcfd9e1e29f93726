"""Task similarity and source ranking on hand-made embeddings with known answers."""

import math

import pytest
import torch

from spot_core.similarity import (
    cosine_of_means,
    mean_token_cosine,
    rank_sources,
    similarity,
    task_embedding,
    task_similarity,
)


def test_cosine_of_average_tokens():
    a = torch.tensor([[1.0, 0.0], [1.0, 2.0]])  # mean (1, 1)
    b = torch.tensor([[2.0, 0.0], [0.0, 0.0]])  # mean (1, 0)
    assert cosine_of_means(a, b) == pytest.approx(1 / math.sqrt(2))


def test_per_token_average_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # cos pairs: (a0,b0)=1, (a0,b1)=1/sqrt2, (a1,b0)=0, (a1,b1)=1/sqrt2 -> mean (1 + sqrt2) / 4
    assert mean_token_cosine(a, b) == pytest.approx((1 + math.sqrt(2)) / 4)
    assert similarity(a, b, "per_token") == mean_token_cosine(a, b)


def test_several_runs_average_over_all_pairs():
    x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert task_similarity([x, y], [x]) == pytest.approx(0.5)  # (1 + 0) / 2
    assert task_similarity([x, y], [x, y]) == pytest.approx(0.5)  # (1 + 0 + 0 + 1) / 4


def test_identical_task_embeddings_rank_first():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(5, 8, generator=g)
    candidates = {f"s{i}": torch.randn(5, 8, generator=g) for i in range(6)}
    candidates["same"] = target.clone()
    for method in ("avg_tokens", "per_token"):
        ranked = rank_sources([target], candidates, method)
        assert ranked[0][0] == "same" and len(ranked) == 7
        assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    assert rank_sources([target], candidates)[0][1] == pytest.approx(1.0)


def test_embeddings_of_different_hidden_sizes_are_refused():
    with pytest.raises(ValueError, match=r"same H, got \(2, 4\) and \(2, 3\)"):
        similarity(torch.zeros(2, 4), torch.zeros(2, 3))


def test_displacement_embeddings_separate_tasks_that_share_an_initial_prompt():
    init = torch.tensor([[5.0, 5.0, 0.0], [5.0, -5.0, 0.0]])
    sentiment = init + torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    also_sentiment = init + torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    nli = init + torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    # As prompts, all three are mostly the shared init and look alike; as displacements they do not.
    assert similarity(sentiment, nli) > 0.9
    moved = {name: task_embedding(p, init, "displacement") for name, p in [("s", also_sentiment), ("n", nli)]}
    assert rank_sources([task_embedding(sentiment, init, "displacement")], moved)[0] == ("s", pytest.approx(1.0))
    assert similarity(task_embedding(sentiment, init, "displacement"), moved["n"]) == pytest.approx(-1.0)
    assert torch.equal(task_embedding(sentiment, None, "prompt"), sentiment)
    with pytest.raises(ValueError, match="needs the run's initial prompt"):
        task_embedding(sentiment, None, "displacement")
