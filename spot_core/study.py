"""A transfer study as cells: what to train, from which prompt, with which seed, each under a deterministic key.

Stages (SPoT section 3):
    source    prompt tuning on each source task or mixture (sampled-vocab init): the source prompt (best
              checkpoint) and the source's task embedding (the prompt after `embedding_step` steps).
    target    prompt tuning from scratch on each target (class-label init): the baseline and the target's
              task embedding.
    transfer  every (source run, target, seed): the target prompt starts from the source prompt.
    retrieval_mixture / retrieval
              SPoT's retrieval strategies for each target and k, from source runs ranked by task-embedding
              similarity: the top-k weighted average of their prompts as the init; and a prompt trained on the
              mixture of the top-k source tasks plus the target (retrieval_mixture), whose final checkpoint is the
              init. Best-of-top-k needs no runs of its own (it reads the transfer grid).

A cell's key hashes everything that determines its result (stage, model, task version, initialisation with
the source cell's key, seed, trainer settings, data limits), never paths: the same study run again, or
extended with more seeds or tasks, finds finished cells by key and trains only the missing ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from spot_core.cross_model import CrossModelConfig
from spot_core.prompts import similarity_weights
from spot_core.similarity import Similarity, TaskEmbedding
from spot_core.tasks import get, get_task, members
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec


class Stage(StrEnum):
    SOURCE = "source"
    TARGET = "target"
    TRANSFER = "transfer"
    RETRIEVAL_MIXTURE = "retrieval_mixture"
    RETRIEVAL = "retrieval"
    # Su et al. 2022 (spot_core.transferability plans these)
    ZERO_SHOT = "zero_shot"  # a source prompt scored on a target, no training
    NEURONS = "neurons"  # the FFN neurons a run's task-embedding prompt activates
    CROSS_SOURCE = "cross_source"  # the other model's own prompt on a task (from scratch)
    PROJECTOR = "projector"  # the MLP from the study model's prompts into the other model
    CROSS_ZERO_SHOT = "cross_zero_shot"  # a projected prompt scored on the other model, no training
    CROSS_TRANSFER = "cross_transfer"  # the other model trained from a projected prompt


class Job(StrEnum):
    """What running a cell means."""

    TUNE = "tune"  # prompt tuning (spot_core.tuning.tune_prompt)
    EVALUATE = "evaluate"  # score the initial prompt only (spot_core.tuning.evaluate_prompt)
    PROJECTOR = "projector"  # train a projector (spot_core.cross_model.fit_projector)
    NEURONS = "neurons"  # record activated neurons (spot_core.neurons.record_neurons)


JOBS = {
    Stage.ZERO_SHOT: Job.EVALUATE,
    Stage.CROSS_ZERO_SHOT: Job.EVALUATE,
    Stage.PROJECTOR: Job.PROJECTOR,
    Stage.NEURONS: Job.NEURONS,
}


PROJECTED = "projected_prompt.safetensors"  # a cross-model cell's prompt, projected from the source's


class Retrieval(StrEnum):
    WEIGHTED_AVERAGE = "weighted_average"
    MIXTURE = "mixture"


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
    retrieval_ks: Sequence[int] = (3, 6, 9, 12)
    retrieval: Sequence[str] = ("weighted_average", "mixture")
    retrieval_similarity: str = "avg_tokens"
    task_embedding: str = "prompt"  # or "displacement" (the early checkpoint minus the initial prompt)
    cross_model: CrossModelConfig | None = None  # Su et al.'s projector into another model
    prompt_once: bool | None = None  # the model's prompt-once switch (not in the keys: results differ by rounding)

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
        self.retrieval = [Retrieval(r) for r in self.retrieval]
        Similarity(self.retrieval_similarity)
        self.task_embedding = TaskEmbedding(self.task_embedding).value
        if any(k < 1 for k in self.retrieval_ks):
            raise ValueError(f"study.retrieval_ks must be >= 1, got {list(self.retrieval_ks)}")
        PromptConfig(length=self.prompt_length, init=self.source_init)  # validates both inits
        PromptConfig(length=self.prompt_length, init=self.target_init)
        if isinstance(self.cross_model, dict):
            self.cross_model = CrossModelConfig(**self.cross_model)
        if self.cross_model:
            self.cross_model.check(self.sources, self.model)


@dataclass(frozen=True)
class Cell:
    """One training run of the study; a transfer names the source cell it starts from."""

    stage: Stage
    task: str
    seed: int
    init: str
    identity: str  # canonical JSON of what determines the result
    source: Cell | None = None  # transfer / mixture init: the cell whose prompt starts this one
    blend: tuple[tuple[Cell, float], ...] = ()  # weighted-average init: (source cell, weight)
    k: int = 0  # retrieval: how many top-ranked source runs
    model: str = ""  # cross-model cells: the other model ("" = the study's)
    projector: Cell | None = None  # cross-model cells: the projector that maps the source prompt
    parts: tuple[Cell, ...] = ()  # a projector: the runs whose prompts it learns from

    @property
    def key(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:16]

    @property
    def job(self) -> Job:
        return JOBS.get(self.stage, Job.TUNE)

    @property
    def inputs(self) -> list[Cell]:
        """The cells that must finish before this one: its source (or weighted-average blend), its projector,
        a projector's training runs."""
        mine = [c for c, _ in self.blend] or ([self.source] if self.source else [])
        return mine + ([self.projector] if self.projector else []) + list(self.parts)

    @property
    def origin(self) -> str:
        """Where the prompt comes from: the source task, or the retrieval strategy and k."""
        if self.blend:
            return f"wavg-top{self.k}"
        if self.stage is Stage.RETRIEVAL:
            return f"mix-top{self.k}"
        if self.stage is Stage.NEURONS:
            return ""
        return self.source.task if self.source else ""

    @property
    def label(self) -> str:
        via = f"{self.origin}->" if self.origin else ""
        on = f"@{self.model}" if self.model else ""
        return f"{self.stage}:{via}{self.task}{on}:s{self.seed}"

    @property
    def prompt_file(self) -> str:
        """The prompt later cells start from: SPoT's best checkpoint; a retrieval mixture's final one."""
        return "final_prompt.safetensors" if self.stage is Stage.RETRIEVAL_MIXTURE else "best_prompt.safetensors"

    def out_dir(self, root: str | Path) -> Path:
        via = f"{self.origin}-to-" if self.origin else ""
        name = self.task if len(self.task) < 60 else f"top{self.k}-mixture" if self.k else "tasks"
        return Path(root) / self.stage.value / f"{via}{name}-s{self.seed}-{self.key}"


