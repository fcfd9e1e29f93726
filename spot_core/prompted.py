"""A frozen backbone with a soft prompt in front of its (encoder) input.

Decoder-only models run [prompt; input] one of two ways, with the same result up to float rounding:
- prompt once (`prompt_once=True`, the default where it applies): under causal attention the hidden states and
  the keys/values of positions 0..L-1 depend on the prompt alone, so they are the same in every example. The
  prompt runs once, as a batch of one (`PromptStates`); the examples run on its keys/values, with positions
  continuing at L. Gradients flow back through the one prompt computation.
- concatenated (`prompt_once=False`): the prompt is prepended to every example's embeddings (as PEFT does). It is
  kept as the reference path for equivalence checks.
Encoder-decoder models (T5) always concatenate: the encoder is bidirectional, so the prompt's states depend on the
input and cannot be shared.

Nothing sits before the prompt: a `<bos>` that a tokenizer adds (Gemma) is the first input token, at position L,
the same in every example, as in the concatenated path. Padding only ever follows the prompt (training pads on the
right, generation between the prompt and the input), and the inputs' positions continue at L.

Sliding-window layers (Gemma 3: a window of 512 on five layers of six) see what the concatenated path shows them:
the prompt's cache keeps every position, and the model's own masks apply the window over the same cache slots
(prompt, then the example), so a training example sees exactly the keys it saw before.

Dropout: SmolLM2, Gemma 3 and Llama have none (attention dropout 0). A decoder-only model with dropout would draw
one dropout mask for the prompt's positions per batch instead of one per example: the same expectation, another
sample.

A per-example prompt (`PromptModule.per_example`: ATTEMPT's) is computed from each example's embedded input, so it
always runs concatenated, whatever `prompt_once` says.

Packed batches (`spot_core.packing`): the examples of one forward pass may each have their own prompt. `prompts`
then holds P prompts of one length ([P, L, H], or their `PromptStates` in prompt-once mode) and `rows` [B] gives
each example's prompt; nothing in the backbone mixes the examples of a batch, so each example sees exactly what
it would see in a batch of its own prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from spot_core.backbones import Backbone, resolve_prompt_once
from spot_core.encoding import IGNORE
from spot_core.prompts import PromptModule, check_shape, prefix


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """[B, T] positions that skip padding (left or right): cumsum(mask) - 1, clamped at 0."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@dataclass
class PromptStates:
    """The soft prompt's keys and values at every layer, computed once (decoder-only, a batch of P prompts).

    `keys[i]` and `values[i]` are [P, kv_heads, L, head_dim]; P is 1 but in a packed batch. Made with
    `leaves=True` for a prompt being trained, they are detached float32 leaves: each micro-batch's backward leaves
    its gradient on them (summed in float32, as the concatenated path sums into its float32 prompt, whatever the
    backbone's dtype), and `backward()` then carries the sum through the one prompt computation, so the prompt runs
    once per batch whatever the micro-batch size.
    """

    length: int
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    dtype: torch.dtype  # the backbone's: what the cache hands the attention layers
    attached: list[torch.Tensor] = field(default_factory=list)  # keys + values in the prompt's graph (leaves only)

    def cache(self, batch: int, rows: torch.Tensor | None = None) -> DynamicCache:
        """A cache holding the prompt's keys/values for `batch` examples (expanded views: autograd sums them back);
        with `rows` [batch], example b gets prompt rows[b] (a packed batch).

        Plain layers keep every position: a sliding-window layer's cache would drop the positions outside its
        window, which the masks of right-padded rows still need; the window itself is applied by the masks.
        """
        cache = DynamicCache()
        for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            if rows is None:
                k, v = (t.to(self.dtype).expand(batch, -1, -1, -1) for t in (k, v))
            else:
                k, v = (t.to(self.dtype).index_select(0, rows) for t in (k, v))
            cache.update(k, v, i)
        return cache

    def backward(self) -> None:
        """Backpropagates the gradients accumulated on the leaves through the prompt computation."""
        if not self.attached:  # states made without leaves: their gradients already reached the prompt
            return
        pairs = [(a, leaf.grad) for a, leaf in zip(self.attached, [*self.keys, *self.values], strict=True)]
        pairs = [(a, g.to(a.dtype)) for a, g in pairs if g is not None]
        if pairs:
            torch.autograd.backward([a for a, _ in pairs], [g for _, g in pairs])


class Hidden(NamedTuple):
    """Decoder-only output over the input positions."""

    states: torch.Tensor  # [B, T, H] last hidden states of the input tokens (prompt positions dropped)
    mask: torch.Tensor  # [B, L + T] attention mask over prompt + input
    cache: DynamicCache | None  # keys/values of prompt + input, when asked for


