"""The GPU suite of `bench.packed` (`python -m bench.packed --device cuda`), every row in one process.

SmolLM2-135M, Gemma 3 270M and T5 1.1 Base built from their configs with random weights (the
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
import statistics
import time

import torch

from bench.packed_cells import SPOT, STUDY_NAMES, TINY, Cells, Shape, compile_backbone, shaped_backbone, write
from spot_core import cost
from spot_core.backbones import Backbone

TARGET_GPU_SPEEDUP = 10.0

# study=spot's training cells (conf/study/spot.yaml: 16 sources, 10 targets x 3 seeds, retrieval k in 3, 6, 9, 12).
SPOT_CELLS = (
    ("source", 16, 262_144),
    ("target baseline", 30, 100_000),
    ("transfer", 480, 100_000),
    ("retrieval: weighted-average init", 120, 100_000),
    ("retrieval: mixture prompt", 40, 262_144),
    ("retrieval: from the mixture prompt", 120, 100_000),
)
CHAIN = (262_144, 262_144, 100_000)  # the longest dependency chain: source -> mixture prompt -> its target runs


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
