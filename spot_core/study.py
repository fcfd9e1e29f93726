"""A transfer study's design and its cells: what to train, from which prompt, with which seed, each under a
deterministic key. Which cells each stage plans, and what a cell runs, is the stage catalogue's (spot_core.stages).

A cell's key hashes everything that determines its result (stage, model, task version, initialisation with
the source cell's key, seed, trainer settings, data limits), never paths: the same study run again, or
extended with more seeds or tasks, finds finished cells by key and trains only the missing ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spot_core.config import check_int, nested, parse_choice
from spot_core.errors import ConfigError
from spot_core.methods.attempt import AttemptConfig
from spot_core.methods.mpt import MPTConfig
from spot_core.projector import ProjectorConfig
from spot_core.prompts import PromptInit, check_class_label_length
from spot_core.run_dir import RunDir
from spot_core.similarity import Similarity, TaskEmbedding
from spot_core.tags import STRATEGY_TAG, Retrieval
from spot_core.tasks import get, get_task, members
from spot_core.tasks.definitions import fingerprint
from spot_core.tasks.source import fallback_configs_read
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec, check_data_settings, label_words


@dataclass
class CrossModelConfig:
    """A study's cross-model stage: a projector from the study model's source prompts into `model`.

    The projector learns from the source prompts of `train_tasks`; the source prompts of `tasks` (default: every
    source) are then projected and scored on `model` zero-shot and as its initial prompt, beside `model`'s own
    prompt for the same task trained from scratch with `trainer` (default: the study's source trainer).
    """

    model: str
    train_tasks: Sequence[str]
    tasks: Sequence[str] = ()
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    trainer: TrainerConfig | None = None

    SETTING = "study.cross_model"

    def __post_init__(self):
        self.projector = nested(ProjectorConfig, self.projector, "study.cross_model.projector")
        if self.trainer is not None:
            self.trainer = nested(TrainerConfig, self.trainer, "study.cross_model.trainer")
        self.train_tasks = [get_task(t).name for t in self.train_tasks]
        self.tasks = [get_task(t).name for t in self.tasks]

    def check(self, sources: Sequence[str], study_model: str) -> None:
        """Both task lists must name the study's source tasks (their prompts are what gets projected)."""
        if self.model == study_model:
            raise ConfigError(f"study.cross_model.model must be another model than the study's ({study_model!r})")
        if not self.train_tasks:
            raise ConfigError("study.cross_model.train_tasks must name at least one source task")
        for name in ("train_tasks", "tasks"):
            unknown = [t for t in getattr(self, name) if t not in sources]
            if unknown:
                raise ConfigError(f"study.cross_model.{name} {unknown} are not sources of the study {list(sources)}")
        self.tasks = list(self.tasks) or list(sources)


@dataclass
class StudyPrompt:
    """A study's prompts: one length for all, SPoT's init for source-like runs (sources, mixtures, the other
    model's own prompts) and for targets trained from scratch (the baseline)."""

    length: int = 100
    source_init: PromptInit = PromptInit.SAMPLED_VOCAB
    target_init: PromptInit = PromptInit.CLASS_LABELS

    SETTING = "study.prompt"

    def __post_init__(self):
        check_int(self.length, "study.prompt.length")
        fresh = [i for i in PromptInit if i not in (PromptInit.FILE, PromptInit.WEIGHTED_AVERAGE, PromptInit.ZEROS)]
        for name in ("source_init", "target_init"):
            value = parse_choice(PromptInit, getattr(self, name), f"study.prompt.{name}")
            if value not in fresh:
                allowed = ", ".join(fresh)
                raise ConfigError(f"study.prompt.{name} must be one of: {allowed} (the study chains prompts itself)")
            setattr(self, name, value)


@dataclass
class StudyConfig:
    """A study's design. Task names may be unversioned (`rte` = its latest version) or mixtures (sources)."""

    name: str
    model: str
    sources: Sequence[str]
    targets: Sequence[str]
    seeds: Sequence[int] = (0, 1, 2)
    source_seeds: Sequence[int] = (0,)
    prompt: StudyPrompt = field(default_factory=StudyPrompt)
    source_trainer: TrainerConfig = field(default_factory=TrainerConfig)
    target_trainer: TrainerConfig = field(default_factory=TrainerConfig)
    max_input_tokens: int = 256
    max_target_tokens: int = 16
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    data_dir: str | None = None
    cache_dir: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    retrieval_ks: Sequence[int] = (3, 6, 9, 12)
    retrieval: Sequence[Retrieval] = (Retrieval.WEIGHTED_AVERAGE, Retrieval.MIXTURE)
    retrieval_similarity: Similarity = Similarity.AVG_TOKENS
    task_embedding: TaskEmbedding = TaskEmbedding.PROMPT  # or displacement: the early checkpoint minus the init
    cross_model: CrossModelConfig | None = None  # Su et al.'s projector into another model
    attempt: AttemptConfig = field(default_factory=AttemptConfig)  # ATTEMPT's target runs (stage attempt)
    mpt: MPTConfig = field(default_factory=MPTConfig)  # MPT's source and target runs (stage mpt)
    # model-tuning cells (stages model_tuning, multitask_model_tuning): conf/trainer/model_tuning.yaml
    model_trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(lr=1e-3, scale_parameter=True, weight_decay=0.0, keep_checkpoints=False)
    )
    prompt_once: bool | None = None  # the model's prompt-once switch (not in the keys: results differ by rounding)
    # the model that model-tuning cells fine-tune, None: the study's (SPoT's model-tuning rows: the original T5 1.1
    # checkpoint of the LM-adapted one its prompts use)
    model_tuning_model: str | None = None

    def __post_init__(self):
        self.prompt = nested(StudyPrompt, self.prompt, "study.prompt")
        self.source_trainer = nested(TrainerConfig, self.source_trainer, "study.source_trainer")
        self.target_trainer = nested(TrainerConfig, self.target_trainer, "study.target_trainer")
        self.model_trainer = nested(TrainerConfig, self.model_trainer, "study.model_trainer")
        self.attempt = nested(AttemptConfig, self.attempt, "study.attempt")
        self.mpt = nested(MPTConfig, self.mpt, "study.mpt")
        self.sources = [get(n).name for n in self.sources]  # unknown names: UnknownNameError with hints
        self.targets = [get_task(n).name for n in self.targets]
        for name, values in (
            ("sources", self.sources),
            ("targets", self.targets),
            ("seeds", self.seeds),
            ("source_seeds", self.source_seeds),
        ):
            if not values or len(set(values)) != len(values):
                raise ConfigError(f"study.{name} must be a non-empty list without repeats, got {list(values)}")
        self.retrieval = [parse_choice(Retrieval, r, "study.retrieval") for r in self.retrieval]
        self.retrieval_similarity = parse_choice(Similarity, self.retrieval_similarity, "study.retrieval_similarity")
        self.task_embedding = parse_choice(TaskEmbedding, self.task_embedding, "study.task_embedding")
        if any(k < 1 for k in self.retrieval_ks):
            raise ConfigError(f"study.retrieval_ks must be >= 1, got {list(self.retrieval_ks)}")
        if self.cross_model is not None:
            self.cross_model = nested(CrossModelConfig, self.cross_model, "study.cross_model")
            self.cross_model.check(self.sources, self.model)
        if self.model_tuning_model == self.model:
            self.model_tuning_model = None  # the same cells, the same keys
        check_data_settings(self, "study.")
        self.check_inits()

    def check_inits(self) -> None:
        """Every source and target that starts from class labels has a prompt long enough for its label words:
        a design error found here, before any cell runs (the rule: `prompts.check_class_label_length`)."""
        for kind, tasks, init in (
            ("source", self.sources, self.prompt.source_init),
            ("target", self.targets, self.prompt.target_init),
        ):
            for task in tasks:
                if initial(task, init) == PromptInit.CLASS_LABELS:
                    words = len(label_words(task))
                    who = f"study {kind} {task!r}: "
                    setting = f"study.prompt.{kind}_init"
                    check_class_label_length(words, self.prompt.length, who, "study.prompt.length", setting)


