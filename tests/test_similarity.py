"""Task similarity, the other indicators and source ranking on hand-made arrays with known answers; the numbers
against the torch implementation they replaced, to rounding (numpy and torch sum in different orders)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spot_core.similarity import (
    cosine_of_means,
    layer_windows,
    mean_token_cosine,
    neuron_overlap,
    rank_sources,
    similarity,
    task_embedding,
    task_similarity,
)


def test_cosine_of_average_tokens():
    a = np.array([[1.0, 0.0], [1.0, 2.0]])  # mean (1, 1)
    b = np.array([[2.0, 0.0], [0.0, 0.0]])  # mean (1, 0)
    assert cosine_of_means(a, b) == pytest.approx(1 / math.sqrt(2))


def test_per_token_average_cosine():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.0], [1.0, 1.0]])
    # cos pairs: (a0,b0)=1, (a0,b1)=1/sqrt2, (a1,b0)=0, (a1,b1)=1/sqrt2 -> mean (1 + sqrt2) / 4
    assert mean_token_cosine(a, b) == pytest.approx((1 + math.sqrt(2)) / 4)
    assert similarity(a, b, "per_token") == mean_token_cosine(a, b)


def test_several_runs_average_over_all_pairs():
    x, y = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert task_similarity([x, y], [x]) == pytest.approx(0.5)  # (1 + 0) / 2
    assert task_similarity([x, y], [x, y]) == pytest.approx(0.5)  # (1 + 0 + 0 + 1) / 4


def test_identical_task_embeddings_rank_first():
    g = np.random.default_rng(0)
    target = g.standard_normal((5, 8)).astype(np.float32)
    candidates = {f"s{i}": g.standard_normal((5, 8)).astype(np.float32) for i in range(6)}
    candidates["same"] = target.copy()
    for method in ("avg_tokens", "per_token"):
        ranked = rank_sources([target], candidates, method)
        assert ranked[0][0] == "same" and len(ranked) == 7
        assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    assert rank_sources([target], candidates)[0][1] == pytest.approx(1.0)


def test_ties_keep_the_candidates_order():
    x = np.array([[1.0, 0.0]])
    ranked = rank_sources([x], {"b": x.copy(), "far": np.array([[0.0, 1.0]]), "a": x.copy()})
    assert [name for name, _ in ranked] == ["b", "a", "far"]


def test_embeddings_of_different_hidden_sizes_are_refused():
    with pytest.raises(ValueError, match=r"same H, got \(2, 4\) and \(2, 3\)"):
        similarity(np.zeros((2, 4)), np.zeros((2, 3)))


def test_displacement_embeddings_separate_tasks_that_share_an_initial_prompt():
    init = np.array([[5.0, 5.0, 0.0], [5.0, -5.0, 0.0]])
    sentiment = init + np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    also_sentiment = init + np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    nli = init + np.array([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    # As prompts, all three are mostly the shared init and look alike; as displacements they do not.
    assert similarity(sentiment, nli) > 0.9
    moved = {name: task_embedding(p, init, "displacement") for name, p in [("s", also_sentiment), ("n", nli)]}
    assert rank_sources([task_embedding(sentiment, init, "displacement")], moved)[0] == ("s", pytest.approx(1.0))
    assert similarity(task_embedding(sentiment, init, "displacement"), moved["n"]) == pytest.approx(-1.0)
    assert np.array_equal(task_embedding(sentiment, None, "prompt"), sentiment)
    with pytest.raises(ValueError, match="needs the run's initial prompt"):
        task_embedding(sentiment, None, "displacement")


def test_a_displacement_keeps_the_prompts_dtype():
    checkpoint, initial = np.full((2, 3), 0.3, np.float32), np.full((2, 3), 0.1, np.float32)
    moved = task_embedding(checkpoint, initial, "displacement")
    assert moved.dtype == np.float32 and np.array_equal(moved, checkpoint - initial)


def test_the_other_indicators():
    a, b = np.ones((2, 3)), np.zeros((2, 3))
    assert similarity(a, b, "euclidean") == pytest.approx(-(6**0.5))
    masks = {"x": np.array([[[True, False]]]), "y": np.array([[[False, True]]])}
    ranked = rank_sources([np.array([[[True, True]]])], masks, "neuron_overlap")
    assert [k for k, _ in ranked] == ["x", "y"] and ranked[0][1] == pytest.approx(2**-0.5)
    with pytest.raises(ValueError, match="one shape"):
        similarity(np.ones((2, 3)), np.ones((3, 3)), "euclidean")


def as_bool(rows) -> np.ndarray:
    return np.array(rows, dtype=bool)


def test_overlap_of_known_masks():
    a = as_bool([[[1, 1, 0, 0]], [[1, 1, 1, 1]], [[0, 0, 0, 0]]])
    b = as_bool([[[1, 0, 1, 0]], [[1, 1, 1, 1]], [[1, 1, 0, 0]]])
    assert neuron_overlap(a, a) == pytest.approx(1.0)
    assert neuron_overlap(a, b) == pytest.approx(5 / math.sqrt(6 * 8))
    assert neuron_overlap(a, b, layers=[0]) == pytest.approx(0.5)
    assert neuron_overlap(a, b, layers=slice(1, 2)) == pytest.approx(1.0)
    assert neuron_overlap(a, b, layers=[0, 2]) == pytest.approx(1 / math.sqrt(2 * 4))
    assert neuron_overlap(a, b, layers=[2]) == 0.0  # a activates nothing there: defined as 0
    assert neuron_overlap(np.zeros((2, 1, 3), dtype=bool), np.zeros((2, 1, 3), dtype=bool)) == 0.0
    disjoint = as_bool([[[1, 0, 1, 0]]]), as_bool([[[0, 1, 0, 1]]])
    assert neuron_overlap(*disjoint) == 0.0
    by_window = lambda count: [neuron_overlap(a, b, w) for w in layer_windows(3, count)]  # noqa: E731
    assert by_window(3) == pytest.approx([0.5, 1.0, 0.0])
    assert by_window(2) == pytest.approx([5 / 6, 0.0])  # last window: layer 2 alone
    assert by_window(1) == pytest.approx([neuron_overlap(a, b)])


def test_layer_windows_split_like_array_split():
    assert layer_windows(3, 3) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert layer_windows(4, 3) == [slice(0, 2), slice(2, 3), slice(3, 4)]  # the first window takes the extra layer
    assert layer_windows(30, 3) == [slice(0, 10), slice(10, 20), slice(20, 30)]
    assert layer_windows(2, 3) == [slice(0, 1), slice(1, 2)]  # more windows than layers: no empty window
    assert layer_windows(0, 3) == []


def test_overlap_rejects_bad_shapes_and_windows():
    with pytest.raises(ValueError, match="same shape"):
        neuron_overlap(np.ones((2, 3, 4), dtype=bool), np.ones((2, 2, 4), dtype=bool))
    with pytest.raises(ValueError, match="same shape"):
        neuron_overlap(np.ones((2, 1, 4), dtype=bool), np.ones((3, 1, 4), dtype=bool), slice(0, 1))
    with pytest.raises(ValueError, match="window"):
        layer_windows(2, 0)


# The torch implementation the numpy one replaced (spot_core/similarity.py before the analysis went pure).
def torch_similarity(a: np.ndarray, b: np.ndarray, method: str) -> float:
    x, y = torch.from_numpy(a).double(), torch.from_numpy(b).double()
    if method == "avg_tokens":
        return float(F.cosine_similarity(x.mean(0), y.mean(0), dim=0))
    if method == "per_token":
        return float((F.normalize(x, dim=1) @ F.normalize(y, dim=1).T).mean())
    return -float(torch.linalg.vector_norm(x - y))


@pytest.mark.parametrize("shape", [(4, 32), (4, 48), (5, 8), (7, 33), (20, 64), (3, 4), (2, 3), (100, 576)])
def test_the_numbers_of_the_torch_implementation_to_rounding(shape):
    g = np.random.default_rng(sum(shape))
    for _ in range(5 if shape[0] < 100 else 1):
        a = g.standard_normal(shape).astype(np.float32) * np.float32(g.uniform(0.01, 10))
        b, init = g.standard_normal(shape).astype(np.float32), g.standard_normal(shape).astype(np.float32)
        for x, y in [(a, b), (a - init, b - init), (a.astype(np.float64) / 3, b.astype(np.float64) * 1.1)]:
            for method in ("avg_tokens", "per_token", "euclidean"):
                assert similarity(x, y, method) == pytest.approx(torch_similarity(x, y, method), rel=1e-12), method
        masks = g.random((3, *shape)) > 0.5, g.random((3, *shape)) > 0.5
        x, y = (torch.from_numpy(m).flatten().double() for m in masks)
        assert neuron_overlap(*masks) == float(x @ y / (x.norm() * y.norm()))  # sums of 0/1: exact either way


def test_zero_vectors_are_floored_as_torch_does():
    zero, x = np.zeros((2, 3)), np.array([[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]])  # x: a zero token, mean (0.5, 1, 1)
    assert cosine_of_means(zero, x) == 0.0 and mean_token_cosine(zero, x) == 0.0
    assert mean_token_cosine(x, x) == pytest.approx(0.25)  # only (x0, x0) of the 4 pairs: the zero token scores 0
    tiny = np.full((1, 3), 1e-10)  # norms below the floors: cos(tiny, tiny) = |tiny|^2 / eps^2, not 1
    assert cosine_of_means(tiny, tiny) == pytest.approx(3e-20 / 1e-16)
    assert mean_token_cosine(tiny, tiny) == pytest.approx(1.0)  # 1.7e-10 is above normalize's 1e-12
    for a, b in [(zero, x), (x, x), (tiny, tiny)]:
        for method in ("avg_tokens", "per_token"):
            assert similarity(a, b, method) == pytest.approx(torch_similarity(a, b, method), rel=1e-12, abs=0)
