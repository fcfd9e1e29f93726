"""A prompt scored on a task's validation split with no training, tracked in MLflow.

python -m pipelines.evaluate task=rte_v1 prompt=file prompt.files=[outputs/train/.../best_prompt.safetensors]
python -m pipelines.evaluate task=sst2_v1 prompt=sampled_vocab prompt.length=100    # an untrained prompt

The same config groups and override words as `pipelines.train` (model, prompt, trainer: its eval_batch_size, and its
seed for an init's draw). `prompt.length` defaults to the prompt file's own length. An out_dir that holds a finished
evaluation is not scored again: its result is returned with the MLflow run that logged it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from pipelines.errors import entry_point
from pipelines.ledger import logged_run
from pipelines.paths import check_writable, resolve_data_dir
from pipelines.specs import build_spec
from pipelines.tracking import Client, check_store, open_store, tracked_run
from pipelines.user_tasks import use_tasks
from spot_core.backbones import model_dims
from spot_core.prompt_files import read_prompt
from spot_core.prompts import PromptInit, check_shape
from spot_core.run_dir import RunDir
from spot_core.tasks import check_data, get
from spot_core.tuning import PromptConfig, RunSpec, evaluate_prompt

OUT_ROOT = Path("outputs/evaluate")  # the default out_dir's root, relative to where the command runs
FROM_FILES = (PromptInit.FILE, PromptInit.WEIGHTED_AVERAGE)


def read_prompt_files(cfg: DictConfig, hidden_size: int) -> dict[str, torch.Tensor]:
    """The prompt files the init reads, by path ([L, H] each; none for a fresh init)."""
    if cfg.prompt.init not in FROM_FILES:
        return {}
    return {f: read_prompt(f, hidden_size) for f in cfg.prompt.files}


def check(cfg: DictConfig) -> RunSpec:
    """Everything a user can get wrong, checked without the model's weights, before anything is written: the task,
    the model, the settings, the validation data and the prompt files' shapes. Returns the run's spec, with
    `prompt.length` the files' length where it was left null."""
    data_dir = resolve_data_dir(cfg.data_dir)
    task = use_tasks(cfg, [cfg.task], data_dir)[0]  # a task file: read and checked here
    cfg.task = task = get(task).name  # "rte" -> "rte_v1"; an unknown name is answered with the closest ones
    check_data(task, data_dir, ("validation",))  # the only split an evaluation reads
    dims = model_dims(cfg.model.name, cfg.model.cache_dir, cfg.model.get("prompt_once"))
    loaded = read_prompt_files(cfg, dims.hidden_size)
    if cfg.prompt.length is None:
        cfg.prompt.length = next(iter(loaded.values())).shape[0] if loaded else PromptConfig.length
    spec = build_spec(cfg)
    spec.task = task
    for path, prompt in loaded.items():
        check_shape(prompt, spec.prompt.length, dims.hidden_size, what=f"prompt file {path}", model=spec.model)
    return spec


def file_digest(path: str | Path) -> str:
    """sha256 of a prompt file, or of every file of a PEFT adapter directory."""
    p, digest = Path(path), hashlib.sha256()
    for file in sorted(p.rglob("*")) if p.is_dir() else [p]:
        if file.is_file():
            digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()


def default_out_dir(spec: RunSpec) -> Path:
    """outputs/evaluate/<model>/<task>/<file stem or init>-<key>, the key a hash of the spec and the prompt files'
    contents: another setting, file or retrained file gets a folder of its own, never an earlier file's result."""
    files = [file_digest(f) for f in spec.prompt.files] if spec.prompt.init in FROM_FILES else []
    key = hashlib.sha256(json.dumps([asdict(spec), files], sort_keys=True, default=str).encode()).hexdigest()[:10]
    what = Path(spec.prompt.files[0]).name.removesuffix(".safetensors") if files else spec.prompt.init.value
    return OUT_ROOT / Path(spec.model).name / spec.task / f"{what}-{key}"


def scores(out_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """The evaluation's metrics (`val/...`, from its metrics.json) and its score."""
    (record,) = json.loads(RunDir(out_dir).metrics.read_text())
    return {**{k: v for k, v in record.items() if k != "step"}, "score": result["best/val_score"]}


def params(spec: RunSpec) -> dict[str, Any]:
    """What the evaluation ran (evaluate_prompt adds the prompt's init and length, data source and splits)."""
    return {
        "model": spec.model,
        "task": spec.task,
        "prompt.files": list(spec.prompt.files),
        "trainer.seed": spec.trainer.seed,
        "trainer.eval_batch_size": spec.trainer.eval_batch_size,
        "max_eval_examples": spec.max_eval_examples,
        "model.max_input_tokens": spec.max_input_tokens,
        "model.max_target_tokens": spec.max_target_tokens,
        "model.prompt_once": spec.prompt_once,
    }


def evaluate_logged(client: Client, experiment_id: str, spec: RunSpec, out_dir: Path) -> tuple[str, dict]:
    """evaluate_prompt in a new tracked MLflow run (`TrackedRun`: FAILED with an `error` tag if it raises, KILLED
    if it is stopped): (run id, result)."""
    name = f"evaluate-{spec.task}-{Path(spec.model).name}-{spec.prompt.init.value}"
    tags = {"task": spec.task, "model": spec.model, "out_dir": str(out_dir)}
    with tracked_run(client, experiment_id, name=name, tags=tags) as run:
        run.tracker.log_params(params(spec))
        result = evaluate_prompt(spec, out_dir, run.tracker)
    return run.run_id, result


def run(cfg: DictConfig) -> dict[str, Any]:
    spec = check(cfg)  # nothing is written before these checks
    out_dir = check_writable(cfg.out_dir or default_out_dir(spec), "out_dir")
    check_store(cfg.tracking.uri)  # an unreachable server, an unwritable store folder
    client, experiment_id = open_store(cfg.tracking.uri, cfg.tracking.experiment)
    if RunDir(out_dir).finished():
        run_id, result = logged_run(client, experiment_id, out_dir), RunDir(out_dir).result()
    else:
        run_id, result = evaluate_logged(client, experiment_id, spec, out_dir)
    return {**scores(out_dir, result), "run_id": run_id, "out_dir": str(out_dir)}


@entry_point("evaluate")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print("\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