@dataclass(frozen=True)
class Cell:
    """One run of the study; a transfer names the source cell it starts from. What differs by stage (how it is
    shown, which prompt later cells take from it) is set by the stage that makes it (`make_cell`)."""

    stage: str  # its kind: a `Stage` of the built-in catalogue, or the kind an added stage names
    task: str
    seed: int
    init: str
    identity: str  # canonical JSON of what determines the result
    source: Cell | None = None  # transfer / mixture / MPT init: the cell whose prompt starts this one
    blend: tuple[tuple[Cell, float], ...] = ()  # weighted-average init: (source cell, weight)
    k: int = 0  # retrieval, ATTEMPT: how many top-ranked source runs
    model: str = ""  # cross-model cells, model tuning on study.model_tuning_model: that model ("" = the study's)
    projector: Cell | None = None  # cross-model cells: the projector that maps the source prompt
    parts: tuple[Cell, ...] = ()  # a projector: the runs whose prompts it learns from; ATTEMPT: those it mixes
    target: str = ""  # the target task the run is scored as (the matrices' column); "" for source-like runs
    trainer: TrainerConfig | None = field(default=None, compare=False)  # how it trains (seed included)
    origin: str = ""  # where its prompt comes from, for display: a source task, "wavg-top3", "attempt-all", ...
    retrieval: str = ""  # a retrieval cell's strategy (a `Retrieval` value), its `retrieval` tag
    prompt_file: str = RunDir.BEST_PROMPT  # the prompt later cells start from (SPoT: the best checkpoint)

    @property
    def key(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:16]

    @property
    def inputs(self) -> list[Cell]:
        """The cells that must finish before this one: its source (or weighted-average blend), its projector,
        a projector's training runs."""
        mine = [c for c, _ in self.blend] or ([self.source] if self.source else [])
        return mine + ([self.projector] if self.projector else []) + list(self.parts)

    @property
    def label(self) -> str:
        via = f"{self.origin}->" if self.origin else ""
        on = f"@{self.model}" if self.model else ""
        return f"{self.stage}:{via}{self.task}{on}:s{self.seed}"

    def out_dir(self, root: str | Path) -> Path:
        via = f"{self.origin}-to-" if self.origin else ""
        name = self.task if len(self.task) < 60 else f"top{self.k}-mixture" if self.k else "tasks"
        return Path(root) / str(self.stage) / f"{via}{name}-s{self.seed}-{self.key}"

    def run_dir(self, root: str | Path) -> RunDir:
        return RunDir(self.out_dir(root))


