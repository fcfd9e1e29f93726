"""Model tuning's training step against prompt tuning's, side by side, and the memory each holds (issue 28).

Run from the repository root:

    python -m bench.model_step [--models smollm2-135m gemma3-270m] [--batch 4] [--steps 3] [--json out.json]

Per model, on one batch of random token ids at the generic CPU preset's shape (conf/study/generic_cpu.yaml: batch
4 of 64 input tokens, a prompt of 100):
    prompt  the trainer's prompt step: `accumulate_gradients` (prompt once) + Adafactor on the [L, H] prompt
    model   the model-tuning step (`spot_core.trainer.ModelTrainer`'s): no prompt, every weight's gradient, and
            Adafactor with T5's fine-tuning settings (conf/trainer/model_tuning.yaml) over every weight
The two are timed in alternation in one process (the order rotates each step, so machine noise hits both); the
median of `--steps` is reported, and the ratio model / prompt. Peak resident memory of each is measured in a fresh
subprocess over two steps (the peak reset once the model is loaded: loading the GGUF file peaks higher), beside what
`make plan` says a model-tuning cell holds before activations (`spot_core.cost.tuning_memory`: weights, gradients,
Adafactor's state).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from spot_core.backbones import Backbone, load_backbone
from spot_core.cost import tuning_memory
from spot_core.encoding import Codec, Encoded
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt, sampled_vocab
from spot_core.trainer import TrainerConfig, accumulate_gradients, make_optimizer

GIB = 1024**3
MODEL_TUNING = TrainerConfig(lr=1e-3, scale_parameter=True, weight_decay=0.0)  # conf/trainer/model_tuning.yaml


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["smollm2-135m"], help="backbones for load_backbone")
    p.add_argument("--prompt-len", type=int, default=100, help="the prompt step's prompt length L")
    p.add_argument("--batch", type=int, default=4, help="examples per step")
    p.add_argument("--input-len", type=int, default=64, help="input tokens per example")
    p.add_argument("--target-len", type=int, default=2, help="target tokens (+ an end token)")
    p.add_argument("--steps", type=int, default=3, help="timed steps of each (median reported)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--memory-of", choices=["prompt", "model"], help="(internal) one step's peak RSS as JSON")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def batch(backbone: Backbone, args: argparse.Namespace) -> list[Encoded]:
    """`args.batch` examples of random token ids with exact lengths (fixed seed)."""
    tok, gen = backbone.tokenizer, torch.Generator().manual_seed(0)
    vocab = min(len(tok), backbone.model.config.vocab_size)
    ids = lambda n: torch.randint(100, vocab, (n,), generator=gen).tolist()  # noqa: E731
    return [Encoded(ids(args.input_len), ids(args.target_len) + [tok.eos_token_id], "") for _ in range(args.batch)]


def training_step(model: PromptedLM, optimizer: torch.optim.Optimizer, rows: list[Encoded], weights: bool):
    """One training step on `rows` as a closure; `weights`: the backbone's weights get gradients during it."""
    backbone = model.backbone
    codec = Codec(backbone.tokenizer, backbone.is_encoder_decoder)

    def step() -> None:
        backbone.model.requires_grad_(weights)
        accumulate_gradients(model, rows, codec, len(rows))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        backbone.model.requires_grad_(False)

    return step


def prompt_step(backbone: Backbone, rows: list[Encoded], args: argparse.Namespace):
    """The prompt-tuning step: frozen weights, a sampled-vocabulary prompt, Adafactor on it."""
    init = sampled_vocab(backbone.embeddings, args.prompt_len, torch.Generator().manual_seed(0))
    model = PromptedLM(backbone, SoftPrompt(init)).train()
    return training_step(model, make_optimizer(TrainerConfig(), model.prompt.parameters()), rows, weights=False)


