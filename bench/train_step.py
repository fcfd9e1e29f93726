"""Prompt-tuning training step: prompt once against the concatenated path and PEFT, an arithmetic floor, memory.

Run from the repository root:

    python -m bench.train_step [--model smollm2-135m] [--steps 5] [--json out.json] [--shapes 20x32,100x32]

Three steps on the same batch, timed in alternation in one process (the order rotates each step, so machine noise
hits all three):
    spot   the trainer's step: `accumulate_gradients` (prompt once: the prompt's states computed once per batch,
           the examples on them) + Adafactor on the [L, H] prompt
    full   the same with `prompt_once=False`: the prompt prepended to every example (the reference path)
    peft   `peft.get_peft_model(..., PromptTuningConfig)` on a second copy of the backbone, same batch, Adafactor
The floor counts the FLOPs the prompt-once step must do (a frozen forward and an input-gradient backward over the
prompt once and the examples' tokens, attention over prompt + input, the LM head at the target positions) and
divides by the machine's best measured fp32 matmul rate. Peak RSS is measured in a fresh subprocess (spot, one
pass). `--shapes LxB,...` repeats the timing at other prompt lengths and batch sizes (no PEFT copy reloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from spot_core.backbones import Backbone, load_backbone
from spot_core.encoding import Codec, Encoded, collate
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt, sampled_vocab
from spot_core.trainer import TrainerConfig, accumulate_gradients, make_optimizer

TARGET_RATIO_PEFT = 0.40
TARGET_RATIO_FLOOR = 1.5
TARGET_RSS_GB = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="backbone for load_backbone (or tiny-llama)")
    p.add_argument("--prompt-len", type=int, default=100, help="soft prompt length L")
    p.add_argument("--batch", type=int, default=8, help="batch size B")
    p.add_argument("--micro-batch", type=int, default=None, help="spot: backpropagate B in chunks of this size")
    p.add_argument("--input-len", type=int, default=64, help="input tokens per example")
    p.add_argument("--target-len", type=int, default=2, help="target tokens (+ an end token)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--matmul-repeats", type=int, default=5, help="best-of-N for the matmul rate")
    p.add_argument("--no-peft", action="store_true", help="skip the PEFT comparison")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    p.add_argument("--memory-only", action="store_true", help="(internal) spot steps, print peak RSS JSON")
    p.add_argument("--shapes", default="", help="more prompt-length x batch shapes to time, e.g. 20x32,100x32")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def make_batch(backbone: Backbone, args: argparse.Namespace) -> list[Encoded]:
    """A decoder-only training batch of random token ids in [100, vocab) with exact lengths.

    Returns:
        B examples of input_len input tokens and target_len + 1 target tokens.
    """
    tok = backbone.tokenizer
    vocab = min(len(tok), backbone.model.config.vocab_size)
    gen = torch.Generator().manual_seed(args.seed)
    rows = []
    for _ in range(args.batch):
        inp = torch.randint(100, vocab, (args.input_len,), generator=gen).tolist()
        tgt = torch.randint(100, vocab, (args.target_len,), generator=gen).tolist() + [tok.eos_token_id]
        rows.append(Encoded(inp, tgt, ""))
    return rows


def spot_model(
    backbone: Backbone, args: argparse.Namespace, prompt_once: bool = True
) -> tuple[PromptedLM, torch.optim.Optimizer]:
    """PromptedLM with a sampled-vocabulary prompt, in train mode, and its Adafactor."""
    init = sampled_vocab(backbone.embeddings, args.prompt_len, torch.Generator().manual_seed(args.seed))
    model = PromptedLM(backbone, SoftPrompt(init), prompt_once).train()
    return model, make_optimizer(TrainerConfig(), model.prompt.parameters())


def peft_model(backbone: Backbone, args: argparse.Namespace):
    """PEFT prompt tuning wrapped around `backbone.model`, in train mode, and its Adafactor."""
    from peft import PromptTuningConfig, get_peft_model

    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=args.prompt_len)
    model = get_peft_model(backbone.model, config)
    model.train()
    return model, make_optimizer(TrainerConfig(), [p for p in model.parameters() if p.requires_grad])


def spot_backward(model: PromptedLM, rows: list[Encoded], args: argparse.Namespace):
    """The trainer's forward + backward: `accumulate_gradients` over micro-batches."""
    codec = Codec(model.backbone.tokenizer, is_encoder_decoder=False)
    return lambda: accumulate_gradients(model, rows, codec, args.micro_batch or args.batch)


