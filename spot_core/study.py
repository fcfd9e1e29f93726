"""A transfer study as cells: what to train, from which prompt, with which seed, each under a deterministic key.

Stages (SPoT section 3):
    source    prompt tuning on each source task or mixture (sampled-vocab init): the source prompt (best
              checkpoint) and the source's task embedding (the prompt after `embedding_step` steps).
    target    prompt tuning from scratch on each target (class-label init): the baseline and the target's
              task embedding.
    transfer  every (source run, target, seed): the target prompt starts from the source prompt.

A cell's key hashes everything that determines its result (stage, model, task version, initialisation with
the source cell's key, seed, trainer settings, data limits), never paths: the same study run again, or
extended with more seeds or tasks, finds finished cells by key and trains only the missing ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from spot_core.tasks import get, get_task
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec


class Stage(StrEnum):
    SOURCE = "source"
    TARGET = "target"
    TRANSFER = "transfer"


@dataclass
class StudyConfig:
    """A study's design. Task names may be unversioned (`rte` = its latest version) or mixtures (sources)."""

    name: str
    model: str
    sources: Sequence[str]
    targets: Sequence[str]
    seeds: Sequence[int] = (0, 1, 2)
    source_seeds: Sequence[int] = (0,)
    prompt_length: int = 100
    source_init: str = "sampled_vocab"
    target_init: str = "class_labels"
    source_trainer: TrainerConfig = field(default_factory=TrainerConfig)
    target_trainer: TrainerConfig = field(default_factory=TrainerConfig)
    max_input_len: int = 256
    max_target_len: int = 16
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    data_dir: str | None = None
    cache_dir: str | None = None
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self):
        if isinstance(self.source_trainer, dict):
            self.source_trainer = TrainerConfig(**self.source_trainer)
        if isinstance(self.target_trainer, dict):
            self.target_trainer = TrainerConfig(**self.target_trainer)
        self.sources = [get(n).name for n in self.sources]  # unknown names: UnknownNameError with hints
        self.targets = [get_task(n).name for n in self.targets]
        for name, values in (
            ("sources", self.sources),
            ("targets", self.targets),
            ("seeds", self.seeds),
            ("source_seeds", self.source_seeds),
        ):
            if not values or len(set(values)) != len(values):
                raise ValueError(f"study.{name} must be a non-empty list without repeats, got {list(values)}")
        PromptConfig(length=self.prompt_length, init=self.source_init)  # validates both inits
        PromptConfig(length=self.prompt_length, init=self.target_init)


@dataclass(frozen=True)
class Cell:
    """One training run of the study; a transfer names the source cell it starts from."""

    stage: Stage
    task: str
    seed: int
    init: str
    identity: str  # canonical JSON of what determines the result
    source: Cell | None = None

    @property
    def key(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        via = f"{self.source.task}->" if self.source else ""
        return f"{self.stage}:{via}{self.task}:s{self.seed}"

    def out_dir(self, root: str | Path) -> Path:
        via = f"{self.source.task}-to-" if self.source else ""
        return Path(root) / self.stage.value / f"{via}{self.task}-s{self.seed}-{self.key}"


def _init(task: str, wanted: str) -> str:
    """SPoT's class-label init where the task has label words; the rest (generation tasks) sampled vocab."""
    if wanted == "class_labels" and not getattr(get(task), "label_words", None):
        return "sampled_vocab"
    return wanted


def _cell(study: StudyConfig, stage: Stage, task: str, seed: int, source: Cell | None = None) -> Cell:
    trainer = study.source_trainer if stage is Stage.SOURCE else study.target_trainer
    if stage is Stage.TRANSFER:
        init = "file"
    else:
        init = _init(task, study.source_init if stage is Stage.SOURCE else study.target_init)
    identity = {
        "stage": stage.value,
        "model": study.model,
        "task": task,
        "seed": seed,
        "init": {"kind": init, "length": study.prompt_length, "source": source.key if source else None},
        "trainer": {**asdict(replace(trainer, seed=seed)), "optimizer": str(trainer.optimizer)},
        "data": [study.max_input_len, study.max_target_len, study.max_train_examples, study.max_eval_examples],
    }
    return Cell(stage, task, seed, init, json.dumps(identity, sort_keys=True), source)


def plan(study: StudyConfig) -> list[Cell]:
    """Every cell of the source, target and transfer stages, in stage order."""
    sources = [_cell(study, Stage.SOURCE, t, s) for t in study.sources for s in study.source_seeds]
    targets = [_cell(study, Stage.TARGET, t, s) for t in study.targets for s in study.seeds]
    transfers = [_cell(study, Stage.TRANSFER, t, s, src) for src in sources for t in study.targets for s in study.seeds]
    return sources + targets + transfers


def run_spec(study: StudyConfig, cell: Cell, root: str | Path) -> RunSpec:
    """The RunSpec of a cell; a transfer reads its source cell's best prompt under `root`."""
    files = [str(cell.source.out_dir(root) / "best_prompt.safetensors")] if cell.source else []
    return RunSpec(
        model=study.model,
        task=cell.task,
        prompt=PromptConfig(length=study.prompt_length, init=cell.init, files=files),
        trainer=replace(study.source_trainer if cell.stage is Stage.SOURCE else study.target_trainer, seed=cell.seed),
        data_dir=study.data_dir,
        cache_dir=study.cache_dir,
        max_input_len=study.max_input_len,
        max_target_len=study.max_target_len,
        max_train_examples=study.max_train_examples,
        max_eval_examples=study.max_eval_examples,
        device=study.device,
        dtype=study.dtype,
    )


def cell_tags(cell: Cell, study: StudyConfig) -> dict[str, Any]:
    """What a tracker records to find the cell again: the ledger's key and the matrix coordinates."""
    return {
        "study": study.name,
        "stage": cell.stage.value,
        "cell_key": cell.key,
        "task": cell.task,
        "source": cell.source.task if cell.source else "",
        "target": cell.task if cell.stage is not Stage.SOURCE else "",
        "seed": str(cell.seed),
    }
