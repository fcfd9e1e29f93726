"""Tokenised-split cache: preparing a task's training split from scratch against reading it from the cache.

Run from the repository root (needs the offline mirror; `--data-dir` or ../shared/data):

    python -m bench.task_cache [--task sst2_v1] [--model smollm2-135m] [--limit N] [--json out.json]

"cold" = read the mirror file, preprocess and tokenise (what every run of a study would pay without the cache);
"warm" = the same call answered from `<cache>/tokenized`. A study's hundreds of runs per task pay "cold" once.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from spot_core.backbones import load_backbone
from spot_core.encoding import Codec
from spot_core.tasks import get_task
from spot_core.tasks.cache import encoded_split

TARGET_SPEEDUP = 5.0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="sst2_v1")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--limit", type=int, default=None, help="first N rows (default: the whole split)")
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    backbone = load_backbone(args.model)
    codec = Codec(backbone.tokenizer, backbone.is_encoder_decoder, 128, 16)
    task = get_task(args.task)
    with tempfile.TemporaryDirectory() as cache:
        timings = []
        for label in ("cold", "warm", "warm"):
            start = time.perf_counter()
            rows = encoded_split(task, "train", args.data_dir, codec, args.limit, cache)
            timings.append(time.perf_counter() - start)
            print(f"{label}: {timings[-1]:.2f} s for {len(rows):,} examples", flush=True)
    warm = min(timings[1:])
    speedup = timings[0] / warm
    verdict = "meets" if speedup >= TARGET_SPEEDUP else "misses"
    print(
        f"{task.name} train with {args.model}'s tokenizer: cold {timings[0]:.2f} s, warm {warm:.2f} s, "
        f"speed-up {speedup:.1f}x ({verdict} the {TARGET_SPEEDUP:.0f}x target)"
    )
    out = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "examples": len(rows),
        "max_lengths": [128, 16],
        "seconds": {"cold": timings[0], "warm": timings[1:]},
        "speedup": speedup,
        "target_speedup": TARGET_SPEEDUP,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