def _init(task: str, wanted: str) -> str:
    """SPoT's class-label init where the task has label words; the rest (generation tasks) sampled vocab."""
    if wanted == "class_labels" and not getattr(get(task), "label_words", None):
        return "sampled_vocab"
    return wanted


SOURCE_LIKE = (Stage.SOURCE, Stage.RETRIEVAL_MIXTURE, Stage.CROSS_SOURCE, Stage.CROSS_TRANSFER)
NO_TARGET = (Stage.SOURCE, Stage.RETRIEVAL_MIXTURE, Stage.CROSS_SOURCE, Stage.PROJECTOR, Stage.NEURONS)
CROSS_MODEL = (Stage.CROSS_SOURCE, Stage.CROSS_ZERO_SHOT, Stage.CROSS_TRANSFER)


def _trainer(study: StudyConfig, stage: Stage) -> TrainerConfig:
    if stage in CROSS_MODEL and study.cross_model and study.cross_model.trainer:
        return study.cross_model.trainer
    return study.source_trainer if stage in SOURCE_LIKE else study.target_trainer


def _cell(
    study: StudyConfig,
    stage: Stage,
    task: str,
    seed: int,
    source: Cell | None = None,
    blend: tuple[tuple[Cell, float], ...] = (),
    k: int = 0,
    model: str = "",
    projector: Cell | None = None,
) -> Cell:
    if blend:
        init = "weighted_average"
    elif source:
        init = "file"
    else:
        init = _init(task, study.source_init if stage in SOURCE_LIKE else study.target_init)
    trainer = _trainer(study, stage)
    identity = {
        "stage": stage.value,
        "model": model or study.model,
        "task": task,
        "seed": seed,
        "init": {
            "kind": init,
            "length": study.prompt_length,
            "source": source.key if source else None,
            "blend": [[c.key, round(w, 6)] for c, w in blend],
        },
        "trainer": {**asdict(replace(trainer, seed=seed)), "optimizer": str(trainer.optimizer)},
        "data": [study.max_input_len, study.max_target_len, study.max_train_examples, study.max_eval_examples],
    }
    if stage in (Stage.RETRIEVAL, Stage.RETRIEVAL_MIXTURE):
        identity["retrieval"] = {"k": k, "similarity": study.retrieval_similarity}
        if study.task_embedding != TaskEmbedding.PROMPT:  # keys of prompt-embedding studies stay as they were
            identity["retrieval"]["embedding"] = study.task_embedding
    if projector:
        identity["init"]["projector"] = projector.key
    if JOBS.get(stage) is Job.EVALUATE:  # nothing is trained: the trainer's settings do not change the score
        del identity["trainer"]
    cell = Cell(stage, task, seed, init, json.dumps(identity, sort_keys=True), source, blend, k, model, projector)
    return cell


