"""Rank classification and greedy generation with a prompted model.

Rank classification scores every label's target sequence (label tokens + end token) by its
summed log-likelihood and picks the best, as T5's rank_classification does. The prompt + input
prefix is run once per example; label continuations reuse its key/value cache (decoder-only)
or encoder states (encoder-decoder).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from spot_core.data import pad
from spot_core.prompted import PromptedLM, position_ids


def _token_logprobs(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, S, V] logits predicting [N, S] ids -> [N] summed log-probs over mask."""
    lp = torch.log_softmax(logits.float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return (lp * mask).sum(-1)


@torch.no_grad()
def label_scores(model: PromptedLM, inputs: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """Log-likelihood of each label for each input.

    Args:
        inputs: B lists of input token ids.
        labels: K lists of target token ids (as `Codec.encode_target` gives them).

    Returns:
        [B, K] summed log-probabilities.
    """
    B, K = len(inputs), len(labels)
    lab, lab_mask = pad(labels, model.backbone.tokenizer.pad_token_id)  # [K, S]
    lab, lab_mask = lab.repeat(B, 1), lab_mask.repeat(B, 1)  # [B*K, S], example-major
    device = model.prompt.weight.device
    lab, lab_mask = lab.to(device), lab_mask.to(device)
    if model.is_encoder_decoder:
        ids, mask = (t.to(device) for t in pad(inputs, model.backbone.tokenizer.pad_token_id))
        embeds, full_mask = model.embed(ids, mask)
        enc = model.model.get_encoder()(inputs_embeds=embeds, attention_mask=full_mask).last_hidden_state
        dec_in = model.model.prepare_decoder_input_ids_from_labels(labels=lab.masked_fill(lab_mask == 0, -100))
        logits = model.model(
            encoder_outputs=(enc.repeat_interleave(K, 0),),
            attention_mask=full_mask.repeat_interleave(K, 0),
            decoder_input_ids=dec_in,
        ).logits
        return _token_logprobs(logits, lab, lab_mask).view(B, K)
    # Decoder-only: left-pad so every row's last position is its last input token.
    ids, mask = (t.to(device) for t in pad(inputs, model.backbone.tokenizer.pad_token_id, left=True))
    out, full_mask = model.body(ids, mask, use_cache=True)
    first = torch.log_softmax(model.head(out.last_hidden_state[:, -1]), -1)  # [B, V]
    first = first.repeat_interleave(K, 0).gather(-1, lab[:, :1]).squeeze(-1)  # [B*K]
    cache = out.past_key_values
    cache.batch_repeat_interleave(K)
    cont_mask = torch.cat([full_mask.repeat_interleave(K, 0), lab_mask], 1)
    pos = position_ids(cont_mask)[:, -lab.shape[1] :]
    hidden = model.model.base_model(
        input_ids=lab, attention_mask=cont_mask, position_ids=pos, past_key_values=cache, use_cache=True
    ).last_hidden_state  # [B*K, S, H]
    rest = torch.zeros_like(first)
    if lab.shape[1] > 1:
        where = lab_mask[:, 1:].bool()
        lp = torch.log_softmax(model.head(hidden[:, :-1][where]), -1).gather(-1, lab[:, 1:][where].unsqueeze(-1))
        rest = rest.index_put((where.nonzero()[:, 0],), lp.squeeze(-1), accumulate=True)
    return (first + rest).view(B, K)


@torch.no_grad()
def label_scores_naive(
    model: PromptedLM, inputs: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Reference implementation of `label_scores`: one full forward per (input, label). [B, K]."""
    device = model.prompt.weight.device
    scores = torch.zeros(len(inputs), len(labels))
    for b, inp in enumerate(inputs):
        for k, lab in enumerate(labels):
            ids = torch.as_tensor([list(inp)], device=device)
            lab_t = torch.as_tensor([list(lab)], device=device)
            if model.is_encoder_decoder:
                dec = model.model.prepare_decoder_input_ids_from_labels(labels=lab_t)
                logits = model.logits(ids, torch.ones_like(ids), decoder_input_ids=dec)
            else:
                full = torch.cat([ids, lab_t], 1)
                logits = model.logits(full, torch.ones_like(full))[:, ids.shape[1] - 1 : -1]
            scores[b, k] = _token_logprobs(logits, lab_t, torch.ones_like(lab_t))[0]
    return scores


@torch.no_grad()
def generate(model: PromptedLM, inputs: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy decoding after prompt + input. Returns B lists of generated token ids (end token excluded)."""
    tok = model.backbone.tokenizer
    device = model.prompt.weight.device
    ids, mask = (t.to(device) for t in pad(inputs, tok.pad_token_id, left=not model.is_encoder_decoder))
    embeds, full_mask = model.embed(ids, mask)
    out = model.model.generate(
        inputs_embeds=embeds,
        attention_mask=full_mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    rows = [row[1:] if model.is_encoder_decoder else row for row in out.tolist()]  # drop the decoder start token
    # Finished rows are filled with pad after their end token: cut at the end token.
    return [row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row for row in rows]
