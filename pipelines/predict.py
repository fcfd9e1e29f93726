"""A library's prompts answering a file of rows of many tasks, with one frozen model (spot_core.serving).

python -m pipelines.predict library=outputs/library/demo input=rows.jsonl
python -m pipelines.predict prompts=[a.safetensors,b.safetensors] input=rows.csv output=out.jsonl

Each input row (JSONL, or CSV/TSV with a header) names its `entry` or `task` and holds the task's fields or its
`inputs` text (spot_core.serving.prompts). The output has one JSON line per input row, in input order: the row's
number, its `id` if it had one, the entry and task that answered it, the prediction and (labels) each label's
score. Every row is checked before any is predicted, and the output is written atomically: a bad row stops the
command in one line naming the file, the line and the field, with nothing written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pipelines.errors import entry_point
from pipelines.paths import check_writable
from pipelines.user_tasks import use_tasks
from spot_core.backbones import check_backbone, load_backbone, model_dims
from spot_core.config import check_int
from spot_core.encoding import Codec
from spot_core.errors import ConfigError
from spot_core.library import Library
from spot_core.run_dir import write_atomic
from spot_core.serving import Prediction, Predictor, PromptSet, Request, RequestError
from spot_core.tasks.definitions import register_definitions
from spot_core.tasks.rows import RowError, Rows

CHUNK = 8  # batches per progress step: each chunk is predicted as one mixed set of rows


def check_prompts(cfg: DictConfig) -> PromptSet:
    """The prompts served (`library` or `prompts`, not both), checked against the model's width without loading it;
    a library's hashes verified, its task files' definitions registered."""
    if bool(cfg.library) == bool(cfg.prompts):
        raise ConfigError("give a prompt library (library=PATH) or prompt files (prompts=[PATH,...]), one of them")
    check_int(cfg.batch_size, "batch_size")
    check_int(cfg.cache_mb, "cache_mb", low=0)
    m = cfg.model
    check_backbone(m.name, m.cache_dir, m.get("prompt_once"))
    hidden = model_dims(m.name, m.cache_dir, m.get("prompt_once")).hidden_size
    use_tasks(cfg, [], None)  # task files and modules named in tasks.*
    if not cfg.library:
        return PromptSet.from_files(list(cfg.prompts), m.name, hidden)
    library = Library.open(cfg.library)  # none there, a malformed index or a changed file: fail here
    register_definitions({e.task: e.task_definition for e in library.entries if e.task_definition})
    prompts = PromptSet.from_library(library, m.name, hidden)
    if not len(prompts):
        models = sorted({e.model for e in library.entries}) or ["none"]
        raise ConfigError(f"the library {library.root} has no prompt for model {m.name} (its models: "
                          f"{', '.join(models)}): choose one with model=NAME")  # fmt: skip
    return prompts


def load_predictor(cfg: DictConfig) -> Predictor:
    """The model, loaded once, and the engine on it."""
    m = cfg.model
    backbone = load_backbone(m.name, m.cache_dir, m.dtype, m.device)
    codec = Codec(backbone.tokenizer, backbone.is_encoder_decoder, m.max_input_tokens, m.max_target_tokens)
    return Predictor(backbone, codec, cfg.batch_size, cfg.cache_mb << 20, m.get("prompt_once"))


def read_requests(path: Path, prompts: PromptSet, codec: Codec) -> list[Request]:
    """Every row of the input file as a request, checked (the first bad row raises, naming its line and field)."""
    requests = []
    try:
        for place, row in Rows.from_file(path).located():
            requests.append(prompts.request(row, codec, place))
    except (RowError, RequestError) as e:  # RowError: not JSON, or a CSV record of the wrong width
        raise RequestError(f"{e}: fix that line of the input file", e.field) from None
    if not requests:
        raise RequestError(f"{path} holds no rows: one JSON object per line, or a CSV/TSV file with a header")
    return requests


def predict_all(predictor: Predictor, requests: Sequence[Request], show: bool = True) -> list[Prediction]:
    """Every request's prediction, in chunks of mixed rows, with a progress bar on stderr."""
    chunk, out = predictor.batch_size * CHUNK, []
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"), TimeRemainingColumn())
    with Progress(*columns, disable=not show, transient=True) as progress:
        bar = progress.add_task("rows", total=len(requests))
        for start in range(0, len(requests), chunk):
            out += predictor.predict(requests[start : start + chunk])
            progress.update(bar, completed=len(out))
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    """Checks everything (nothing written for a bad invocation or a bad row), predicts, writes the output."""
    prompts = check_prompts(cfg)
    source = Path(cfg.input)
    if not source.is_file():
        raise ConfigError(f"input={source}: no such file; give a JSONL, CSV or TSV file of rows to predict")
    output = Path(cfg.output) if cfg.output else Path(cfg.out_dir) / "predictions.jsonl"
    check_writable(output.parent, "output")
    predictor = load_predictor(cfg)
    requests = read_requests(source, prompts, predictor.codec)
    predictions = predict_all(predictor, requests, show=cfg.progress)
    text = "".join(json.dumps(p.to_json(n), ensure_ascii=False) + "\n" for n, p in enumerate(predictions, 1))
    write_atomic(output, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    stats, done = predictor.cache.stats, predictor.throughput
    return {
        "output": str(output),
        "rows": len(requests),
        "entries": len({r.prompt.id for r in requests}),
        "seconds": done.seconds,
        "rows_per_second": done.rows_per_second,
        "cache_hit_rate": stats.hit_rate,
        "cache_evictions": stats.evictions,
    }


@entry_point("predict")
def main(cfg: DictConfig) -> None:
    s = run(cfg)
    print(f"{s['rows']} rows of {s['entries']} entries in {s['seconds']:.1f} s ({s['rows_per_second']:.1f} rows/s); "
          f"prompt cache hit rate {s['cache_hit_rate']:.0%}, {s['cache_evictions']} evictions; written: "
          f"{s['output']}")  # fmt: skip


if __name__ == "__main__":
    main()
