"""The workload of `bench.packed`: K cells (sampled-vocabulary prompts, Adafactor optimizers, random examples) on
one backbone at a shape, each step packed (`spot_core.packing`) or the Trainer's lone step; the shapes it runs at and
the models it builds."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import torch

from spot_core import cost
from spot_core.backbones import Backbone, load_backbone
from spot_core.encoding import Codec, Encoded
from spot_core.packing import packed_gradients
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt, sampled_vocab
from spot_core.trainer import TrainerConfig, accumulate_gradients, make_optimizer


@dataclass(frozen=True)
class Shape:
    prompt_len: int
    batch: int
    input_len: int
    target_len: int  # + an end token


DEMO, SPOT, TINY = Shape(100, 8, 64, 2), Shape(100, 32, 512, 2), Shape(4, 2, 8, 2)
STUDY_NAMES = {"t5-base": "google/t5-base-lm-adapt"}  # the name a study gives the model (conf/model/)
TINY_OF = {"smollm2-135m": "tiny-llama", "gemma3-270m": "tiny-gemma3", "t5-base": "tiny-t5"}  # for --dry-run


def shaped_backbone(name: str, dtype: str, device: str) -> Backbone:
    """`name` built from its config with random weights on `device` (`spot_core.cost`: no weights travel to a GPU);
    a tiny model as the project builds it."""
    if name in TINY_OF.values():
        return load_backbone(name, dtype=dtype, device=device)
    return cost.random_backbone(name, cost.architecture(STUDY_NAMES.get(name, name)), dtype, device)


class Cells:
    """K cells on one backbone: their prompts (sampled vocabulary), Adafactor optimizers and random examples."""

    def __init__(self, backbone: Backbone, k: int, shape: Shape, lr: float, seed: int = 0):
        device = backbone.model.get_input_embeddings().weight.device
        emb = backbone.embeddings.detach().float().cpu()
        vocab = backbone.model.config.vocab_size
        self.models, self.optimizers, self.pools, self.shape = [], [], [], shape
        for n in range(seed, seed + k):
            init = sampled_vocab(emb, shape.prompt_len, torch.Generator().manual_seed(n))
            model = PromptedLM(backbone, SoftPrompt(init)).to(device).train()
            self.models.append(model)
            self.optimizers.append(make_optimizer(TrainerConfig(lr=lr), model.prompt.parameters()))
            gen = torch.Generator().manual_seed(1000 + n)
            ids = torch.randint(100, vocab, (2 * shape.batch, shape.input_len + shape.target_len), generator=gen)
            cut = shape.input_len
            eos = [backbone.tokenizer.eos_token_id]
            self.pools.append([Encoded(r[:cut], r[cut:] + eos, "") for r in ids.tolist()])  # two batches, in turn
        self.codec = Codec(backbone.tokenizer, backbone.is_encoder_decoder)

    def step(self, step: int, chunk: int | None = None) -> list[torch.Tensor]:
        """One training step of every cell: packed (more than one cell) or the lone Trainer step."""
        b = self.shape.batch
        batches = [pool[(step % 2) * b : (step % 2 + 1) * b] for pool in self.pools]
        if len(self.models) == 1:
            losses = [accumulate_gradients(self.models[0], batches[0], self.codec, b)]
        else:
            losses = packed_gradients(self.models, batches, self.codec, chunk or b * len(self.models))
        for opt in self.optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return losses


def compile_backbone(backbone: Backbone) -> None:
    """torch.compile of what PromptedLM calls: the transformer (decoder-only; the LM head runs apart, at the target
    positions) or the whole encoder-decoder."""
    model = backbone.model
    (model if backbone.is_encoder_decoder else model.base_model).compile()


def write(args: argparse.Namespace, report: dict) -> None:
    """The report so far into `--json` (rewritten after every row: a run cut short keeps what it measured)."""
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
