"""Packed training (`spot_core.packing`) against one cell per trial: cells per hour and peak memory, CPU and GPU.

Run from the repository root:

    python -m bench.packed [--ks 1,2,4,8] [--steps 3] [--compile] [--json out.json]        # CPU, SmolLM2-135M
    python -m bench.packed --device cuda [--models ...] [--row-seconds 5] [--json out.json]  # one GPU
    python -m bench.packed --dry-run [--suite gpu]    # the same logic on tiny models and shapes, in seconds
    python -m bench.packed --record packed.json         # a GPU run's figures into bench/figures.json

CPU (the demo's cells, conf/study/demo.yaml: prompt 100, batch 8, 64 input tokens, 2 target tokens + end, no
micro-batches, Adafactor at lr 0.01). For each K, K cells train
- packed: one process, one backbone; each step `packed_gradients` over the K cells' batches (by default in forward
  passes of one cell's batch, as Pack's default chunk on a CPU does it: the memory of one cell; `--max-chunk 32`:
  all the cells' batches in one pass, Pack's default on a GPU) and each cell's own Adafactor step, on all the
  cores' threads;
- separate: K processes at once, each one cell (`accumulate_gradients` + Adafactor: the Trainer's lone step) on
  max(1, cores // K) torch threads, as K trials with fractional CPUs get them (pipelines/cells.py).
Every process loads the model and takes its warm-up steps; then all start their timed steps together. Throughput =
K x steps / (last end - first start), in cell-steps/s; cells/hour counts cells of `--cell-steps` steps (the demo's
sources: 100). Loading is left out (once per pack, once per cell apart) and so is evaluation (a packed run
evaluates alone, as it would apart). Peak RSS: packed, its process's VmHWM; separate, the sum of the processes'.
`--compile` times `torch.compile` of the backbone instead (one cell, and the largest pack, each in a fresh process:
eager steps, then compiled ones).

GPU (`--device cuda`): SmolLM2-135M, Gemma 3 270M and T5 1.1 Base built from their configs with random weights (the
same FLOPs; no weights travel to the device), all at SPoT's shapes (prompt 100, batch 32, 512 input tokens, 2 target
tokens + end; prompt once on the decoder-only models), one process. Rows: float32 one cell (TF32 off: the project
before TF32), float32 with TF32 (what a CUDA backbone now gets), bfloat16 one cell, bfloat16 packed at K = 4, 16,
64 (forward passes of at most `--max-chunk` examples). Each row: warm-up steps, then steps for `--row-seconds`; peak
GPU memory is torch's `max_memory_allocated` (a trial's CUDA context, about 0.5 GB, comes on top). Cells/hour per
GPU counts SPoT's 100,000-step cells; from T5's rows, the GPU-hours of `study=spot` on one GPU and on 8. With
`--compile`, bfloat16 rows only: one cell and each pack, eager, then on a compiled copy of the backbone. The JSON is
rewritten after every row, so a run cut short keeps what it measured. Its rows also carry stored figures for
`make plan ARGS="plan=h200"`; back here, `python -m bench.packed --record packed.json` adds them to
bench/figures.json (spot_core.cost.record_figure).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from bench.train_step import peak_rss_kb
from spot_core import cost
from spot_core.backbones import Backbone, load_backbone
from spot_core.data import Codec, Encoded
from spot_core.packing import packed_gradients
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt, sampled_vocab
from spot_core.trainer import TrainerConfig, accumulate_gradients, make_optimizer

TARGET_THROUGHPUT, TARGET_MEMORY, TARGET_GPU_SPEEDUP = 1.0, 0.4, 10.0


@dataclass(frozen=True)
class Shape:
    prompt_len: int
    batch: int
    input_len: int
    target_len: int  # + an end token


DEMO, SPOT, TINY = Shape(100, 8, 64, 2), Shape(100, 32, 512, 2), Shape(4, 2, 8, 2)
# study=spot's training cells (conf/study/spot.yaml: 16 sources, 10 targets x 3 seeds, retrieval k in 3, 6, 9, 12).
SPOT_CELLS = (
    ("source", 16, 262_144),
    ("target baseline", 30, 100_000),
    ("transfer", 480, 100_000),
    ("retrieval: weighted-average init", 120, 100_000),
    ("retrieval: mixture prompt", 40, 262_144),
    ("retrieval: from the mixture prompt", 120, 100_000),
)
STUDY_NAMES = {"t5-base": "google/t5-base-lm-adapt"}  # the name a study gives the model (conf/model/)
TINY_OF = {"smollm2-135m": "tiny-llama", "gemma3-270m": "tiny-gemma3", "t5-base": "tiny-t5"}  # for --dry-run
CHAIN = (262_144, 262_144, 100_000)  # the longest dependency chain: source -> mixture prompt -> its target runs


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


# --- CPU: one process per pack or per cell ------------------------------------------------------------------
def worker(args: argparse.Namespace) -> dict:
    """A pack of `--k` cells (or one cell) in this process: load, warm up, say "ready", wait for "go" on stdin, then
    the timed steps. With `--compile`: eager steps, then compiled ones (no waiting)."""
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    backbone = load_backbone(args.model)
    shape = TINY if args.dry_run else DEMO
    cells = Cells(backbone, args.k, shape, args.lr, seed=args.seed)
    load_s = time.perf_counter() - t0
    chunk = min(args.k * shape.batch, args.max_chunk or shape.batch)  # Pack's default on a CPU: one cell's batch
    for s in range(args.warmup):
        cells.step(s, chunk)
    out: dict = {"load_s": load_s, "threads": torch.get_num_threads(), "chunk": chunk}
    if args.compile:
        out["eager_s"] = timed(cells, args.warmup, args.steps, chunk)
        compile_backbone(backbone)
        t0 = time.perf_counter()
        cells.step(0, chunk)
        out["first_compiled_step_s"] = time.perf_counter() - t0
        out["compiled_s"] = timed(cells, 1, args.steps, chunk)
    else:
        print("ready", flush=True)
        sys.stdin.readline()
        out["start"] = time.time()
        out["step_s"] = timed(cells, args.warmup, args.steps, chunk)
        out["end"] = time.time()
    out["peak_rss_kb"] = peak_rss_kb()[0]
    return out


def timed(cells: Cells, first: int, steps: int, chunk: int | None = None) -> list[float]:
    """Seconds of each of `steps` steps, numbered from `first`."""
    times = []
    for s in range(first, first + steps):
        t0 = time.perf_counter()
        cells.step(s, chunk)
        times.append(time.perf_counter() - t0)
    return times


def launch(args: argparse.Namespace, k: int, processes: int, threads: int, compile_: bool = False) -> list[dict]:
    """`processes` workers of `k` cells each, started together (each its own seeds); their JSON results."""
    flags = ["--model", args.model, "--lr", str(args.lr), "--warmup", str(args.warmup), "--steps", str(args.steps)]
    flags += ["--dry-run"] * args.dry_run + ["--compile"] * compile_
    flags += ["--max-chunk", str(args.max_chunk)] if args.max_chunk else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "bench.packed", "--worker", "--k", str(k), "--threads", str(threads), *flags]
    pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    procs = [subprocess.Popen([*cmd, "--seed", str(100 * p)], **pipes) for p in range(processes)]
    if not compile_:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", "a worker failed before its timed steps"
        for p in procs:  # all at once: the timed steps overlap
            p.stdin.write("go\n")
            p.stdin.flush()
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise RuntimeError(f"a worker exited with {p.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def cpu_suite(args: argparse.Namespace, report: dict) -> None:
    """Packed against separate processes at each K; with `--compile`, torch.compile's rows instead."""
    cores = os.cpu_count() or 1
    if args.compile:
        return compile_rows(args, report, cores)
    report["cpu"] = rows = []
    for k in args.ks:
        row: dict = {"k": k}
        for mode, procs, threads, k_each in (("packed", 1, cores, k), ("separate", k, max(1, cores // k), 1)):
            row[mode] = throughput(args, launch(args, k_each, procs, threads), k, threads)
        for key, figure in (("throughput", "cell_steps_per_s"), ("median_throughput", "median_cell_steps_per_s")):
            row[f"{key}_ratio"] = row["packed"][figure] / row["separate"][figure]
        row["memory_ratio"] = row["packed"]["peak_rss_gb"] / row["separate"]["peak_rss_gb"]
        rows.append(row)
        p, s = row["packed"], row["separate"]
        print(
            f"K={k:<2} packed {p['cells_per_hour']:6.1f} cells/h {p['peak_rss_gb']:5.2f} GB (passes of {p['chunk']})"
            f" | separate {s['cells_per_hour']:6.1f} cells/h {s['peak_rss_gb']:5.2f} GB ({k} x {s['threads_each']}"
            f" threads) | throughput {row['throughput_ratio']:.2f}x (medians: {row['median_throughput_ratio']:.2f}x)"
            f"  memory {row['memory_ratio']:.2f}x",
            flush=True,
        )
        write(args, report)
    verdicts(rows, report)


def throughput(args: argparse.Namespace, res: list[dict], k: int, threads: int) -> dict:
    """The figures of K cells from their processes' results: cell-steps/s over the wall time of all their timed
    steps (and from each process's median step: less sensitive to another program's bursts), peak RSS summed."""
    wall = max(r["end"] for r in res) - min(r["start"] for r in res)
    rate = k * args.steps / wall
    median = sum(k / len(res) / statistics.median(r["step_s"]) for r in res)
    return {
        "processes": len(res),
        "threads_each": threads,
        "chunk": res[0]["chunk"],
        "wall_s": wall,
        "cell_steps_per_s": rate,
        "median_cell_steps_per_s": median,
        "cells_per_hour": rate * 3600 / args.cell_steps,
        "peak_rss_gb": sum(r["peak_rss_kb"] for r in res) * 1024 / 1e9,
        "load_s": [r["load_s"] for r in res],
        "step_s": [r["step_s"] for r in res],
    }


def compile_rows(args: argparse.Namespace, report: dict, cores: int) -> None:
    """One cell and the largest pack, each in a fresh process: eager steps, then compiled ones."""
    report["compile"] = []
    for k in sorted({1, max(args.ks)}):
        res = launch(args, k, 1, cores, compile_=True)[0]
        res.update(k=k, eager_median_s=statistics.median(res["eager_s"]))
        res["compiled_median_s"] = statistics.median(res["compiled_s"])
        res["compiled_over_eager"] = res["compiled_median_s"] / res["eager_median_s"]
        report["compile"].append(res)
        print(
            f"torch.compile K={k}: eager {res['eager_median_s']:.3f} s/step, compiled "
            f"{res['compiled_median_s']:.3f} s/step ({res['compiled_over_eager']:.2f}x), first compiled step "
            f"{res['first_compiled_step_s']:.1f} s",
            flush=True,
        )
        write(args, report)


def verdicts(rows: list[dict], report: dict) -> None:
    at4 = next((r for r in rows if r["k"] == 4), None)
    if at4 is None:
        return
    report["targets"] = {
        "throughput_at_4": {
            "ratio": at4["throughput_ratio"],
            "target": f">= {TARGET_THROUGHPUT}",
            "met": at4["throughput_ratio"] >= TARGET_THROUGHPUT,
        },
        "memory_at_4": {
            "ratio": at4["memory_ratio"],
            "target": f"<= {TARGET_MEMORY}",
            "met": at4["memory_ratio"] <= TARGET_MEMORY,
        },
    }
    for name, t in report["targets"].items():
        print(f"target {name}: {t['ratio']:.3f} ({t['target']}): {'met' if t['met'] else 'missed'}")


# --- GPU: every row in one process -------------------------------------------------------------------------
def gpu_plan(args: argparse.Namespace) -> list[tuple[str, bool, int, bool]]:
    """The rows (dtype, TF32, K, compiled): float32 without and with TF32, bfloat16, one cell each, then bfloat16
    packs; with `--compile`, bfloat16 one cell and each pack, eager then compiled."""
    if args.compile:
        return [("bfloat16", False, k, c) for k in (1, *args.gpu_ks) for c in (False, True)]
    one = [("float32", False, 1, False), ("float32", True, 1, False), ("bfloat16", False, 1, False)]
    return one + [("bfloat16", False, k, False) for k in args.gpu_ks]


def gpu_suite(args: argparse.Namespace, report: dict) -> None:
    cuda = args.device == "cuda"
    shape = TINY if args.dry_run else SPOT
    report["gpu"] = rows = []
    report["device_name"] = torch.cuda.get_device_name() if cuda else "cpu (dry run)"
    args.device_name = args.device_name or report["device_name"].lower().removeprefix("nvidia ").split()[0]
    for name in args.models:
        built: dict[tuple[str, bool], Backbone] = {}
        for dtype, tf32, k, compiled in gpu_plan(args):
            if (dtype, compiled) not in built:  # a compiled backbone is another copy, compiled in place
                built = {key: b for key, b in built.items() if key[0] == dtype}
                gc.collect()
                built[dtype, compiled] = shaped_backbone(name, dtype, args.device)
                if compiled:
                    compile_backbone(built[dtype, compiled])
            row = {"model": name, "dtype": dtype, "tf32": tf32, "k": k, "compiled": compiled, "shape": vars(shape)}
            warmup = max(args.warmup, 2) if compiled else args.warmup  # the first two may compile
            row.update(gpu_row(args, built[dtype, compiled], shape, k, tf32, warmup))
            row["figure"] = figure(args, row, built[dtype, compiled], shape)
            rows.append(row)
            print(gpu_line(row), flush=True)
            write(args, report)
    if args.compile:
        report["compile"] = compile_ratios(rows)
    else:
        report["speedups"] = speedups(rows)
        report["study_spot"] = study_estimate(rows, "tiny-t5" if args.dry_run else "t5-base")
    write(args, report)


def figure(args: argparse.Namespace, row: dict, backbone: Backbone, shape: Shape) -> dict | None:
    """The row as a stored figure for `make plan ARGS="plan=DEVICE"` (spot_core.cost.Figure's fields), or None:
    rows that failed, compiled rows, and float32 without TF32 (a CUDA backbone gets TF32) are not what a study runs.
    `--record` adds them to bench/figures.json."""
    if "error" in row or row["compiled"] or (row["dtype"] == "float32" and not row["tf32"]):
        return None
    return {
        "device": args.device_name,
        "model": STUDY_NAMES.get(row["model"], row["model"]),
        "dtype": row["dtype"],
        "cells": row["k"],
        "batch_size": shape.batch,
        "prompt_length": shape.prompt_len,
        "input_tokens": shape.input_len,
        "target_tokens": shape.target_len + 1,
        "prompt_once": not backbone.is_encoder_decoder,
        "step_seconds": row["step_s"],
        "measured": f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, bench/packed.py",
    }


def record(path: str, figures: str) -> None:
    """Adds the figures of a GPU run's JSON (`--json` on the device) to the stored figures."""
    rows = json.loads(open(path).read())["gpu"]
    for row in (r for r in rows if r.get("figure")):
        cost.record_figure(figures, cost.Figure(**row["figure"]))
        print(f"recorded {row['figure']['device']} {row['figure']['model']} {row['figure']['dtype']} "
              f"K={row['figure']['cells']} into {figures}")  # fmt: skip


def compile_ratios(rows: list[dict]) -> list[dict]:
    """Each compiled row's step time over the same eager row's."""
    eager = {(r["model"], r["k"]): r for r in rows if not r["compiled"] and "error" not in r}
    out = []
    for r in (r for r in rows if r["compiled"] and "error" not in r and (r["model"], r["k"]) in eager):
        e = eager[r["model"], r["k"]]
        out.append({"model": r["model"], "k": r["k"], "compiled_over_eager": r["step_s"] / e["step_s"]})
        out[-1]["compile_s"] = r["warmup_s"] - e["warmup_s"]
        print(f"torch.compile {r['model']} K={r['k']}: compiled/eager {out[-1]['compiled_over_eager']:.2f} "
              f"(compiling: about {out[-1]['compile_s']:.0f} s)")  # fmt: skip
    return out


def gpu_row(args: argparse.Namespace, backbone: Backbone, shape: Shape, k: int, tf32: bool, warmup: int) -> dict:
    """Times `k` cells (packed when k > 1) for `--row-seconds` after `warmup` steps (a compiled backbone compiles
    in them); peak device memory."""
    cuda = backbone.model.get_input_embeddings().weight.is_cuda
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    chunk = min(k * shape.batch, args.max_chunk)
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        cells = Cells(backbone, k, shape, args.lr)
        t0 = time.perf_counter()
        for s in range(warmup):
            cells.step(s, chunk)
        sync()
        warm = time.perf_counter() - t0
        times, t0 = [], time.perf_counter()
        while len(times) < args.steps or (time.perf_counter() - t0 < args.row_seconds and len(times) < 200):
            t1 = time.perf_counter()
            losses = cells.step(warmup + len(times), chunk)
            sync()
            times.append(time.perf_counter() - t1)
        finite = all(bool(torch.isfinite(loss)) for loss in losses)
    except torch.OutOfMemoryError as error:
        return {"error": f"out of memory: {str(error).splitlines()[0]}"}
    finally:
        cells = None  # noqa: F841 - its activations and optimizer states go before the next row
    step = statistics.median(times)
    return {
        "chunk": chunk,
        "warmup_s": warm,
        "steps": len(times),
        "step_s": step,
        "cell_step_s": step / k,
        "cells_per_hour": 3600 / (args.cell_steps * step / k),
        "losses_finite": finite,
        "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
    }


def gpu_line(row: dict) -> str:
    what = f"{row['model']:<13} {row['dtype']:<8}{' tf32' if row['tf32'] else '     '} K={row['k']:<3}"
    what += " compiled" * bool(row.get("compiled"))
    if "error" in row:
        return f"{what} {row['error']}"
    peak = f"{row['peak_gb']:.1f} GB" if row["peak_gb"] is not None else "-"
    return (
        f"{what} {row['step_s'] * 1e3:8.1f} ms/step  {row['cell_step_s'] * 1e3:7.2f} ms/cell-step  "
        f"{row['cells_per_hour']:8.3f} cells/h  peak {peak}  (warm-up {row['warmup_s']:.1f} s)"
    )


def speedups(rows: list[dict]) -> dict:
    """Per model: the best packed bf16 row's cells/hour over fp32 one cell per trial (TF32 off, and on)."""
    out = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name and "error" not in r and not r.get("compiled")]
        base = {r["tf32"]: r for r in mine if r["dtype"] == "float32"}
        packed = [r for r in mine if r["dtype"] == "bfloat16" and r["k"] > 1]
        if not packed or False not in base:
            continue
        best = max(packed, key=lambda r: r["cells_per_hour"])
        out[name] = {"best_k": best["k"], "over_fp32": best["cells_per_hour"] / base[False]["cells_per_hour"]}
        if True in base:
            out[name]["over_fp32_tf32"] = best["cells_per_hour"] / base[True]["cells_per_hour"]
        out[name]["met"] = out[name]["over_fp32"] >= TARGET_GPU_SPEEDUP
        print(
            f"{name}: packed bf16 (K={best['k']}) {out[name]['over_fp32']:.1f}x fp32 one cell per trial "
            f"(target >= {TARGET_GPU_SPEEDUP}x: {'met' if out[name]['met'] else 'missed'})"
        )
    return out


def study_estimate(rows: list[dict], model: str) -> dict:
    """GPU-hours of study=spot's training steps (evaluation left out) from `model`'s rows: on one GPU every cell in
    the best pack; on 8, the cells spread evenly, but never faster than the longest chain (source -> mixture prompt
    -> its target runs) trained in packs of 4 (a few cells per GPU at a time)."""
    mine = {
        (r["dtype"], r["tf32"], r["k"]): r
        for r in rows
        if r["model"] == model and "error" not in r and not r.get("compiled")
    }
    packed = [r for (dtype, _, k), r in mine.items() if dtype == "bfloat16" and k > 1]
    if not packed:
        return {}
    best = min(packed, key=lambda r: r["cell_step_s"])
    chain_step = mine.get(("bfloat16", False, 4), best)["step_s"]
    out = {"model": model, "best_k": best["k"]}
    for scope, stages in (("526 cells", SPOT_CELLS[:3]), ("with retrieval", SPOT_CELLS)):
        cell_steps = sum(n * steps for _, n, steps in stages)
        chain = CHAIN[0] + CHAIN[2] if scope == "526 cells" else sum(CHAIN)
        one = cell_steps * best["cell_step_s"] / 3600
        wall8 = max(one / 8, chain * chain_step / 3600)
        out[scope] = {
            "cells": sum(n for _, n, _ in stages),
            "cell_steps": cell_steps,
            "one_gpu_hours": one,
            "eight_gpus_wall_hours": wall8,
            "eight_gpus_gpu_hours": 8 * wall8,
        }
        for key, label in ((("float32", False, 1), "fp32_one_cell"), (("bfloat16", False, 1), "bf16_one_cell")):
            if key in mine:
                out[scope][f"{label}_one_gpu_hours"] = cell_steps * mine[key]["cell_step_s"] / 3600
        e = out[scope]
        print(
            f"study=spot ({scope}: {e['cells']} cells, {cell_steps / 1e6:.1f}M cell-steps, {model} bf16 packed "
            f"K={best['k']}): {one:,.0f} GPU-hours on one GPU; on 8: {wall8:,.0f} h wall, {8 * wall8:,.0f} "
            f"GPU-hours"
        )
    return out


# --- main ------------------------------------------------------------------------------------------------
def write(args: argparse.Namespace, report: dict) -> None:
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--suite", default=None, choices=["cpu", "gpu"], help="default: gpu on cuda, else cpu")
    p.add_argument("--model", default="smollm2-135m", help="CPU: the backbone (load_backbone name)")
    p.add_argument("--models", default="smollm2-135m,gemma3-270m,t5-base", help="GPU: the models, comma-separated")
    p.add_argument("--ks", default="1,2,4,8", help="CPU: cells per pack")
    p.add_argument("--gpu-ks", default="4,16,64", help="GPU: cells per packed bf16 row")
    p.add_argument("--steps", type=int, default=3, help="timed steps (GPU: at least)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--row-seconds", type=float, default=5.0, help="GPU: time each row this long")
    p.add_argument(
        "--max-chunk", type=int, default=None, help="examples a pass at most (CPU: a cell's batch, as Pack; GPU: 128)"
    )
    p.add_argument("--cell-steps", type=int, default=None, help="a cell's steps (default: CPU 100, GPU 100,000)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--compile", action="store_true", help="time torch.compile (eager against compiled) instead")
    p.add_argument("--dry-run", action="store_true", help="tiny models and shapes: the logic, in seconds")
    p.add_argument("--json", default=None, help="write the figures to this JSON file (after every row)")
    p.add_argument("--device-name", default=None, help="GPU: the name plan=NAME asks for (default: h200 on an H200)")
    p.add_argument("--record", default=None, help="add the GPU figures of this --json file to --figures, and stop")
    p.add_argument("--figures", default="bench/figures.json", help="the stored figures --record adds to")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.ks = [int(k) for k in str(args.ks).split(",")]
    args.gpu_ks = [int(k) for k in str(args.gpu_ks).split(",")]
    args.models = str(args.models).split(",")
    args.suite = args.suite or ("gpu" if args.device == "cuda" else "cpu")
    args.max_chunk = args.max_chunk or (128 if args.suite == "gpu" else None)
    args.cell_steps = args.cell_steps or (100 if args.suite == "cpu" else 100_000)
    if args.dry_run:  # each model's tiny stand-in, packs of at most 4, a step a row
        args.model, args.models = TINY_OF.get(args.model, args.model), [TINY_OF.get(m, m) for m in args.models]
        args.ks, args.gpu_ks = (sorted({min(k, 4) for k in ks}) for ks in (args.ks, args.gpu_ks))
        args.row_seconds, args.steps = 0.1, 1
    return args


def machine() -> dict:
    import platform

    import transformers

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> dict:
    """Runs the suite, prints the figures and the verdicts, and returns them."""
    args = parse_args(argv)
    if args.record:
        record(args.record, args.figures)
        return {}
    if args.worker:
        print(json.dumps(worker(args)))
        return {}
    report = {"config": {k: v for k, v in vars(args).items() if k not in ("worker", "k", "threads", "seed")}}
    report["machine"] = machine()
    m = report["machine"]
    print(
        f"{args.suite} suite on {args.device}: {m['cores']} cores, load average {m['load_avg'][0]:.2f}, "
        f"torch {m['torch']}, transformers {m['transformers']}",
        flush=True,
    )
    (cpu_suite if args.suite == "cpu" else gpu_suite)(args, report)
    report["machine"]["load_avg_after"] = os.getloadavg()
    write(args, report)
    return report


if __name__ == "__main__":
    main()
