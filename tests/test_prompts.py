"""Soft-prompt initialisers and prepending."""

import pytest
import torch

from spot_core.prompts import (
    PromptShapeError,
    SoftPrompt,
    check_shape,
    class_labels,
    prefix,
    random_uniform,
    sampled_vocab,
    similarity_weights,
    weighted_average,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_random_uniform_range_shape_and_seed():
    p = random_uniform(100, 16, 0.5, gen())
    assert p.shape == (100, 16) and p.dtype == torch.float32
    assert p.min() >= -0.5 and p.max() <= 0.5 and p.min() < -0.4 and p.max() > 0.4
    assert torch.equal(p, random_uniform(100, 16, 0.5, gen()))
    assert not torch.equal(p, random_uniform(100, 16, 0.5, gen(1)))


def test_sampled_vocab_draws_distinct_rows_from_the_population():
    emb = torch.arange(20 * 3, dtype=torch.float32).view(20, 3)  # row i = [3i, 3i+1, 3i+2]
    p = sampled_vocab(emb, 5, gen(), population=8)
    rows = (p[:, 0] / 3).long()
    assert p.shape == (5, 3)
    assert rows.max() < 8 and len(set(rows.tolist())) == 5
    assert torch.equal(p, emb[rows])
    explicit = sampled_vocab(emb, 3, gen(), population=[17, 18, 19])
    assert sorted((explicit[:, 0] / 3).long().tolist()) == [17, 18, 19]


def test_sampled_vocab_longer_than_population_samples_with_replacement():
    emb = torch.randn(10, 4)
    assert sampled_vocab(emb, 30, gen(), population=4).shape == (30, 4)


def test_class_labels_rows_are_mean_subword_embeddings():
    emb = torch.arange(10 * 2, dtype=torch.float32).view(10, 2)
    p = class_labels(emb, [[1, 3], [5]], 4, gen(), population=10)
    assert torch.equal(p[0], (emb[1] + emb[3]) / 2)
    assert torch.equal(p[1], emb[5])
    assert p.shape == (4, 2)
    with pytest.raises(ValueError, match=r"one prompt token per label word: 3 label words, but prompt.length=2"):
        class_labels(emb, [[1], [2], [3]], 2, gen())


def test_weighted_average_values_and_errors():
    a, b = torch.ones(2, 3), torch.full((2, 3), 3.0)
    assert torch.allclose(weighted_average([a, b], [0.25, 0.75]), torch.full((2, 3), 2.5))
    with pytest.raises(PromptShapeError, match=r"prompt 1 has shape \(4, 3\)"):
        weighted_average([a, torch.ones(4, 3)], [0.5, 0.5])
    with pytest.raises(ValueError, match="2 prompts but 1 weights"):
        weighted_average([a, b], [1.0])


def test_similarity_weights_are_the_similarities_over_their_sum():
    # SPoT: a_r = sim_r / sum_l sim_l; inputs that do not already sum to 1
    assert similarity_weights([0.5, 1.5, 2.0]) == pytest.approx([0.125, 0.375, 0.5], abs=1e-12)
    assert similarity_weights([3.0]) == [1.0]
    w = similarity_weights([0.9, 0.3])
    assert w == pytest.approx([0.75, 0.25], abs=1e-12) and sum(w) == pytest.approx(1.0, abs=1e-12)
    assert similarity_weights([-0.2, 0.6]) == pytest.approx([-0.5, 1.5], abs=1e-12)  # a negative similarity stays
    with pytest.raises(ValueError, match=r"positive sum, got \[0.3, -0.3\]"):
        similarity_weights([0.3, -0.3])


def test_shape_error_names_both_shapes_and_the_model():
    with pytest.raises(PromptShapeError, match=r"shape \(100, 768\).*'smollm2-135m'.*\[100, 576\]"):
        check_shape(torch.zeros(100, 768), 100, 576, what="prompt file x", model="smollm2-135m")
    with pytest.raises(PromptShapeError, match="2-D"):
        SoftPrompt(torch.zeros(3))


def test_prefix_puts_the_prompt_first_and_extends_the_mask():
    prompt = torch.ones(2, 3)
    embeds = torch.zeros(4, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 4)
    out, m = prefix(prompt, embeds, mask)
    assert out.shape == (4, 7, 3) and m.shape == (4, 7)
    assert torch.equal(out[:, :2], torch.ones(4, 2, 3)) and torch.equal(out[:, 2:], embeds)
    assert m[0].tolist() == [1, 1, 1, 1, 1, 0, 0]