def initial(task: str, wanted: str) -> str:
    """SPoT's class-label init where the task has label words; the rest (generation tasks) sampled vocab."""
    if wanted == "class_labels" and not getattr(get(task), "label_words", None):
        return "sampled_vocab"
    return wanted


def make_cell(
    study: StudyConfig,
    stage: str,
    task: str,
    seed: int,
    *,
    trainer: TrainerConfig,
    trained: bool = True,
    init: str = "",
    target: str = "",
    source: Cell | None = None,
    blend: tuple[tuple[Cell, float], ...] = (),
    k: int = 0,
    model: str = "",
    projector: Cell | None = None,
    parts: tuple[Cell, ...] = (),
    method: dict[str, Any] | None = None,
    keyed: dict[str, Any] | None = None,
    origin: str | None = None,
    retrieval: str = "",
    prompt_file: str = RunDir.BEST_PROMPT,
) -> Cell:
    """A cell that trains (or, with `trainer=None`, only scores) a prompt of the study's length.

    Args:
        trainer: the stage's trainer settings (the cell's seed replaces theirs).
        trained: False for a cell that scores its initial prompt without training: the trainer's settings do
            not change its result, so they are not in its key.
        init: the initialiser when the prompt starts from no other cell's (see `initial`).
        target: the target task the run is scored as, "" for a source-like run.
        parts: the runs whose prompts it mixes (ATTEMPT).
        method: a transfer method's settings that change the result (ATTEMPT's attention, MPT's rank).
        keyed: more of what determines the result, entered into the key as they are (retrieval's k).
        origin: where its prompt comes from, for display (default: its source's task).
        retrieval: a retrieval cell's strategy.
        prompt_file: the prompt file later cells start from.
    """
    if blend:
        init = "weighted_average"
    elif source:
        init = "file"
    identity = {
        "stage": str(stage),
        "model": model or study.model,
        "task": task,
        "seed": seed,
        "init": {
            "kind": init,
            "length": study.prompt.length,
            "source": source.key if source else None,
            "blend": [[c.key, round(w, 6)] for c, w in blend],
        },
        "data": data_limits(study),
        **data_identity(study, task),
    }
    trainer = replace(trainer, seed=seed)
    if trained:
        identity["trainer"] = trainer.identity()
    identity.update(keyed or {})
    if projector:
        identity["init"]["projector"] = projector.key
    if parts:
        identity["init"]["parts"] = [c.key for c in parts]
    if method:
        identity["method"] = method
    text = json.dumps(identity, sort_keys=True)
    origin = (source.task if source else "") if origin is None else origin
    return Cell(stage, task, seed, init, text, source, blend, k, model, projector, parts, target, trainer, origin,
                retrieval, prompt_file)  # fmt: skip


