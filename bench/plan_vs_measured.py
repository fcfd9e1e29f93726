"""`make plan`'s estimate against a study's measured wall time.

Run from the repository root:

    python -m bench.plan_vs_measured [--studies demo,methods] [--measured demo=3780,methods=5541] [--repeats 3]
                                     [--threads 2,1] [--json out.json]

For each study, `python -m pipelines.study study=NAME plan=true` runs `--repeats` times, one after the other, each
with a tracking store and output folder of its own under a temporary folder (nothing finished: every cell is
counted; nothing is written elsewhere). Each run calibrates the model's cost per token on this machine as it is
(`spot_core.cost`), so the estimate moves with the load: the load average before each run is kept beside it.
The ratio is measured wall time / the wall time the plan gives (its device-hours spread over the trials that run at
once; below 1: the estimate is an upper bound for that study).

Then, in this process, the plan's calibration of SmolLM2-135M at the presets' shape (prompt 100 once, 64 input and 16
target tokens at full length, batch 8) with each of `--threads` torch threads, one after the other, and the same
step on the whole model (all 30 layers, not scaled): the plan calibrates with every thread of the machine, while a
study's CPU trials run one thread each (`pipelines/cells.py`), side by side.

The measured wall times are given, not measured here (a study takes an hour or more on this 2-core machine):
`--measured NAME=SECONDS,...`; the defaults are the fresh `make study` figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# Fresh `make study` wall times on 2-core sandboxes (docs/benchmarks.md): demo 63 min on an AMD EPYC (2026-12-06),
# methods 92 min (5,541 s) on an AMD EPYC (2026-12-05), both report included
MEASURED = {"demo": 3780.0, "methods": 5541.0}
TOTAL = re.compile(r"total: ([\d,.]+) (device-hours of this machine|GPU-hours)")
TOKEN = re.compile(r"^\s+(\S+): ([\d.e+-]+) s per training token, ([\d.e+-]+) s per evaluation token", re.M)
AT_ONCE = re.compile(r"with (\d+) trials at once .*?: about ([\d,.]+) (s|min|h)")
SECONDS = {"s": 1, "min": 60, "h": 3600}
KIND = re.compile(r"^  (\w+)\s+(\d+) cells? (.*?)\s{2,}([\d.]+ (?:s|min|h))", re.M)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", default="demo,methods", help="study presets, comma-separated")
    p.add_argument(
        "--measured",
        default=",".join(f"{k}={v:g}" for k, v in MEASURED.items()),
        help="each study's measured wall time in seconds: NAME=SECONDS,...",
    )
    p.add_argument("--repeats", type=int, default=3, help="plans per study (the estimate's calibration varies)")
    p.add_argument("--threads", default="2,1", help="torch threads to calibrate with, comma-separated ('': skip)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def plan(study: str, folder: Path) -> dict:
    """One `plan=true` run in its own store: its printed plan, the total estimate and the costs per token."""
    folder.mkdir(parents=True)
    load = os.getloadavg()[0]
    cmd = [
        sys.executable, "-m", "pipelines.study", f"study={study}", "plan=true",
        f"tracking.uri=sqlite:///{folder}/mlflow.db", f"out_dir={folder}/out",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    total = TOTAL.search(done.stdout)
    if total is None:
        raise SystemExit(f"no estimate in the plan of study {study}:\n{done.stdout}\n{done.stderr}")
    tokens = {m: {"train_s": float(t), "evaluate_s": float(e)} for m, t, e in TOKEN.findall(done.stdout)}
    estimate_h = float(total.group(1).replace(",", ""))
    at_once = AT_ONCE.search(done.stdout)  # the cells spread over the trials that run side by side
    wall_h = float(at_once.group(2).replace(",", "")) * SECONDS[at_once.group(3)] / 3600 if at_once else estimate_h
    return {
        "load_average_before": load,
        "estimate_h": estimate_h,
        "trials_at_once": int(at_once.group(1)) if at_once else 1,
        "wall_estimate_h": wall_h,
        "per_token": tokens,
        "stages": {
            kind: {"cells": int(n), "what": what, "estimate": amount}
            for kind, n, what, amount in KIND.findall(done.stdout)
        },
        "stdout": done.stdout,
    }


def calibration(threads: int) -> dict:
    """SmolLM2-135M's seconds per token as the plan calibrates it (2 layers, scaled) and on the whole model, with
    `threads` torch threads."""
    from spot_core import cost

    torch.set_num_threads(threads)
    config, shape = cost.architecture("smollm2-135m"), cost.Shape(100, 64, 16, True)
    row: dict = {"threads": threads, "load_average_before": os.getloadavg()[0]}
    for name, layers in (("plan_2_layers_scaled", cost.CPU_LAYERS), ("whole_model", None)):
        kept, depth = cost.shallow(config, layers)
        examples = 8 if layers is None else -(-cost.CPU_TOKENS // (shape.input_tokens + shape.target_tokens))
        train, evaluate = cost.calibrate(cost.random_backbone("smollm2-135m", kept), shape, 1, examples, depth)
        row[name] = {"examples": examples, "train_s_per_token": train, "evaluate_s_per_token": evaluate}
    return row


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    measured = {k: float(v) for k, v in (pair.split("=") for pair in args.measured.split(","))}
    out: dict = {"cpus": os.cpu_count(), "studies": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for study in [s for s in args.studies.split(",") if s]:
            runs = [plan(study, Path(tmp) / f"{study}-{i}") for i in range(args.repeats)]
            estimates = [r["wall_estimate_h"] for r in runs]  # the wall time it gives (its device-hours: runs)
            row = {"estimates_h": estimates, "median_estimate_h": statistics.median(estimates), "runs": runs}
            if study in measured:
                wall = measured[study]
                row.update(
                    measured_s=wall,
                    ratio_to_median=wall / (3600 * row["median_estimate_h"]),
                    ratio_range=[wall / (3600 * max(estimates)), wall / (3600 * min(estimates))],
                )
            out["studies"][study] = row
            ratio = f", measured / estimate {row['ratio_to_median']:.3f}" if "measured_s" in row else ""
            print(f"{study}: estimates {', '.join(f'{e:.2f}' for e in estimates)} h{ratio}", flush=True)
    threads = [int(t) for t in args.threads.split(",") if t]
    out["calibration"] = [calibration(t) for t in threads]
    for row in out["calibration"]:
        plan_cost, whole = row["plan_2_layers_scaled"]["train_s_per_token"], row["whole_model"]["train_s_per_token"]
        print(
            f"{row['threads']} thread(s): {plan_cost * 1e3:.2f} ms per training token (plan), {whole * 1e3:.2f} (whole)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
