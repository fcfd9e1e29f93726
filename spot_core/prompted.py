"""A frozen backbone with a soft prompt in front of its (encoder) input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spot_core.backbones import Backbone
from spot_core.data import IGNORE
from spot_core.prompts import SoftPrompt, check_shape, prefix


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """[B, T] positions that skip padding (left or right): cumsum(mask) - 1, clamped at 0."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class PromptedLM(nn.Module):
    """Backbone (frozen) + SoftPrompt (trainable).

    Encoder-decoder models get the prompt before the encoder input only (as SPoT does);
    decoder-only models get it before the input tokens.
    """

    def __init__(self, backbone: Backbone, prompt: SoftPrompt):
        super().__init__()
        check_shape(prompt.weight, None, backbone.hidden_size, what="the soft prompt", model=backbone.name)
        self.backbone = backbone
        self.model = backbone.model
        self.prompt = prompt

    @property
    def is_encoder_decoder(self) -> bool:
        return self.backbone.is_encoder_decoder

    def embed(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T] ids -> ([B, L + T, H] embeddings with the prompt in front, [B, L + T] mask)."""
        embeds = self.model.get_input_embeddings()(input_ids)
        return prefix(self.prompt.weight, embeds, mask)

    def body(self, input_ids: torch.Tensor, mask: torch.Tensor, **kwargs):
        """Decoder-only: the transformer without its LM head over prompt + input.

        Returns the base model's output; last_hidden_state is [B, L + T, H].
        """
        embeds, full_mask = self.embed(input_ids, mask)
        return self.model.base_model(
            inputs_embeds=embeds, attention_mask=full_mask, position_ids=position_ids(full_mask), **kwargs
        ), full_mask

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, H] hidden states -> [N, V] float32 logits."""
        logits = self.model.get_output_embeddings()(hidden).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def loss(self, batch: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy over target tokens only (teacher forcing): their mean, or their sum."""
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        if self.is_encoder_decoder:
            dec_ids = self.model.prepare_decoder_input_ids_from_labels(labels=labels)
            logits = self.logits(ids, mask, decoder_input_ids=dec_ids)
            return F.cross_entropy(
                logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction=reduction
            )
        out, _ = self.body(ids, mask, use_cache=False)
        hidden = out.last_hidden_state[:, self.prompt.length :]
        # Position t predicts token t + 1. The LM head runs only where there is a target token:
        # over a 49K vocabulary it would otherwise be a large share of the step.
        nxt = labels[:, 1:]
        where = nxt != IGNORE
        return F.cross_entropy(self.head(hidden[:, :-1][where]), nxt[where], reduction=reduction)

    def logits(self, input_ids: torch.Tensor, mask: torch.Tensor, decoder_input_ids: torch.Tensor | None = None):
        """Full logits, for checks against other implementations.

        Decoder-only: [B, T, V] over the input positions (prompt positions dropped).
        Encoder-decoder: [B, S, V] over decoder_input_ids.
        """
        if self.is_encoder_decoder:
            embeds, full_mask = self.embed(input_ids, mask)
            return self.model(
                inputs_embeds=embeds, attention_mask=full_mask, decoder_input_ids=decoder_input_ids
            ).logits
        out, _ = self.body(input_ids, mask, use_cache=False)
        return self.head(out.last_hidden_state[:, self.prompt.length :])
