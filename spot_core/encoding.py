"""Text to token ids, batches, and the deterministic order in which training sees examples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from spot_core.errors import ConfigError

IGNORE = -100


@dataclass(frozen=True)
class Codec:
    """Tokenizes inputs and targets the same way for training, scoring and class-label init.

    Encoder-decoder (T5): inputs and targets are tokenized with the tokenizer's own special tokens
    (T5 appends </s>). Decoder-only: the input starts with the tokenizer's <bos> where it adds one (Gemma;
    SmolLM2's adds none); the target is " " + text followed by EOS, so label words are single word-initial
    tokens where the vocabulary has them (" positive").
    """

    tokenizer: PreTrainedTokenizerBase
    is_encoder_decoder: bool
    max_input_tokens: int = 256
    max_target_tokens: int = 32

    def __post_init__(self):
        if self.max_input_tokens < 1 or self.max_target_tokens < 1:
            raise ConfigError(
                "model.max_input_tokens and model.max_target_tokens must be >= 1, "
                f"got {self.max_input_tokens}, {self.max_target_tokens}"
            )

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def encode_input(self, text: str) -> list[int]:
        """The input's ids (`input_ids`), cut to `max_input_tokens` (an encoder input keeps its end token)."""
        return _truncate(self.input_ids(text), self.max_input_tokens, keep_last=self.is_encoder_decoder)

    def input_ids(self, text: str) -> list[int]:
        """The input's ids, however many."""
        # The tokenizer's own special tokens. An encoder input keeps its closing </s>. A decoder-only input
        # keeps a <bos> its tokenizer starts text with (Gemma: it follows the prompt, where the model expects
        # text to begin; Gemma 3's loss on plain text is 6.2 without it, 1.8 with it) and no end token.
        ids = self.tokenizer(text, add_special_tokens=True).input_ids
        if not self.is_encoder_decoder and len(ids) > 1 and ids[-1] == self.tokenizer.eos_token_id:
            ids = ids[:-1]
        return ids

    def encode_target(self, text: str) -> list[int]:
        if self.is_encoder_decoder:
            ids = self.tokenizer(text, add_special_tokens=True).input_ids
        else:
            ids = self.tokenizer(" " + text, add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id]
        return _truncate(ids, self.max_target_tokens, keep_last=True)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    def label_word_ids(self, word: str) -> list[int]:
        """A label word's subword ids without the end token (for class-label init)."""
        ids = self.encode_target(word)
        return ids[:-1] if ids and ids[-1] == self.tokenizer.eos_token_id else ids


def _truncate(ids: list[int], limit: int, keep_last: bool) -> list[int]:
    if len(ids) <= limit:
        return ids
    return ids[: limit - 1] + ids[-1:] if keep_last else ids[:limit]


@dataclass
class Encoded:
    """One example: token ids, the raw target text, and what its metrics compare predictions with
    (the target itself, or e.g. all gold answers of a QA example)."""

    input_ids: list[int]
    target_ids: list[int]
    target: str
    reference: Any = None

    def __post_init__(self):
        if self.reference is None:
            self.reference = self.target


def encode_examples(codec: Codec, examples: Sequence[dict]) -> list[Encoded]:
    """[{"inputs", "targets", optional "references"}] -> [Encoded]."""
    return [
        Encoded(codec.encode_input(e["inputs"]), codec.encode_target(e["targets"]), e["targets"], e.get("references"))
        for e in examples
    ]


def pad(rows: Sequence[Sequence[int]], value: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pads id lists to [B, T]; returns (ids, mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, sl] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def collate(batch: Sequence[Encoded], codec: Codec) -> dict[str, torch.Tensor]:
    """Training batch.

    Encoder-decoder: input_ids/attention_mask [B, T] for the encoder, labels [B, S].
    Decoder-only: input_ids/attention_mask [B, T] = input then target, right-padded;
    labels [B, T] hold the target ids at target positions and IGNORE elsewhere.
    """
    if codec.is_encoder_decoder:
        ids, mask = pad([e.input_ids for e in batch], codec.pad_id)
        labels, lmask = pad([e.target_ids for e in batch], IGNORE)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
    ids, mask = pad([e.input_ids + e.target_ids for e in batch], codec.pad_id)
    labels = torch.full_like(ids, IGNORE)
    for i, e in enumerate(batch):
        start = len(e.input_ids)
        labels[i, start : start + len(e.target_ids)] = torch.as_tensor(e.target_ids)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A collated batch on `device`; to a GPU through pinned host memory, so that the copy does not wait for the
    device (it queues behind the work already there)."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def length(example: Encoded) -> int:
    """Its tokens, input and target: what sorting a batch by length sorts on, so that micro-batches pad little."""
    return len(example.input_ids) + len(example.target_ids)


def batch_indices(step: int, batch_size: int, num_examples: int, seed: int) -> list[int]:
    """Example indices of training step `step` (0-based).

    The stream is one seeded permutation per epoch, concatenated; it depends only on
    (step, seed), so a resumed run sees exactly the batches an uninterrupted one would.
    """
    if num_examples <= 0:
        raise ValueError("cannot train on an empty dataset")
    start, out = step * batch_size, []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_examples)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(num_examples, generator=gen)
        out.extend(perm[offset : offset + batch_size - len(out)].tolist())
    return out
