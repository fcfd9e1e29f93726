"""What ATTEMPT's and MPT's training steps cost beside SPoT's, on one backbone, in one process.

Run from the repository root:

    python -m bench.methods [--model smollm2-135m] [--steps 5] [--json out.json]

Five steps on the same batch, timed in alternation (the order rotates each round, so machine noise hits all five):
    spot          SPoT's step: a [L, H] soft prompt, prompt once (decoder-only), Adafactor
    spot_full     the same on the concatenated path (the prompt before every example): what ATTEMPT must run
    attempt       ATTEMPT's step: K frozen source prompts, the target prompt and the attention, the instance prompt
                  computed per example, so on the concatenated path
    mpt           MPT's target step: the shared prompt times rank-r factors (one prompt for the batch: prompt once)
    mpt_source    MPT's source step: the batch split over K tasks, each example on its own task's prompt (the K
                  prompts' states computed once, as a pack does)
Printed as JSON: seconds per step (median) and the ratios to `spot`; also each method's trainable parameters.
Decoder-only only (the ratio that matters: on an encoder-decoder model every method runs the prompt per example).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench.train_step import make_batch
from spot_core.backbones import load_backbone
from spot_core.encoding import Codec
from spot_core.methods.attempt import AttentionPrompt
from spot_core.packing import row_gradients
from spot_core.prompted import PromptedLM
from spot_core.prompts import FactoredPrompt, SoftPrompt, sampled_vocab, trainable_parameters
from spot_core.trainer import TrainerConfig, accumulate_gradients, make_optimizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="a decoder-only backbone for load_backbone")
    p.add_argument("--prompt-len", type=int, default=100)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--target-len", type=int, default=2)
    p.add_argument("--sources", type=int, default=2, help="K: source prompts ATTEMPT mixes, tasks MPT shares over")
    p.add_argument("--attention-size", type=int, default=100)
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    backbone = load_backbone(args.model)
    if backbone.is_encoder_decoder:
        raise SystemExit("bench.methods times decoder-only backbones (see its docstring)")
    gen = torch.Generator().manual_seed(args.seed)
    emb = backbone.embeddings.detach().float()
    prompts = [sampled_vocab(emb, args.prompt_len, gen) for _ in range(args.sources + 1)]
    batch = make_batch(backbone, args)
    codec = Codec(backbone.tokenizer, False, args.input_len, args.target_len + 1)
    attention = AttentionPrompt(torch.stack(prompts[1:]), torch.zeros_like(prompts[0]), args.attention_size,
                                backbone.hidden_size**0.5, gen)  # fmt: skip
    modules = {
        "spot": (SoftPrompt(prompts[0]), None),
        "spot_full": (SoftPrompt(prompts[0]), False),
        "attempt": (attention, None),
        "mpt": (FactoredPrompt(prompts[0], rank=args.rank), None),
        "mpt_source": (FactoredPrompt(prompts[0], tasks=args.sources, rank=args.rank, generator=gen), None),
    }
    models = {name: PromptedLM(backbone, module, once) for name, (module, once) in modules.items()}
    config = TrainerConfig(lr=0.01)
    optimizers = {name: make_optimizer(config, m.prompt.parameters()) for name, m in models.items()}
    rows = [i % args.sources for i in range(len(batch))]

    def step(name: str) -> float:
        model, opt = models[name], optimizers[name]
        start = time.perf_counter()
        if name == "mpt_source":
            task_prompts = model.prompt.task_prompts()
            weight = torch.full((args.sources,), 1.0 / sum(len(e.target_ids) for e in batch))
            row_gradients(model, task_prompts, list(zip(rows, batch, strict=True)), weight, codec, len(batch))
        else:
            accumulate_gradients(model, batch, codec, len(batch))
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    names = list(models)
    for _ in range(args.warmup):
        for name in names:
            step(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.steps):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(step(name))
    seconds = {name: statistics.median(t) for name, t in times.items()}
    out = {
        "model": args.model,
        "shape": {"prompt": args.prompt_len, "batch": args.batch, "input": args.input_len, "sources": args.sources},
        "threads": args.threads,
        "seconds_per_step": seconds,
        "ratio_to_spot": {name: s / seconds["spot"] for name, s in seconds.items()},
        "trainable_params": {name: trainable_parameters(m.prompt) for name, m in models.items()},
        "attempt_vs_concatenated_spot": seconds["attempt"] / seconds["spot_full"],
    }
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