def timed_step(backward_fn, opt: torch.optim.Optimizer) -> float:
    """One training step (forward + backward, optimizer step); returns wall seconds."""
    t0 = time.perf_counter()
    backward_fn()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def count_flops(
    config, batch: int, prompt_len: int, seq_len: int, n_target: int, prompt_once: bool = True
) -> dict[str, float]:
    """FLOPs of a frozen forward + input-gradient backward (no weight gradients).

    Prompt once: the linear layers see the L prompt tokens once and the B x T examples' tokens; the examples'
    queries attend to L + T keys, the prompt's to L. Concatenated: B x (L + T) tokens, each attending to L + T.
    Attention counts the full square (no causal halving), as a dense kernel computes it.

    Args:
        config: the HF Llama-style config (hidden_size, intermediate_size, heads, kv heads, head_dim, layers).
        batch: B.
        prompt_len: L.
        seq_len: T, input + target tokens.
        n_target: LM-head positions per example (target tokens).
        prompt_once: count the prompt-once step (else the concatenated one).

    Returns:
        linear, attention, head and total FLOPs.
    """
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    nh, nkv = config.num_attention_heads, config.num_key_value_heads
    hd = getattr(config, "head_dim", None) or h // nh
    params = h * nh * hd + 2 * h * nkv * hd + nh * hd * h + 3 * h * i  # q, k, v, o, gate, up, down
    s = prompt_len + seq_len
    if prompt_once:
        tokens = prompt_len + batch * seq_len
        pairs = prompt_len * prompt_len + batch * seq_len * s  # (query, key) pairs
    else:
        tokens, pairs = batch * s, batch * s * s
    linear = layers * (2 + 2) * tokens * params  # forward + input gradient
    attention = layers * (2 * 2 * nh * pairs * hd) * (1 + 2)  # scores + weighted sum, backward x2
    head = (2 + 2) * batch * n_target * h * config.vocab_size
    return {"linear": linear, "attention": attention, "head": head, "total": linear + attention + head}


def matmul_rate(tokens: int, hidden: int, inter: int, repeats: int) -> dict[str, float]:
    """Best-of-N fp32 GFLOP/s of torch.matmul on MLP shapes: [tokens, H] x [H, I] and [tokens, I] x [I, H]."""
    gen = torch.Generator().manual_seed(0)
    rates = {}
    for name, (m, k, n) in {"up": (tokens, hidden, inter), "down": (tokens, inter, hidden)}.items():
        a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
        torch.matmul(a, b)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(4):
                torch.matmul(a, b)
            best = min(best, (time.perf_counter() - t0) / 4)
        rates[name] = 2 * m * k * n / best / 1e9
    rates["best"] = max(rates.values())
    return rates


def peak_rss_kb() -> tuple[int, int]:
    """(VmHWM, ru_maxrss) of this process in KB.

    VmHWM (/proc/self/status) is this address space's own high-water mark. ru_maxrss also keeps the
    pre-exec address space's peak, which for a child started with vfork/posix_spawn is the parent's
    RSS: it overstates a subprocess's peak, so VmHWM is the figure reported (ru_maxrss off Linux).
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    try:
        with open("/proc/self/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        hwm = maxrss
    return hwm, maxrss


def memory_only(args: argparse.Namespace) -> dict:
    """Loads the model and runs warmup + steps spot steps in this process; returns peak RSS figures."""
    backbone = load_backbone(args.model)
    loaded = peak_rss_kb()[0]
    model, opt = spot_model(backbone, args)
    backward = spot_backward(model, make_batch(backbone, args), args)
    per_step = []
    for _ in range(max(1, args.warmup + args.steps)):
        timed_step(backward, opt)
        per_step.append(peak_rss_kb()[0] * 1024 / 1e9)
    hwm, maxrss = peak_rss_kb()
    return {
        "peak_rss_kb": hwm,
        "peak_rss_gb": hwm * 1024 / 1e9,
        "ru_maxrss_kb": maxrss,
        "peak_rss_after_load_gb": loaded * 1024 / 1e9,
        "peak_rss_after_each_step_gb": per_step,
    }


def memory_subprocess(args: argparse.Namespace) -> dict:
    """Runs `--memory-only` in a fresh interpreter and parses its JSON line."""
    opts = dict(model=args.model, prompt_len=args.prompt_len, batch=args.batch, input_len=args.input_len)
    if args.micro_batch:
        opts["micro_batch"] = args.micro_batch
    opts.update(target_len=args.target_len, warmup=1, steps=min(args.steps, 2), threads=args.threads, seed=args.seed)
    flags = [x for k, v in opts.items() for x in ("--" + k.replace("_", "-"), str(v))]
    cmd = [sys.executable, "-m", "bench.train_step", "--memory-only", *flags]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_steps(run: dict, warmup: int, steps: int) -> dict[str, list[float]]:
    """Times each variant's step `warmup + steps` times, rotating which goes first; keeps the timed steps."""
    times: dict[str, list[float]] = {name: [] for name in run}
    names = list(run)
    for step in range(warmup + steps):
        shift = step % len(names)
        for name in names[shift:] + names[:shift]:
            t = timed_step(*run[name])
            if step >= warmup:
                times[name].append(t)
    return times


def spot_variants(backbone: Backbone, args: argparse.Namespace, rows: list[Encoded]) -> dict:
    """The prompt-once step and the concatenated step on the same backbone and batch."""
    run = {}
    for name, once in (("spot", True), ("full", False)):
        model, opt = spot_model(backbone, args, prompt_once=once)
        run[name] = (spot_backward(model, rows, args), opt)
    return run