def plan(study: StudyConfig) -> list[Cell]:
    """Every cell of the source, target and transfer stages, in stage order."""
    sources = [_cell(study, Stage.SOURCE, t, s) for t in study.sources for s in study.source_seeds]
    targets = [_cell(study, Stage.TARGET, t, s) for t in study.targets for s in study.seeds]
    transfers = [_cell(study, Stage.TRANSFER, t, s, src) for src in sources for t in study.targets for s in study.seeds]
    return sources + targets + transfers


def plan_retrieval(study: StudyConfig, rankings: Mapping[str, Sequence[tuple[Cell, float]]]) -> list[Cell]:
    """The retrieval cells, from each target's source runs ranked most similar first (with their similarity).
    Mixture prompts (stage retrieval_mixture) come first in the list; k larger than the candidates is skipped."""
    mixtures, targets = [], []
    for target, ranked in rankings.items():
        for k in (k for k in study.retrieval_ks if k <= len(ranked)):
            top = list(ranked[:k])
            if Retrieval.WEIGHTED_AVERAGE in study.retrieval and sum(s for _, s in top) > 0:
                blend = tuple(zip((c for c, _ in top), similarity_weights([s for _, s in top]), strict=True))
                targets += [_cell(study, Stage.RETRIEVAL, target, seed, blend=blend, k=k) for seed in study.seeds]
            if Retrieval.MIXTURE in study.retrieval:
                tasks = dict.fromkeys([t.name for c, _ in top for t in members(c.task)] + [target])
                mix = _cell(study, Stage.RETRIEVAL_MIXTURE, "+".join(tasks), study.source_seeds[0], k=k)
                mixtures.append(mix)
                targets += [_cell(study, Stage.RETRIEVAL, target, seed, source=mix, k=k) for seed in study.seeds]
    return mixtures + targets


def prompt_files(cell: Cell, root: str | Path) -> list[str]:
    """The prompt files a cell starts from: its sources' prompts, or (cross-model) its projected prompt,
    which the cell writes into its own folder from the projector before it starts."""
    if cell.projector:
        return [str(cell.out_dir(root) / PROJECTED)]
    return [str(c.out_dir(root) / c.prompt_file) for c in [c for c, _ in cell.blend] or [cell.source] if c]


def run_spec(study: StudyConfig, cell: Cell, root: str | Path) -> RunSpec:
    """The RunSpec of a cell; transfers and retrieval runs read their source cells' prompts under `root`."""
    return RunSpec(
        model=cell.model or study.model,
        task=cell.task,
        prompt=PromptConfig(
            length=study.prompt_length,
            init=cell.init,
            files=prompt_files(cell, root),
            weights=[w for _, w in cell.blend],
        ),
        trainer=replace(_trainer(study, cell.stage), seed=cell.seed),
        **data_fields(study, cell.model),
    )


def data_fields(study: StudyConfig, model: str = "") -> dict[str, Any]:
    """The RunSpec fields every cell of a study shares: data, its limits, where and how models load.

    `model`: another model than the study's (cross-model cells). The study model's prompt-once switch carries
    over to it when it is off; on, prompt-once applies there wherever it can (not to an encoder-decoder B)."""
    names = ("data_dir", "cache_dir", "max_input_len", "max_target_len", "max_train_examples", "max_eval_examples")
    fields = {name: getattr(study, name) for name in (*names, "device", "dtype")}
    other = model and model != study.model
    return {**fields, "prompt_once": None if other and study.prompt_once else study.prompt_once}


def cell_tags(cell: Cell, study: StudyConfig) -> dict[str, Any]:
    """What a tracker records to find the cell again: the ledger's key and the matrix coordinates."""
    return {
        "study": study.name,
        "stage": cell.stage.value,
        "cell_key": cell.key,
        "task": cell.task,
        "source": cell.origin,
        "k": str(cell.k),
        "target": "" if cell.stage in NO_TARGET else cell.task,
        "model": cell.model or study.model,
        "seed": str(cell.seed),
        "source_key": cell.source.key if cell.source else "",  # the source run a transfer starts from
    }
