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

GPU (`--device cuda`): the three models at SPoT's shapes, every row in one process; bench/packed_gpu.py says what
each row measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from bench.packed_cells import DEMO, TINY, TINY_OF, Cells, compile_backbone, write
from bench.packed_gpu import gpu_suite, record
from bench.train_step import peak_rss_kb
from spot_core.backbones import load_backbone

TARGET_THROUGHPUT, TARGET_MEMORY = 1.0, 0.4


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


# --- main ------------------------------------------------------------------------------------------------
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
