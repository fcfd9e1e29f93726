"""MPT (Wang et al. 2023, Multitask Prompt Tuning): one shared prompt P* learned from the source tasks together,
each task's prompt P* * (u_k v_k^T), elementwise, with rank-r factors of its own (`prompts.FactoredPrompt`).

Source run (`tune_mpt_source`): one run on the study's source tasks together. Its training batches draw from them
as a mixture's do (examples-proportional, SPoT's cap: the same examples in the same order as a mixture run); each
example is prompted by its own task's prompt, so P* gets the gradient of every task, and u_k, v_k that of task k's
examples. Validation scores each task with its own prompt; the run's score is their mean. Its prompt files hold
P*, the prompt a target starts from; `RunDir.best_module` holds P* and every task's factors.

This is the paper's multitask variant, without its distillation from the single-task source prompts (a KL term on
the teachers' outputs and a loss on their hidden states): distillation runs every source's teacher prompt through
the model beside the student, about twice the source stage's cost, which a CPU study cannot spend.

Target (`target_prompt`): a `prompt.rank` run of the target stage's trainer. The target's prompt starts at P*; its
factors (rank r, starting at ones) are trained, and P* with them unless `train_shared` is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spot_core.backbones import Backbone
from spot_core.config import check_int, nested
from spot_core.encoding import batch_indices
from spot_core.errors import ConfigError
from spot_core.evaluation import MixtureData
from spot_core.methods import BestModule
from spot_core.packing import row_gradients
from spot_core.prompted import PromptedLM
from spot_core.prompts import FactoredPrompt
from spot_core.run_dir import RunDir
from spot_core.tasks import members
from spot_core.tracking import Tracker
from spot_core.trainer import Trainer, TrainerConfig, _State
from spot_core.tuning import PromptConfig, RunSpec, codec_for, initial_prompt, label_words, trainer_for


@dataclass
class MPTConfig:
    """A study's MPT: the rank r of each task's factors; whether a target also trains the shared prompt (the paper
    does); the source run's trainer (default: the study's source trainer)."""

    rank: int = 1
    train_shared: bool = True
    trainer: TrainerConfig | None = None

    SETTING = "study.mpt"

    def __post_init__(self):
        check_int(self.rank, "study.mpt.rank")
        if not isinstance(self.train_shared, bool):
            raise ConfigError(f"study.mpt.train_shared must be true or false, got {self.train_shared!r}")
        if self.trainer is not None:
            self.trainer = nested(TrainerConfig, self.trainer, "study.mpt.trainer")


class MultitaskData:
    """A mixture's data (`MixtureData`: the same training examples, in the same order) with each training example's
    task index (`rows`), scored task by task, each with its own prompt."""

    def __init__(self, mixture: MixtureData):
        self.mixture, self.parts, self.codec = mixture, mixture.parts, mixture.codec
        counts = mixture.mixture.counts({part.name: len(part.train) for part in self.parts})
        self.train = mixture.train
        self.rows = [k for k, part in enumerate(self.parts) for _ in part.train[: counts[part.name]]]
        self.validation = mixture.validation

    @property
    def name(self) -> str:
        return self.mixture.name

    def evaluate(self, model: PromptedLM, batch_size: int) -> dict[str, float]:
        """Each task's metrics with its own prompt (`FactoredPrompt.task`), and `score`, their mean."""
        prompt: FactoredPrompt = model.prompt  # type: ignore[assignment]
        metrics, scores = {}, []
        try:
            for k, part in enumerate(self.parts):
                prompt.task = k
                values = part.evaluate(model, batch_size)
                metrics.update({f"{part.name}/{key}": v for key, v in values.items()})
                scores.append(values["score"])
        finally:
            prompt.task = None
        return {**metrics, "score": sum(scores) / len(scores)}


class MultitaskTrainer(Trainer):
    """The Trainer on a `MultitaskData`, whose steps prompt each example with its own task's prompt."""

    def __init__(self, config: TrainerConfig, model: PromptedLM, data: Any, *args: Any, **kwargs: Any):
        super().__init__(config, model, MultitaskData(data), *args, **kwargs)

    def _train_step(self, state: _State) -> None:
        cfg = self.config
        idx = batch_indices(state.step, cfg.batch_size, len(self.data.train), cfg.seed)  # Trainer.batch's examples
        items = [(self.data.rows[i], self.data.train[i]) for i in idx]
        targets = sum(len(e.target_ids) for _, e in items)
        prompts = self.model.prompt.task_prompts()
        weight = torch.full((prompts.shape[0],), 1.0 / targets, device=self.model.device)
        micro = cfg.micro_batch_size or cfg.batch_size
        sums = row_gradients(self.model, prompts, items, weight, self.data.codec, micro)
        self.step(state, sums.sum() / targets)


def tune_mpt_source(spec: RunSpec, rank: int, out_dir: str | Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """Runs (or resumes) MPT's source run on `spec.task`, a mixture of the source tasks; returns its result."""
    run = RunDir(out_dir)
    if run.finished():
        return run.result()
    tasks = len(members(spec.task))
    if tasks < 2:
        raise ConfigError(f"MPT's source run needs at least two source tasks, got {spec.task!r}")

    def build(backbone: Backbone) -> FactoredPrompt:
        seed = spec.trainer.seed
        init = initial_prompt(spec.prompt, backbone, codec_for(spec, backbone), label_words(spec.task) or None, seed)
        return FactoredPrompt(init, tasks, rank, generator=torch.Generator().manual_seed(seed))

    meta = {"prompt.rank": rank, "mpt.tasks": [t.name for t in members(spec.task)]}
    trainer = trainer_for(spec, out_dir, tracker, module=build, trainer=MultitaskTrainer, metadata=meta)
    trainer.callbacks.append(BestModule(trainer.model.prompt, trainer.run, spec.trainer.best_includes_init))
    result = trainer.fit()
    if run.best_module.exists():
        trainer.tracker.log_artifact(run.best_module)
    return result


def target_prompt(shared_prompt: str, length: int, config: MPTConfig) -> PromptConfig:
    """A target's prompt: P* from the source run's prompt file, times its own rank-r factors."""
    return PromptConfig(length, "file", files=[shared_prompt], rank=config.rank, train_shared=config.train_shared)
