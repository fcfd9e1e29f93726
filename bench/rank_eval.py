"""Rank classification: prompt once + label trie against the repeated-rows method and one forward per label.

Run from the repository root:

    python -m bench.rank_eval [--model smollm2-135m] [--examples 16] [--tasks stsb_v1,sst2_v1] [--json out.json]

For each task, on the same inputs (real validation inputs from the offline data mirror when it is there, else
random token ids) and the same prompt:
    spot      `label_scores` as an evaluation runs it: the prompt's states computed once for every batch, each
              input once on them, the labels as a prefix tree (STS-B's 26 labels "0.0" ... "5.0" share prefixes)
    shared    the method before (`label_scores_repeated` with `prompt_once=False`): prompt + input computed once
              per example, shared across the labels, one row per (example, label)
    naive     `label_scores_naive`: one full forward per (example, label)
Each method runs `--warmup` untimed rounds, then `--repeats` timed rounds that rotate which method goes first; the
figures are the medians of the rounds (`rounds_s` keeps them all). The script reports how often the three pick the
same label, the largest score difference and the speed-ups.
The JSON's top-level `speedup_vs_shared_labels` and `speedup_vs_naive` are the smallest over the tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from spot_core.backbones import Backbone, load_backbone
from spot_core.encoding import Codec
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt, sampled_vocab
from spot_core.scoring import label_scores, label_scores_naive, label_scores_repeated
from spot_core.tasks import get_task

TARGET_SPEEDUP = 2.0  # spot against the shared-labels method, on every task


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="backbone for load_backbone (or tiny-llama)")
    p.add_argument("--tasks", default="stsb_v1,sst2_v1", help="tasks with label words, comma-separated")
    p.add_argument("--examples", type=int, default=16, help="number of inputs N per task")
    p.add_argument("--batch", type=int, default=8, help="inputs per label_scores call")
    p.add_argument("--prompt-len", type=int, default=100, help="soft prompt length L")
    p.add_argument("--data-dir", default="../shared/data", help="offline data mirror (else synthetic)")
    p.add_argument("--input-len", type=int, default=40, help="tokens per synthetic input")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds of every method before timing")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds; each rotates which method goes first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def load_inputs(task: str, backbone: Backbone, codec: Codec, args: argparse.Namespace) -> tuple[list[list[int]], str]:
    """N encoded inputs and where they came from ("<task> validation" or "synthetic")."""
    if Path(args.data_dir).is_dir():
        from spot_core.tasks import TaskDataError, load_examples

        try:
            rows = load_examples(get_task(task), "validation", args.data_dir, limit=args.examples)
            if len(rows) == args.examples:
                return [codec.encode_input(r["inputs"]) for r in rows], f"{task} validation"
        except (OSError, TaskDataError):
            pass
    vocab = min(len(backbone.tokenizer), backbone.model.config.vocab_size)
    gen = torch.Generator().manual_seed(args.seed)
    rows = [torch.randint(100, vocab, (args.input_len,), generator=gen).tolist() for _ in range(args.examples)]
    return rows, "synthetic"


def timed(fn) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def time_rounds(methods: dict, warmup: int, repeats: int) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """Runs every method `warmup + repeats` times, rotating which goes first in each round (a machine that slows
    down or speeds up over the run weighs on all of them alike); returns each one's scores and timed rounds."""
    names, outputs = list(methods), {}
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + max(repeats, 1)):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            outputs[name], seconds = timed(methods[name])
            if round_ >= warmup:
                times[name].append(seconds)
    return outputs, times


def bench_task(task: str, fast: PromptedLM, reference: PromptedLM, codec: Codec, args: argparse.Namespace) -> dict:
    """The three methods on one task's labels; their times, agreement and speed-ups."""
    inputs, source = load_inputs(task, fast.backbone, codec, args)
    labels = [codec.encode_target(w) for w in get_task(task).label_words]
    chunks = [inputs[i : i + args.batch] for i in range(0, len(inputs), args.batch)]

    def spot() -> torch.Tensor:
        with torch.no_grad():
            prompt = fast.prompt_states()  # once per evaluation, as `evaluation.predict` does
        return torch.cat([label_scores(fast, chunk, labels, prompt).cpu() for chunk in chunks])

    def shared() -> torch.Tensor:
        return torch.cat([label_scores_repeated(reference, chunk, labels).cpu() for chunk in chunks])

    methods = {"spot": spot, "shared_labels": shared, "naive": lambda: label_scores_naive(reference, inputs, labels)}
    outputs, times = time_rounds(methods, args.warmup, args.repeats)
    ours, theirs, naive = outputs["spot"], outputs["shared_labels"], outputs["naive"]
    t_spot, t_shared, t_naive = (statistics.median(times[name]) for name in methods)  # medians of the rounds
    res = {
        "inputs": source,
        "mean_input_tokens": sum(map(len, inputs)) / len(inputs),
        "num_labels": len(labels),
        "label_tokens": [len(lab) for lab in labels],
        "spot_s": t_spot,
        "shared_labels_s": t_shared,
        "naive_s": t_naive,
        "rounds_s": times,  # every timed round of each method (the figures above are their medians)
        "speedup_vs_shared_labels": t_shared / t_spot,
        "speedup_vs_naive": t_naive / t_spot,
        "argmax_agree_shared": int((ours.argmax(-1) == theirs.argmax(-1)).sum()),
        "argmax_agree_naive": int((ours.argmax(-1) == naive.argmax(-1)).sum()),
        "argmax_total": len(inputs),
        "max_abs_score_diff_naive": float((ours - naive).abs().max()),
    }
    print(
        f"{task}: N={len(inputs)} ({source}, mean {res['mean_input_tokens']:.1f} tokens)  K={len(labels)} labels "
        f"({min(res['label_tokens'])}-{max(res['label_tokens'])} target tokens)\n"
        f"  medians of {len(times['spot'])} rounds: spot {t_spot:.2f} s  shared labels {t_shared:.2f} s  "
        f"naive {t_naive:.2f} s  "
        f"speed-up vs shared {res['speedup_vs_shared_labels']:.2f}x (target >= {TARGET_SPEEDUP:.0f}x), "
        f"vs naive {res['speedup_vs_naive']:.1f}x\n"
        f"  argmax agree: {res['argmax_agree_shared']}/{len(inputs)} with shared, "
        f"{res['argmax_agree_naive']}/{len(inputs)} with naive; "
        f"max |spot - naive| {res['max_abs_score_diff_naive']:.1e}"
    )
    return res


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark, prints a table and returns the figures."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    backbone = load_backbone(args.model)
    codec = Codec(backbone.tokenizer, is_encoder_decoder=backbone.is_encoder_decoder)
    prompt = SoftPrompt(sampled_vocab(backbone.embeddings, args.prompt_len, torch.Generator().manual_seed(args.seed)))
    fast = PromptedLM(backbone, prompt, prompt_once=True).eval()
    reference = PromptedLM(backbone, prompt, prompt_once=False).eval()
    print(f"model {args.model}  L={args.prompt_len}  batch={args.batch}  threads={torch.get_num_threads()}")
    tasks = {task: bench_task(task, fast, reference, codec, args) for task in args.tasks.split(",")}
    res = {
        "config": vars(args),
        "threads": torch.get_num_threads(),
        "tasks": tasks,
        "speedup_vs_shared_labels": min(t["speedup_vs_shared_labels"] for t in tasks.values()),
        "speedup_vs_naive": min(t["speedup_vs_naive"] for t in tasks.values()),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
