"""Orchestration overhead of a study: wall time of the whole study / the sum of its cells' own training time.

Run from the repository root (needs the offline mirror):

    python -m bench.study_overhead [--sources 8] [--targets 6] [--seeds 2] [--steps 300] [--concurrent 2]
                                   [--cells-per-trial 1] [--json out.json]

A smoke-sized grid (tiny model) of sources + targets x seeds + sources x targets x seeds cells (116 by default),
stages source, target and transfer, on a local Ray with a fresh MLflow sqlite store. Each cell logs
`time/cell_seconds` (its `tune_prompt` call; a packed cell its share of its pack's time, so that the cells of a
trial add up to its busy time); everything else (Ray start, trial scheduling, MLflow runs, artifact logging, the
ledger) is overhead. With N concurrent trials the ratio is wall x N / sum.
The MLflow runs' start and end times split the overhead into start-up (until the first cell's run opens),
the gaps between cells, the time inside a trial around `tune_prompt`, and the tail after the last cell.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from pipelines.study import run

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["sst2", "mnli", "qqp", "qnli", "squad", "multirc", "cosmos_qa", "record"]
TARGETS = ["rte", "cb", "mrpc", "cr", "cola", "boolq", "copa", "wic", "stsb", "wsc"]
TARGET_RATIO = 1.15


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", type=int, default=8)
    p.add_argument("--targets", type=int, default=6)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--steps", type=int, default=300, help="training steps per cell")
    p.add_argument("--cells-per-trial", type=int, default=1, help="ray.cells_per_trial (packed training)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            "study=smoke",
            "stages=[source,target,transfer]",
            f"study.sources=[{','.join(SOURCES[: args.sources])}]",
            f"study.targets=[{','.join(TARGETS[: args.targets])}]",
            f"study.seeds=[{','.join(str(s) for s in range(args.seeds))}]",
            f"study.source_trainer.steps={args.steps}",
            f"study.target_trainer.steps={args.steps}",
            f"study.source_trainer.eval_every={args.steps}",
            f"study.target_trainer.eval_every={args.steps}",
            f"out_dir={tmp}/out",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"ray.max_concurrent_trials={args.concurrent}",
            f"ray.num_cpus={args.concurrent}",
            f"ray.cells_per_trial={args.cells_per_trial}",
        ]
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("study", overrides=overrides)
        start = time.time()
        summary = run(cfg)
        wall = time.time() - start
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        experiment = client.get_experiment_by_name(cfg.tracking.experiment)
        runs = client.search_runs([experiment.experiment_id], "tags.cell_key != ''", max_results=10000)
        cell_seconds = sum(r.data.metrics["time/cell_seconds"] for r in runs)
        spans = sum(r.info.end_time - r.info.start_time for r in runs) / 1000
        first = min(r.info.start_time for r in runs) / 1000 - start
        last = start + wall - max(r.info.end_time for r in runs) / 1000
    ratio = wall * args.concurrent / cell_seconds
    print(
        f"{summary['cells']} cells ({summary['finished']} finished, {len(summary['failed'])} failed), "
        f"{args.concurrent} concurrent trials"
    )
    print(f"wall {wall:.1f} s, sum of cells' training {cell_seconds:.1f} s (mean {cell_seconds / len(runs):.2f} s)")
    busy = (wall - first - last) * args.concurrent
    if args.cells_per_trial > 1:  # a packed cell's MLflow run spans its whole pack: no split per cell
        print(f"overhead: start-up {first:.1f} s, tail {last:.1f} s (packed: the gaps are not split per cell)")
    else:
        print(
            f"overhead: start-up {first:.1f} s, tail {last:.1f} s, gaps between cells "
            f"{(busy - spans) / len(runs):.3f} s/cell/slot, "
            f"in-trial around tune_prompt {(spans - cell_seconds) / len(runs):.3f} s/cell"
        )
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"overhead ratio wall x {args.concurrent} / sum = {ratio:.3f} ({verdict} the {TARGET_RATIO} target)")
    out = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "cells": summary["cells"],
        "finished": summary["finished"],
        "failed": len(summary["failed"]),
        "wall_s": wall,
        "cell_seconds_sum": cell_seconds,
        "cell_seconds_mean": cell_seconds / len(runs),
        "startup_s": first,
        "tail_s": last,
        "gaps_s_per_cell_slot": None if args.cells_per_trial > 1 else (busy - spans) / len(runs),
        "in_trial_s_per_cell": None if args.cells_per_trial > 1 else (spans - cell_seconds) / len(runs),
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
