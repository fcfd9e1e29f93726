"""One projector run from names: train a PromptProjector from model A's prompts into model B; then
`project_file` projects any prompt file of A with it, for B.

Writes into `out_dir`, a `RunDir`:
    projector   the projector's weights (its shape and config in the metadata)
    metrics     the training loss per step
    result      final metrics (the projected training prompts' scores on B); it marks the run finished
An interrupted run starts again from step 0: a projector trains in minutes, a fraction of a prompt run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from spot_core.backbones import Backbone, load_backbone
from spot_core.config import plain_values
from spot_core.projector import (
    ProjectedPrompt,
    ProjectorConfig,
    ProjectorMethod,
    PromptProjector,
    fit_distance,
    fit_task,
    project,
)
from spot_core.prompt_files import read_prompt, save_prompt
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt, check_shape
from spot_core.run_dir import RunDir, write_atomic
from spot_core.tasks import check_data
from spot_core.tracking import NullTracker, Tracker
from spot_core.tuning import RunSpec, codec_for, load_data


@dataclass
class ProjectorSpec:
    """Everything one projector run needs.

    `target` is B's run template (model, data limits, device); its task is replaced by each training task.
    `train_prompts[i]` is A's prompt file for `train_tasks[i]`; `target_prompts[i]` B's (distance only).
    """

    source_model: str
    target: RunSpec
    train_tasks: Sequence[str]
    train_prompts: Sequence[str]
    target_prompts: Sequence[str] = ()
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)

    def __post_init__(self):
        if isinstance(self.target, dict):
            self.target = RunSpec(**self.target)
        if isinstance(self.projector, dict):
            self.projector = ProjectorConfig(**self.projector)
        if not self.train_tasks or len(self.train_prompts) != len(self.train_tasks):
            raise ValueError(
                f"a projector needs one source prompt per training task: {len(self.train_tasks)} tasks, "
                f"{len(self.train_prompts)} prompts"
            )
        if self.projector.method is ProjectorMethod.DISTANCE and len(self.target_prompts) != len(self.train_tasks):
            raise ValueError(
                "projector.method=distance needs the target model's own prompt for every training task "
                f"({len(self.train_tasks)} tasks, {len(self.target_prompts)} target prompts)"
            )


def fit_projector(spec: ProjectorSpec, out_dir: str | Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """Trains the projector and scores the projected training prompts on B."""
    run = RunDir(out_dir)
    if run.finished():
        return run.result()
    tracker = tracker or NullTracker()
    for task in spec.train_tasks:
        check_data(task, spec.target.data_dir)
    sources = [read_prompt(f) for f in spec.train_prompts]
    length, source_hidden = sources[0].shape
    for f, p in zip(spec.train_prompts, sources, strict=True):
        check_shape(p, length, source_hidden, what=f"prompt file {f}", model=spec.source_model, length_setting=None)
    b = load_backbone(spec.target.model, spec.target.cache_dir, spec.target.dtype, spec.target.device)
    cfg = spec.projector
    projector = PromptProjector.from_config(cfg, length, source_hidden, b.hidden_size).to(spec.target.device)
    tracker.log_params(_params(spec, length, source_hidden, b.hidden_size))
    history: list[dict[str, Any]] = []

    def on_step(step: int, loss: float) -> None:
        history.append({"step": step, "train/loss": loss})
        tracker.log_metrics({"train/loss": loss}, step)

    data = [load_data(replace(spec.target, task=t), codec_for(spec.target, b)) for t in spec.train_tasks]
    if cfg.method is ProjectorMethod.DISTANCE:
        targets = [read_prompt(f, b.hidden_size) for f in spec.target_prompts]
        for f, p in zip(spec.target_prompts, targets, strict=True):
            check_shape(p, length, b.hidden_size, what=f"prompt file {f}", model=spec.target.model, length_setting=None)
        fit_distance(projector, list(zip(sources, targets, strict=True)), cfg, on_step)
    else:
        models = [
            (PromptedLM(b, ProjectedPrompt(projector, s.to(spec.target.device)), spec.target.prompt_once), d)
            for s, d in zip(sources, data, strict=True)
        ]
        fit_task(projector, models, cfg, on_step)
    scores = _score_projected(b, projector, sources, data, cfg.eval_batch_size, spec.target.prompt_once)
    result = {
        "best/val_score": sum(scores.values()) / len(scores),
        "best/step": cfg.steps,
        "final/loss": history[-1]["train/loss"],
        **{f"train_task/{t}/val_score": s for t, s in scores.items()},
    }
    _write(run, projector, spec, history, result, tracker)
    return result


def _score_projected(
    b: Backbone,
    projector: PromptProjector,
    sources: Sequence[torch.Tensor],
    data: Sequence,
    batch_size: int,
    prompt_once: bool | None,
) -> dict[str, float]:
    """Each training task's projected prompt scored on B's validation split (how well the projector fits)."""
    scores = {}
    for prompt, d in zip(sources, data, strict=True):
        model = PromptedLM(b, SoftPrompt(project(projector, prompt)), prompt_once)
        scores[d.name] = d.evaluate(model, batch_size)["score"]
    return scores


def _params(spec: ProjectorSpec, length: int, source_hidden: int, target_hidden: int) -> dict[str, Any]:
    cfg = {f"projector/{k}": v for k, v in plain_values(asdict(spec.projector)).items()}
    return {
        **cfg,
        "source_model": spec.source_model,
        "target_model": spec.target.model,
        "train_tasks": ",".join(spec.train_tasks),
        "shape": f"[{length}, {source_hidden}] -> [{length}, {target_hidden}]",
    }


def _write(
    run: RunDir,
    projector: PromptProjector,
    spec: ProjectorSpec,
    history: list[dict[str, Any]],
    result: dict[str, Any],
    tracker: Tracker,
) -> None:
    meta = {"source_model": spec.source_model, "target_model": spec.target.model, "method": spec.projector.method.value}
    shape = {
        "length": projector.length,
        "source_hidden": projector.source_hidden,
        "target_hidden": projector.target_hidden,
        "hidden": spec.projector.hidden,
        "activation": spec.projector.activation.value,
    }
    weights = {k: v.detach().cpu().contiguous() for k, v in projector.state_dict().items()}
    strings = {k: str(v) for k, v in {**meta, **shape}.items()}
    write_atomic(run.projector, lambda tmp: save_file(weights, str(tmp), metadata=strings))
    tracker.log_artifact(run.projector)
    tracker.log_metrics({k: float(v) for k, v in result.items()}, spec.projector.steps)
    run.write_metrics(history)
    run.finish(result)


def load_projector(path: str | Path) -> tuple[PromptProjector, dict[str, str]]:
    """A projector saved by `fit_projector`, and its metadata (models, method)."""
    with safe_open(str(path), framework="pt") as f:
        meta, weights = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    projector = PromptProjector(
        int(meta["length"]),
        int(meta["source_hidden"]),
        int(meta["target_hidden"]),
        int(meta["hidden"]),
        meta["activation"],
    )
    projector.load_state_dict(weights)
    return projector.eval(), meta


def project_file(projector_path: str | Path, prompt_path: str | Path, out_path: str | Path) -> Path:
    """Projects one prompt file of the source model with a saved projector; writes a prompt file for the
    target model (its metadata names both models and the source file)."""
    projector, meta = load_projector(projector_path)
    prompt = read_prompt(prompt_path)
    check_shape(
        prompt,
        projector.length,
        projector.source_hidden,
        what=f"prompt file {prompt_path}",
        model=meta["source_model"],
        length_setting=None,
    )
    return save_prompt(
        out_path,
        project(projector, prompt),
        projected_from=str(prompt_path),
        source_model=meta["source_model"],
        target_model=meta["target_model"],
        method=meta["method"],
    )
