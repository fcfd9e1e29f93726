"""Memory a reused trial worker keeps between cells, with and without `pipelines.cells.release_memory`.

A Tune trial worker that is reused (`reuse_actors=True`) runs each cell in a new thread; glibc serves each thread
from its own heap arena and keeps what the cell freed there. This runs short prompt-tuning cells one after the
other, each in a new thread as Tune does, alternating two models, and prints the process's resident memory after
each cell, first without releasing anything, then with `release_memory()` after each cell. Target: after the
release, the resident memory stays within 10 % of its value after the first cell.

    python -m bench.worker_memory [--models smollm2-135m gemma3-270m] [--cells 6] [--data-dir ../shared/data]
                                  [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path
from tempfile import TemporaryDirectory

import psutil
import torch

from pipelines.cells import release_memory
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec, tune_prompt


def cell(model: str, data_dir: str, out: Path, seed: int) -> None:
    torch.set_num_threads(1)
    spec = RunSpec(
        model=model,
        task="mnli_v1",
        prompt=PromptConfig(length=20, init="sampled_vocab"),
        trainer=TrainerConfig(steps=2, eval_every=2, batch_size=8, eval_batch_size=32, lr=0.03, seed=seed),
        data_dir=data_dir,
        max_train_examples=1000,
        max_eval_examples=64,
        max_input_tokens=64,
    )
    tune_prompt(spec, out)


def series(models: list[str], cells: int, data_dir: str, release: bool) -> list[float]:
    """Resident memory (GB) after each cell."""
    process, rss = psutil.Process(), []
    with TemporaryDirectory() as tmp:
        for i in range(cells):
            worker = threading.Thread(target=cell, args=(models[i % len(models)], data_dir, Path(tmp) / str(i), i))
            worker.start()
            worker.join()
            if release:
                release_memory()
            rss.append(process.memory_info().rss / 1e9)
    return rss


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--cells", type=int, default=6)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    out: dict = {"config": {k: v for k, v in vars(args).items() if k != "json"}, "rss_gb": {}}
    for release in (False, True):
        rss = series(args.models, args.cells, args.data_dir, release)
        print(f"release_memory={release}: resident GB after each cell: {' '.join(f'{r:.2f}' for r in rss)}")
        print(f"  last / first = {rss[-1] / rss[0]:.2f} (target with release <= 1.10), max {max(rss):.2f} GB")
        out["rss_gb"]["release_memory" if release else "nothing_released"] = rss
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