def model_step(backbone: Backbone, rows: list[Encoded]):
    """The model-tuning step: no prompt, every weight trained by T5's Adafactor."""
    model = PromptedLM(backbone, SoftPrompt(torch.zeros(0, backbone.hidden_size))).train()
    return training_step(model, make_optimizer(MODEL_TUNING, backbone.model.parameters()), rows, weights=True)


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in KiB: VmRSS now, VmHWM its peak."""
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field + ":"))
    return int(line.split()[1])


def peak_rss(model: str, kind: str, args: argparse.Namespace) -> dict[str, float]:
    """GiB of resident memory of a fresh process that loads `model` (`loaded_rss_gib`: after loading and building
    the step) and its peak over two `kind` steps (`peak_rss_gib`; the peak is reset after loading)."""
    command = [sys.executable, "-m", "bench.model_step", "--models", model, "--memory-of", kind,
               "--batch", str(args.batch), "--input-len", str(args.input_len), "--prompt-len", str(args.prompt_len),
               "--threads", str(args.threads)]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(name: str, args: argparse.Namespace) -> dict:
    backbone = load_backbone(name)
    rows = batch(backbone, args)
    steps = {"prompt": prompt_step(backbone, rows, args), "model": model_step(backbone, rows)}
    for step in steps.values():  # warm-up: allocations, Adafactor's state
        step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    order = list(steps)
    for i in range(args.steps):
        for kind in order[i % 2 :] + order[: i % 2]:
            times[kind].append(timed(steps[kind]))
    prompt_s, model_s = (statistics.median(times[k]) for k in ("prompt", "model"))
    held = tuning_memory(backbone.model.config, "float32")
    figures = {
        "model": name,
        "params": sum(p.numel() for p in backbone.model.parameters()),
        "batch": args.batch,
        "input_tokens": args.input_len,
        "prompt_length": args.prompt_len,
        "threads": torch.get_num_threads(),
        "prompt_step_s": float(f"{prompt_s:.4g}"),
        "model_step_s": float(f"{model_s:.4g}"),
        "model_over_prompt": round(model_s / prompt_s, 2),
        "plan_held_gib": round(held.total / GIB, 3),
    }
    if not args.no_memory:
        del steps, backbone
        for kind in ("prompt", "model"):
            rss = peak_rss(name, kind, args)
            figures[f"{kind}_loaded_rss_gib"] = round(rss["loaded_rss_gib"], 2)
            figures[f"{kind}_peak_rss_gib"] = round(rss["peak_rss_gib"], 2)
        figures["model_minus_prompt_rss_gib"] = round(figures["model_peak_rss_gib"] - figures["prompt_peak_rss_gib"], 2)
    return figures


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_of:
        backbone = load_backbone(args.models[0])
        rows = batch(backbone, args)
        step = prompt_step(backbone, rows, args) if args.memory_of == "prompt" else model_step(backbone, rows)
        loaded = status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here: loading the GGUF file peaks higher
        step()
        step()
        print(json.dumps({"peak_rss_gib": status_kib("VmHWM") / 2**20, "loaded_rss_gib": loaded / 2**20}))
        return
    results = [measure(name, args) for name in args.models]
    for r in results:
        print(f"{r['model']} ({r['params'] / 1e6:.0f}M weights, batch {r['batch']} x {r['input_tokens']} tokens, "
              f"{r['threads']} threads): prompt step {r['prompt_step_s']:.2f} s, model-tuning step "
              f"{r['model_step_s']:.2f} s ({r['model_over_prompt']:.2f}x)")  # fmt: skip
        if "model_peak_rss_gib" in r:
            print(f"  peak RSS over the steps (the model loaded: {r['prompt_loaded_rss_gib']:.2f} GiB): prompt step "
                  f"{r['prompt_peak_rss_gib']:.2f} GiB, model-tuning step "
                  f"{r['model_peak_rss_gib']:.2f} GiB (+{r['model_minus_prompt_rss_gib']:.2f}); make plan's held "
                  f"memory of a model-tuning cell: {r['plan_held_gib']:.2f} GiB before activations")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
