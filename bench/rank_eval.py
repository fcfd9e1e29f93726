"""Rank classification over 26 labels: cached `label_scores` against `label_scores_naive`.

Run from the repository root:

    python -m bench.rank_eval [--model smollm2-135m] [--examples 16] [--json out.json]

The task is STS-B as a 26-way classification (labels "0.0", "0.2", ..., "5.0"). Inputs are real
STS-B validation inputs from the offline data mirror when it is there, else random token ids.
Both scorers run on the same prompted model; the script checks they pick the same label and
reports the largest score difference and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from spot_core.backbones import Backbone, load_backbone
from spot_core.data import Codec
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt, sampled_vocab
from spot_core.scoring import label_scores, label_scores_naive
from spot_core.tasks.glue import STSB_LABELS

LABELS = STSB_LABELS
TASK = "stsb_v1"
TARGET_SPEEDUP = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="backbone for load_backbone (or tiny-llama)")
    p.add_argument("--examples", type=int, default=16, help="number of inputs N")
    p.add_argument("--batch", type=int, default=8, help="inputs per label_scores call")
    p.add_argument("--prompt-len", type=int, default=100, help="soft prompt length L")
    p.add_argument("--data-dir", default="../shared/data", help="offline data mirror (else synthetic)")
    p.add_argument("--input-len", type=int, default=40, help="tokens per synthetic input")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def load_inputs(backbone: Backbone, codec: Codec, args: argparse.Namespace) -> tuple[list[list[int]], str]:
    """N encoded inputs and where they came from ("stsb_v1 validation" or "synthetic")."""
    if Path(args.data_dir).is_dir():
        from spot_core.tasks import TaskDataError, get_task, load_examples

        try:
            rows = load_examples(get_task(TASK), "validation", args.data_dir, limit=args.examples)
            if len(rows) == args.examples:
                return [codec.encode_input(r["inputs"]) for r in rows], f"{TASK} validation"
        except (OSError, TaskDataError):
            pass
    vocab = min(len(backbone.tokenizer), backbone.model.config.vocab_size)
    gen = torch.Generator().manual_seed(args.seed)
    n, length = args.examples, args.input_len
    rows = [torch.randint(100, vocab, (length,), generator=gen).tolist() for _ in range(n)]
    return rows, "synthetic"


def batched_scores(model: PromptedLM, inputs: list[list[int]], labels: list[list[int]], batch: int) -> torch.Tensor:
    """label_scores over `inputs` in chunks of `batch`; [N, K] on the CPU."""
    chunks = range(0, len(inputs), batch)
    return torch.cat([label_scores(model, inputs[i : i + batch], labels).cpu() for i in chunks])


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark, prints a table and returns the figures."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    backbone = load_backbone(args.model)
    codec = Codec(backbone.tokenizer, is_encoder_decoder=backbone.is_encoder_decoder)
    init = sampled_vocab(backbone.embeddings, args.prompt_len, torch.Generator().manual_seed(args.seed))
    model = PromptedLM(backbone, SoftPrompt(init)).eval()
    inputs, source = load_inputs(backbone, codec, args)
    labels = [codec.encode_target(w) for w in LABELS]

    # Warm-up (first-call allocations, kernel selection) on one input for both.
    label_scores(model, inputs[:1], labels[:2])
    label_scores_naive(model, inputs[:1], labels[:1])

    t0 = time.perf_counter()
    fast = batched_scores(model, inputs, labels, args.batch)
    t_spot = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = label_scores_naive(model, inputs, labels)
    t_naive = time.perf_counter() - t0

    agree = int((fast.argmax(-1) == naive.argmax(-1)).sum())
    max_diff = float((fast - naive).abs().max())
    res = {
        "config": vars(args),
        "threads": torch.get_num_threads(),
        "inputs": source,
        "mean_input_tokens": sum(map(len, inputs)) / len(inputs),
        "num_labels": len(labels),
        "label_tokens": [len(lab) for lab in labels],
        "spot_s": t_spot,
        "naive_s": t_naive,
        "speedup_naive_over_spot": t_naive / t_spot,
        "argmax_agree": agree,
        "argmax_total": len(inputs),
        "max_abs_score_diff": max_diff,
    }
    print(
        f"model {args.model}  N={len(inputs)} ({source}, mean {res['mean_input_tokens']:.1f} tokens)  "
        f"K={len(labels)} labels ({min(res['label_tokens'])}-{max(res['label_tokens'])} target tokens)  "
        f"L={args.prompt_len}  batch={args.batch}  threads={res['threads']}"
    )
    print(f"argmax agree: {agree}/{len(inputs)}  max abs score difference: {max_diff:.2e}")
    print(
        f"spot label_scores: {t_spot:.2f} s ({t_spot / len(inputs):.3f} s/example)  "
        f"naive: {t_naive:.2f} s ({t_naive / len(inputs):.3f} s/example)  "
        f"ratio naive/spot: {res['speedup_naive_over_spot']:.1f}x (target >= {TARGET_SPEEDUP:.0f}x)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