class Outputs(NamedTuple):
    """A training batch's forward pass (teacher forcing): what its loss reads, and MPT's distillation
    (`spot_core.methods.mpt`) besides."""

    logits: torch.Tensor  # [N, V] float32: the logits predicting the batch's N target tokens, example by example
    labels: torch.Tensor  # [N] those target tokens
    example: torch.Tensor  # [N] the example each belongs to
    states: torch.Tensor | None  # [B, T, H] last hidden states of each example's tokens (see `PromptedLM.outputs`)
    mask: torch.Tensor | None  # [B, T] 1 where `states` holds one of the example's tokens, 0 on padding


class PromptedLM(nn.Module):
    """Backbone (frozen) + prompt module (trainable; `SoftPrompt` or any `PromptModule`, see `spot_core.prompts`).

    Encoder-decoder models get the prompt before the encoder input only (as SPoT does);
    decoder-only models get it before the input tokens.

    Args:
        prompt: its `forward()` returns the [L, H] prompt, run once per forward pass of the model.
        prompt_once: decoder-only: run the prompt once per batch (None = wherever it applies; see the module). A
            per-example prompt runs concatenated whatever it says.
    """

    def __init__(self, backbone: Backbone, prompt: PromptModule, prompt_once: bool | None = None):
        super().__init__()
        with torch.no_grad():
            first = prompt()
        check_shape(first, None, backbone.hidden_size, what="the soft prompt", model=backbone.name)
        self.backbone = backbone
        self.model = backbone.model
        self.prompt = prompt
        self.prompt_length = first.shape[0]  # the same on every call (the interface); shares_prompt asks often
        once = resolve_prompt_once(prompt_once, backbone.is_encoder_decoder, backbone.name)
        self.prompt_once = once and not prompt.per_example

    @property
    def is_encoder_decoder(self) -> bool:
        return self.backbone.is_encoder_decoder

    @property
    def shares_prompt(self) -> bool:
        """Whether inputs run on shared prompt states: prompt once is on and the prompt is not empty."""
        return self.prompt_once and self.prompt_length > 0

    @property
    def device(self) -> torch.device:
        """Where the model runs: the device of its input embeddings."""
        return self.model.get_input_embeddings().weight.device

    def embed(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        prompts: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        input_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T] ids -> ([B, L + T, H] embeddings with the prompt in front, [B, L + T] mask).

        A packed batch: example b gets prompts[rows[b]] ([P, L, H] prompts) instead of the model's own; a
        per-example prompt gives each example the prompt it computes from the example's embeddings, over
        `input_mask` ([B, T], default `mask`): a decoder-only training batch also holds the target tokens, which
        the prompt must not see (it is computed from the input alone when the model is evaluated)."""
        embeds = self.model.get_input_embeddings()(input_ids)
        if prompts is not None:
            return prefix(prompts[rows], embeds, mask)
        if not self.prompt.per_example:
            return prefix(self.prompt(), embeds, mask)
        return prefix(self.prompt.for_inputs(embeds, mask if input_mask is None else input_mask), embeds, mask)

    def prompt_states(self, leaves: bool = False, prompts: torch.Tensor | None = None) -> PromptStates:
        """Runs the prompt alone (positions 0..L-1, batch 1) and keeps its keys/values at every layer; or the
        [P, L, H] `prompts` of a packed batch, as a batch of P.

        `leaves`: for several backward passes over one prompt computation (micro-batches): the states are
        detached leaves and `PromptStates.backward()` finishes the job. Otherwise they stay in the graph."""
        prompt = self.prompt()[None] if prompts is None else prompts
        L = prompt.shape[1]
        dtype = self.model.get_input_embeddings().weight.dtype
        cache = DynamicCache()
        positions = torch.arange(L, device=prompt.device)[None].expand(prompt.shape[0], -1)
        self.model.base_model(
            inputs_embeds=prompt.to(dtype), position_ids=positions, past_key_values=cache, use_cache=True
        )
        n = len(cache.layers)
        attached = [layer.keys for layer in cache.layers] + [layer.values for layer in cache.layers]
        if not (leaves and torch.is_grad_enabled() and prompt.requires_grad):
            return PromptStates(L, attached[:n], attached[n:], dtype)
        detached = [t.detach().float().requires_grad_() for t in attached]
        return PromptStates(L, detached[:n], detached[n:], dtype, attached)

    def hidden(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        prompt: PromptStates | torch.Tensor | None = None,
        use_cache: bool = False,
        rows: torch.Tensor | None = None,
        input_mask: torch.Tensor | None = None,
    ) -> Hidden:
        """Decoder-only: the transformer without its LM head over [prompt; input].

        Args:
            input_ids, mask: [B, T] input tokens and their mask (padding left or right, never inside the prompt).
            prompt: prompt-once mode: the prompt's states, when the caller shares them over several calls
                (computed here otherwise). The concatenated path takes a packed batch's [P, L, H] prompts here.
            use_cache: also return the keys/values of prompt + input, to continue from.
            rows: a packed batch: [B] the prompt of each example among `prompt`'s P.
            input_mask: what a per-example prompt reads (`embed`).
        """
        L = self.prompt_length
        if not self.shares_prompt:
            embeds, full_mask = self.embed(input_ids, mask, prompt if rows is not None else None, rows, input_mask)
            out = self.model.base_model(
                inputs_embeds=embeds,
                attention_mask=full_mask,
                position_ids=position_ids(full_mask),
                past_key_values=DynamicCache() if use_cache else None,
                use_cache=use_cache,
            )
            return Hidden(out.last_hidden_state[:, L:], full_mask, out.past_key_values if use_cache else None)
        prompt = prompt if prompt is not None else self.prompt_states()
        if prompt.length != L:
            raise ValueError(f"prompt states of length {prompt.length} given to a model whose prompt has length {L}")
        ones = torch.ones(mask.shape[0], L, dtype=mask.dtype, device=mask.device)
        full_mask = torch.cat([ones, mask], 1)
        out = self.model.base_model(
            input_ids=input_ids,
            attention_mask=full_mask,
            position_ids=position_ids(full_mask)[:, L:],  # the inputs continue after the prompt
            past_key_values=prompt.cache(input_ids.shape[0], rows),
            use_cache=True,
        )
        return Hidden(out.last_hidden_state, full_mask, out.past_key_values if use_cache else None)

    def extend(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: DynamicCache,
        attention_mask: torch.Tensor | dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Decoder-only: more tokens after a cache from `hidden(..., use_cache=True)`; [B, N] -> [B, N, H].

        `attention_mask` is the 2-D [B, cached + N] mask, or prepared 4-D masks (per layer type where the model
        has several) for tokens that do not simply follow each other (a label trie)."""
        return self.model.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, H] hidden states -> [N, V] float32 logits."""
        logits = self.model.get_output_embeddings()(hidden).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def loss(
        self,
        batch: dict[str, torch.Tensor],
        reduction: str = "mean",
        prompt: PromptStates | torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-entropy over target tokens only (teacher forcing): their mean, their sum, or (`"example"`) each
        example's sum, [B].

        `prompt`: prompt-once mode, the prompt's states shared by the micro-batches of one batch; a packed batch's
        prompts (states, or [P, L, H] on the concatenated paths) with `rows`, each example's among them."""
        out = self.outputs(batch, prompt, rows)
        if reduction != "example":
            return F.cross_entropy(out.logits, out.labels, reduction=reduction)
        losses = F.cross_entropy(out.logits, out.labels, reduction="none")
        return torch.zeros(len(batch["input_ids"]), device=losses.device).index_add(0, out.example, losses)

    def outputs(
        self,
        batch: dict[str, torch.Tensor],
        prompt: PromptStates | torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        states: bool = False,
    ) -> Outputs:
        """The logits of a training batch's target tokens and, with `states`, the last hidden states of every
        token of each example (what `loss` reads; `prompt` and `rows` as there).

        The states (prompt positions dropped): decoder-only, the input and target tokens, [B, T, H] over the
        batch's columns; encoder-decoder, the encoder's last states of the input tokens followed by the decoder's
        of the target positions, [B, T_in + S, H]. Either way example b has len(input) + len(target) of them."""
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        if self.is_encoder_decoder:
            embeds, full_mask = self.embed(ids, mask, prompt, rows)  # type: ignore[arg-type]
            out = self.model(
                inputs_embeds=embeds,
                attention_mask=full_mask,
                decoder_input_ids=self.model.prepare_decoder_input_ids_from_labels(labels=labels),
                output_hidden_states=states,
            )
            where = labels != IGNORE
            logits = out.logits[where].float()
            if not states:
                return Outputs(logits, labels[where], where.nonzero()[:, 0], None, None)
            encoded = out.encoder_last_hidden_state[:, self.prompt_length :]
            both = torch.cat([encoded, out.decoder_hidden_states[-1]], 1)
            return Outputs(logits, labels[where], where.nonzero()[:, 0], both, torch.cat([mask, where.long()], 1))
        hidden = self.hidden(ids, mask, prompt, rows=rows, input_mask=mask * (labels == IGNORE)).states
        # Position t predicts token t + 1. The LM head runs only where there is a target token:
        # over a 49K vocabulary it would otherwise be a large share of the step.
        nxt = labels[:, 1:]
        where = nxt != IGNORE
        logits = self.head(hidden[:, :-1][where])
        return Outputs(logits, nxt[where], where.nonzero()[:, 0], hidden if states else None, mask if states else None)

    def logits(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        decoder_input_ids: torch.Tensor | None = None,
        prompts: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ):
        """Full logits, for checks against other implementations (and an encoder-decoder's loss).

        Decoder-only: [B, T, V] over the input positions (prompt positions dropped).
        Encoder-decoder: [B, S, V] over decoder_input_ids; `prompts` and `rows`: a packed batch's.
        """
        if self.is_encoder_decoder:
            embeds, full_mask = self.embed(input_ids, mask, prompts, rows)
            return self.model(
                inputs_embeds=embeds, attention_mask=full_mask, decoder_input_ids=decoder_input_ids
            ).logits
        return self.head(self.hidden(input_ids, mask).states)
