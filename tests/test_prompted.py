"""Equivalence with plain transformers, target-only loss, only the prompt learns."""

import torch
import torch.nn.functional as F
from conftest import prompted

from spot_core.encoding import IGNORE, collate, encode_examples

EXAMPLES = [
    {"inputs": "sst2 sentence: a fine film", "targets": "positive"},
    {"inputs": "sst2 sentence: dull", "targets": "negative"},
]


def test_empty_prompt_gives_plain_transformers_logits(tiny_name):
    model, codec = prompted(tiny_name, length=0)
    batch = collate(encode_examples(codec, EXAMPLES), codec)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if model.is_encoder_decoder:
        dec = model.model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        ours = model.logits(ids, mask, decoder_input_ids=dec)
        ref = model.model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    else:
        ours = model.logits(ids, mask)
        ref = model.model(input_ids=ids, attention_mask=mask).logits
        ours, ref = ours[mask.bool()], ref[mask.bool()]  # padded positions are not defined
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_loss_is_cross_entropy_on_target_tokens_only(tiny_name):
    model, codec = prompted(tiny_name, length=3)
    batch = collate(encode_examples(codec, EXAMPLES), codec)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    model.eval()
    if model.is_encoder_decoder:
        dec = model.model.prepare_decoder_input_ids_from_labels(labels=labels)
        ref = F.cross_entropy(model.logits(ids, mask, dec).flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    else:
        full = model.logits(ids, mask)  # [B, T, V] over every input position
        ref = F.cross_entropy(full[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)
        n_targets = sum(len(e.target_ids) for e in encode_examples(codec, EXAMPLES))
        assert (labels != IGNORE).sum() == n_targets
    torch.testing.assert_close(model.loss(batch), ref, rtol=1e-5, atol=1e-6)


def test_only_the_prompt_gets_gradients_and_the_backbone_is_unchanged(tiny_name):
    model, codec = prompted(tiny_name, length=3)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    assert all(not p.requires_grad for p in model.model.parameters())
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompt.weight"]
    opt = torch.optim.SGD([model.prompt.weight], lr=1.0)
    model.train()
    for _ in range(3):
        model.loss(collate(encode_examples(codec, EXAMPLES), codec)).backward()
        assert model.prompt.weight.grad.abs().sum() > 0
        opt.step()
        opt.zero_grad()
    after = model.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