def floor_figures(backbone: Backbone, args: argparse.Namespace, spot_s: float) -> dict:
    """The prompt-once step's FLOPs, the best matmul rate on its MLP shapes, and measured / floor."""
    cfg = backbone.model.config
    seq_len = args.input_len + args.target_len + 1
    flops = count_flops(cfg, args.batch, args.prompt_len, seq_len, args.target_len + 1)
    rate = matmul_rate(args.prompt_len + args.batch * seq_len, cfg.hidden_size, cfg.intermediate_size,
                       args.matmul_repeats)  # fmt: skip
    floor = flops["total"] / (rate["best"] * 1e9)
    return {"flops": flops, "matmul_gflops": rate, "floor_s": floor, "spot_over_floor": spot_s / floor}


def other_shapes(backbone: Backbone, args: argparse.Namespace) -> list[dict]:
    """spot and full (no PEFT) at each prompt-length x batch of `--shapes`."""
    out = []
    for shape in filter(None, args.shapes.split(",")):
        length, batch = (int(x) for x in shape.lower().split("x"))
        sub = argparse.Namespace(**{**vars(args), "prompt_len": length, "batch": batch})
        times = time_steps(spot_variants(backbone, sub, make_batch(backbone, sub)), 1, max(2, args.steps // 2))
        spot_s, full_s = statistics.median(times["spot"]), statistics.median(times["full"])
        row = {
            "prompt_len": length,
            "batch": batch,
            "spot_s": spot_s,
            "full_s": full_s,
            "spot_over_full": spot_s / full_s,
        }
        row.update(
            {k: v for k, v in floor_figures(backbone, sub, spot_s).items() if k in ("floor_s", "spot_over_floor")}
        )
        out.append(row)
        ratios = f"spot/full {row['spot_over_full']:.2f}  spot/floor {row['spot_over_floor']:.2f}"
        print(f"  L={length:<4} B={batch:<3} spot {spot_s:.3f} s  full {full_s:.3f} s  {ratios}")
    return out


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark, prints a table and returns the figures."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.memory_only:
        print(json.dumps(memory_only(args)))
        return {}
    # Memory first, while this process is small: the child's figures must not see the parent's RSS.
    memory = None if args.no_memory else memory_subprocess(args)
    backbone = load_backbone(args.model)
    rows = make_batch(backbone, args)
    run = spot_variants(backbone, args, rows)
    if not args.no_peft:
        pmodel, peft_opt = peft_model(load_backbone(args.model), args)  # a second copy: no shared hooks
        batch = collate(rows, Codec(backbone.tokenizer, is_encoder_decoder=False))
        run["peft"] = (lambda: pmodel(**batch).loss.backward(), peft_opt)
    times = time_steps(run, args.warmup, args.steps)
    res: dict = {"config": {k: v for k, v in vars(args).items() if k != "memory_only"}}
    res["threads"] = torch.get_num_threads()
    for name, values in times.items():
        res[f"{name}_s"], res[f"{name}_all_s"] = statistics.median(values), values
    res["spot_over_full"] = res["spot_s"] / res["full_s"]
    shape = f"L={args.prompt_len}  input={args.input_len}  target={args.target_len}+eos"
    head = f"model {args.model}  B={args.batch} (micro {args.micro_batch or args.batch})  {shape}"
    print(f"{head}  threads={res['threads']}  median of {args.steps} steps, timed in alternation")
    line = f"spot (prompt once): {res['spot_s']:.3f} s  full (concatenated): {res['full_s']:.3f} s"
    line += f"  spot/full: {res['spot_over_full']:.2f}"
    if "peft" in times:
        res["spot_over_peft"] = res["spot_s"] / res["peft_s"]
        res["full_over_peft"] = res["full_s"] / res["peft_s"]
        line += f"  peft: {res['peft_s']:.3f} s  spot/peft: {res['spot_over_peft']:.2f} (target <= {TARGET_RATIO_PEFT})"
    print(line)
    res.update(floor_figures(backbone, args, res["spot_s"]))
    g = {k: v / 1e9 for k, v in res["flops"].items()}
    parts = f"linear {g['linear']:.1f}, attention {g['attention']:.1f}, head {g['head']:.2f}"
    rate = res["matmul_gflops"]
    print(f"prompt-once flops: {g['total']:.1f} GFLOP ({parts})  matmul rate: {rate['best']:.1f} GFLOP/s")
    ratio = f"spot/floor: {res['spot_over_floor']:.2f} (target <= {TARGET_RATIO_FLOOR})"
    print(f"floor: {res['floor_s']:.3f} s  {ratio}")
    if memory is not None:
        res.update(memory)
        peak = f"{res['peak_rss_gb']:.2f} GB ({res['peak_rss_kb']} KB)"
        print(f"peak RSS (spot training, one pass, fresh process): {peak} (target < {TARGET_RSS_GB} GB)")
        steps = ", ".join(f"{g:.2f}" for g in res["peak_rss_after_each_step_gb"])
        print(f"  peak RSS after loading: {res['peak_rss_after_load_gb']:.2f} GB; after each step: {steps} GB")
    if args.shapes:
        print("other shapes (spot vs full, same process):")
        res["shapes"] = other_shapes(backbone, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