def data_limits(study: StudyConfig) -> list[int | None]:
    """The data settings every cell's key includes."""
    return [study.max_input_tokens, study.max_target_tokens, study.max_train_examples, study.max_eval_examples]


def data_identity(study: StudyConfig, task: str) -> dict[str, Any]:
    """What of a cell's data, beyond its limits, enters its key: `data_configs`, each task (of a mixture: each
    member) that the study's mirror serves from a fallback configuration instead of its own (WinoGrande L for XL)
    -> that configuration, since it changes the result; and `task_definitions`, each task defined by a task file ->
    its definition's fingerprint (an edited template trains again). Empty where every task is built in and reads its
    own `hub_config` (always, from the hub), so those cells keep their keys."""
    other = fallback_configs_read(task, study.data_dir)
    defined = {t.name: fingerprint(t.name) for t in members(task) if fingerprint(t.name)}
    return {**({"data_configs": other} if other else {}), **({"task_definitions": defined} if defined else {})}


def prompt_files(cell: Cell, root: str | Path) -> list[str]:
    """The prompt files a cell starts from: its sources' prompts, or (cross-model) its projected prompt,
    which the cell writes into its own folder from the projector before it starts."""
    if cell.projector:
        return [str(cell.run_dir(root).projected_prompt)]
    return [str(c.out_dir(root) / c.prompt_file) for c in [c for c, _ in cell.blend] or [cell.source] if c]


def run_spec(study: StudyConfig, cell: Cell, root: str | Path) -> RunSpec:
    """The RunSpec of a cell; transfers and retrieval runs read their source cells' prompts under `root`."""
    return RunSpec(
        model=cell.model or study.model,
        task=cell.task,
        prompt=PromptConfig(
            length=study.prompt.length,
            init=cell.init,
            files=prompt_files(cell, root),
            weights=[w for _, w in cell.blend],
        ),
        trainer=cell.trainer,
        **data_fields(study, cell.model),
    )


def data_fields(study: StudyConfig, model: str = "") -> dict[str, Any]:
    """The RunSpec fields every cell of a study shares: data, its limits, where and how models load.

    `model`: another model than the study's (cross-model cells). The study model's prompt-once switch carries
    over to it when it is off; on, prompt-once applies there wherever it can (not to an encoder-decoder B)."""
    names = ("max_input_tokens", "max_target_tokens", "max_train_examples", "max_eval_examples")
    fields = {name: getattr(study, name) for name in (*names, "data_dir", "cache_dir", "device", "dtype")}
    other = model and model != study.model
    return {**fields, "prompt_once": None if other and study.prompt_once else study.prompt_once}


def cell_tags(cell: Cell, study: StudyConfig) -> dict[str, str]:
    """What a tracker records to find the cell again: the ledger's key and the matrix coordinates (TAGS)."""
    return {
        "study": study.name,
        "model": cell.model or study.model,
        "cell_key": cell.key,
        "stage": str(cell.stage),
        "task": cell.task,
        "source": cell.origin,
        "source_key": cell.source.key if cell.source else "",
        "target": cell.target,
        "seed": str(cell.seed),
        "k": str(cell.k),
        STRATEGY_TAG: str(cell.retrieval),
    }
