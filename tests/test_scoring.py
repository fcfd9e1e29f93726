"""Rank classification and generation."""

import pytest
import torch
from conftest import prompted
from torch import nn

from spot_core.scoring import generate, label_scores, label_scores_naive

INPUTS = ["stsb sentence1: a b sentence2: c", "rte sentence1: the cat sat on the mat sentence2: cat"]
LABELS = ["0.0", "1.8", "5.0", "entailment", "not_entailment"]


def test_cached_scores_equal_one_forward_per_label(tiny_name):
    model, codec = prompted(tiny_name, length=5)
    inputs = [codec.encode_input(t) for t in INPUTS]
    labels = [codec.encode_target(w) for w in LABELS]
    fast, naive = label_scores(model, inputs, labels), label_scores_naive(model, inputs, labels)
    assert fast.shape == (2, 5)
    torch.testing.assert_close(fast, naive, rtol=1e-4, atol=1e-4)


def _biased_head(model, codec, favourite: str):
    """Zero LM head weights + a bias: every position predicts the same distribution, which
    strongly prefers the tokens of `favourite`, so its label must win rank classification."""
    vocab = model.model.get_output_embeddings().weight.shape[0]
    head = nn.Linear(model.backbone.hidden_size, vocab, bias=True)
    nn.init.zeros_(head.weight)
    bias = torch.full((vocab,), -5.0)
    bias[torch.as_tensor(codec.encode_target(favourite))] = 5.0
    head.bias.data = bias
    head.requires_grad_(False)
    model.model.set_output_embeddings(head)


@pytest.mark.parametrize("favourite", ["yes", "no"])
def test_rank_classification_picks_the_label_the_model_prefers(tiny_name, favourite):
    model, codec = prompted(tiny_name, length=2)
    _biased_head(model, codec, favourite)
    labels = ["yes", "no"]
    scores = label_scores(model, [codec.encode_input(t) for t in INPUTS], [codec.encode_target(w) for w in labels])
    assert scores.argmax(-1).tolist() == [labels.index(favourite)] * len(INPUTS)


def test_greedy_generation_follows_the_model(tiny_name):
    model, codec = prompted(tiny_name, length=2)
    q = model.backbone.tokenizer.convert_tokens_to_ids("q")
    _biased_head(model, codec, "yes")
    model.model.get_output_embeddings().bias.data[q] = 9.0  # 'q' beats everything, the end token included
    out = generate(model, [codec.encode_input(t) for t in INPUTS], max_new_tokens=3)
    assert out == [[q, q, q]] * len(INPUTS)
    assert codec.decode(out[0]) == "qqq"
