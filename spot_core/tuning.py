"""One prompt-tuning run from names: model, task, initial prompt, trainer settings.

`tune_prompt(spec, out_dir)` is what the pipelines call for every cell of a study. It checks
everything a user can get wrong (task name, data files, prompt files and their shapes) before
any training starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spot_core import prompts
from spot_core.backbones import DTYPES, Backbone, default_cache_dir, load_backbone
from spot_core.config import check_int, check_number, nested, parse_choice
from spot_core.encoding import Codec
from spot_core.errors import ConfigError
from spot_core.evaluation import MixtureData, TaskData
from spot_core.methods import load_module
from spot_core.packing import Pack, ResultHook
from spot_core.prompt_files import read_prompt_file
from spot_core.prompted import PromptedLM
from spot_core.prompts import FactoredPrompt, PromptInit, PromptModule, SoftPrompt, trainable_parameters
from spot_core.run_dir import RunDir
from spot_core.tasks import DataSource, Mixture, check_data, get, members
from spot_core.tasks.cache import encoded_split
from spot_core.tasks.source import fallback_configs_read
from spot_core.tracking import NullTracker, Tracker
from spot_core.trainer import Callback, ModelTrainer, Trainer, TrainerConfig


@dataclass
class PromptConfig:
    """How the prompt starts.

    `files` is one path for init=file (spot .safetensors, a PEFT adapter directory, or a SPoT
    numpy prompt) and several for init=weighted_average, with `weights` (same length).

    `rank`: MPT's factored prompt (`prompts.FactoredPrompt`): the initial prompt is the shared prompt P*, and the
    prompt trained is P* times a rank-`rank` matrix u v^T that starts at ones; `train_shared` False keeps P* fixed.
    None: a plain soft prompt. `factors`: u and v start from an MPT source run's module file instead
    (`RunDir.best_module`): task `factors_task`'s factors, or (None) the mean of its tasks' (`prompts.source_factors`).
    """

    length: int = 100
    init: PromptInit = PromptInit.SAMPLED_VOCAB
    scale: float = 0.5  # random_uniform: U[-scale, scale]
    population: int = 5000  # sampled_vocab / class_labels: the first N token ids
    files: Sequence[str] = ()
    weights: Sequence[float] = ()
    rank: int | None = None
    train_shared: bool = True
    factors: str | None = None
    factors_task: int | None = None

    SETTING = "prompt"  # its settings' names as pipelines.train takes them

    def __post_init__(self):
        self.init = parse_choice(PromptInit, self.init, "prompt.init")
        check_int(self.length, "prompt.length")
        check_number(self.scale, "prompt.scale", positive=True)
        check_int(self.population, "prompt.population")
        if self.rank is not None:
            check_int(self.rank, "prompt.rank", hint=" (or null: a plain soft prompt)")
        if self.factors is not None and self.rank is None:
            raise ConfigError("prompt.factors starts MPT's factors: it needs prompt.rank (the source run's rank)")
        if self.factors_task is not None:
            check_int(self.factors_task, "prompt.factors_task", low=0, hint=" (or null: the mean of the tasks')")
        n = len(self.files)
        if self.init is PromptInit.FILE and n != 1:
            raise ConfigError(f"prompt.init=file needs exactly one path in prompt.files, got {n}")
        if self.init is PromptInit.WEIGHTED_AVERAGE and (n == 0 or len(self.weights) != n):
            raise ConfigError(
                "prompt.init=weighted_average needs prompt.files and as many prompt.weights "
                f"({n} vs {len(self.weights)})"
            )


def initial_prompt(
    cfg: PromptConfig, backbone: Backbone, codec: Codec, label_words: Sequence[str] | None, seed: int
) -> torch.Tensor:
    """[L, H] initial prompt for `backbone`, checked against its hidden size."""
    gen = torch.Generator().manual_seed(seed)
    emb, H = backbone.embeddings.detach().float().cpu(), backbone.hidden_size
    special = set(backbone.tokenizer.all_special_ids)  # control tokens are no vocabulary to sample
    population = [i for i in range(min(cfg.population, emb.shape[0])) if i not in special]
    if cfg.init is PromptInit.ZEROS:
        return torch.zeros(cfg.length, H)
    if cfg.init is PromptInit.RANDOM_UNIFORM:
        return prompts.random_uniform(cfg.length, H, cfg.scale, gen)
    if cfg.init is PromptInit.SAMPLED_VOCAB:
        return prompts.sampled_vocab(emb, cfg.length, gen, population)
    if cfg.init is PromptInit.CLASS_LABELS:
        if not label_words:
            raise ConfigError("prompt.init=class_labels needs a task with a closed label set; use sampled_vocab")
        ids = [codec.label_word_ids(w) for w in label_words]
        return prompts.class_labels(emb, ids, cfg.length, gen, population)
    loaded = []
    for f in cfg.files:
        prompt, trained_on = read_prompt_file(f)
        prompts.check_shape(prompt, cfg.length, H, what=f"prompt file {f}", model=backbone.name, trained_on=trained_on)
        loaded.append(prompt)
    if cfg.init is PromptInit.FILE:
        return loaded[0]
    return prompts.weighted_average(loaded, cfg.weights)


@dataclass
class RunSpec:
    """Everything one prompt-tuning run needs."""

    model: str
    task: str
    prompt: PromptConfig = field(default_factory=PromptConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data_dir: str | None = None  # offline mirror; None = Hugging Face hub
    cache_dir: str | None = None
    max_input_tokens: int = 256
    max_target_tokens: int = 16
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    prompt_once: bool | None = None  # decoder-only: the prompt runs once per batch (None = wherever it applies)
    weights: str | None = None  # model tuning: a model folder whose weights it starts from (None: the pretrained ones)

    def __post_init__(self):
        self.prompt = nested(PromptConfig, self.prompt, "prompt")
        self.trainer = nested(TrainerConfig, self.trainer, "trainer")
        check_data_settings(self, "")
        if self.prompt.init is PromptInit.CLASS_LABELS:  # before any model loads
            check_class_labels(self.task, self.prompt.length)


def check_data_settings(config: Any, prefix: str) -> None:
    """The token and example limits and the dtype of a RunSpec or a StudyConfig (`prefix`: where the user writes
    the example limits, "study." in a study; the others are model settings)."""
    check_int(config.max_input_tokens, "model.max_input_tokens")
    check_int(config.max_target_tokens, "model.max_target_tokens")
    for name in ("max_train_examples", "max_eval_examples"):
        if getattr(config, name) is not None:
            check_int(getattr(config, name), f"{prefix}{name}", hint=" (or null: all)")
    if config.dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of: {', '.join(DTYPES)}; got {config.dtype!r}")


def label_words(task: str) -> tuple[str, ...]:
    """The label words a class-label init of `task` starts from: the task's, or the distinct ones of a mixture's
    tasks in order (empty for a task that generates its answers)."""
    return tuple(dict.fromkeys(w for t in members(task) for w in t.label_words or ()))


def check_class_labels(
    task: str, length: int, length_setting: str = "prompt.length", init_setting: str = "prompt.init"
) -> None:
    """Raises ConfigError, naming the settings that fix it, unless a class-label init of `task` fits `length`
    prompt tokens (the rule: `prompts.check_class_label_length`)."""
    words, task = label_words(task), get(task).name
    if not words:
        raise ConfigError(
            f"{init_setting}=class_labels needs a task with a closed label set, and {task!r} generates its answers: "
            f"use {init_setting}=sampled_vocab"
        )
    prompts.check_class_label_length(len(words), length, f"task {task!r}: ", length_setting, init_setting)


ModuleBuilder = Callable[[Backbone], PromptModule]


def prepare(
    spec: RunSpec, train: bool = True, backbone: Backbone | None = None, module: ModuleBuilder | None = None
) -> tuple[PromptedLM, TaskData | MixtureData]:
    """Checks the data first (most likely to be wrong: every row of each split of each task), then loads the model
    (unless `backbone`, already loaded, is given) and the prompt module, then the tokenised splits (cached under
    `<cache_dir>/tokenized`). `spec.task` names a task or a mixture; `max_*_examples` apply to each task of a
    mixture. `train` False: the validation split only (an evaluation; the data's `train` is empty).

    The prompt module: `module(backbone)` where given (a transfer method's own), else `prompt_module` of the spec."""
    check_data(spec.task, spec.data_dir, ("train", "validation") if train else ("validation",))
    backbone = backbone or load_backbone(spec.model, spec.cache_dir, spec.dtype, spec.device)
    codec = codec_for(spec, backbone)
    prompt = module(backbone) if module else prompt_module(spec, backbone, codec)  # a wrong file fails before data
    model = PromptedLM(backbone, prompt, spec.prompt_once).to(spec.device)
    return model, load_data(spec, codec, train)


def prompt_module(spec: RunSpec, backbone: Backbone, codec: Codec) -> PromptModule:
    """The run's prompt module from its initial prompt: a soft prompt, or MPT's factored one (`prompt.rank`)."""
    init = initial_prompt(spec.prompt, backbone, codec, label_words(spec.task) or None, spec.trainer.seed)
    if spec.prompt.rank is None:
        return SoftPrompt(init)
    generator = torch.Generator().manual_seed(spec.trainer.seed)
    factors = None
    if spec.prompt.factors is not None:
        if not Path(spec.prompt.factors).is_file():
            raise ConfigError(f"prompt.factors: no MPT source module at {spec.prompt.factors}")
        factors = prompts.source_factors(load_module(spec.prompt.factors)[0], spec.prompt.factors_task)
        if factors[0].shape[-1] != spec.prompt.rank:
            raise ConfigError(
                f"prompt.factors {spec.prompt.factors} holds rank-{factors[0].shape[-1]} factors, but "
                f"prompt.rank={spec.prompt.rank}: set prompt.rank={factors[0].shape[-1]}"
            )
    return FactoredPrompt(
        init, rank=spec.prompt.rank, train_shared=spec.prompt.train_shared, generator=generator, factors=factors
    )


def codec_for(spec: RunSpec, backbone: Backbone) -> Codec:
    return Codec(backbone.tokenizer, backbone.is_encoder_decoder, spec.max_input_tokens, spec.max_target_tokens)


def load_data(spec: RunSpec, codec: Codec, train: bool = True) -> TaskData | MixtureData:
    """The tokenised train (unless `train` is False: empty) and validation splits of `spec.task` (a task or a
    mixture)."""
    item = get(spec.task)
    cache = spec.cache_dir or default_cache_dir()
    parts = [
        TaskData(
            task,
            codec,
            encoded_split(task, "train", spec.data_dir, codec, spec.max_train_examples, cache) if train else [],
            encoded_split(task, "validation", spec.data_dir, codec, spec.max_eval_examples, cache),
        )
        for task in members(spec.task)
    ]
    return MixtureData(item, parts) if isinstance(item, Mixture) else parts[0]


def data_record(spec: RunSpec) -> dict[str, str]:
    """Where a run's examples came from: task versions, source and the split specs used (a carve-out shows
    here), recorded with the run. For a mixture, `task=spec` pairs.

    `data_config`, only where a mirror serves a task from a fallback configuration instead of its own
    (`fallback_configs_read`: WinoGrande L for XL), names that configuration (a mixture: `task=config` pairs of
    those members); absent, every task read its own `hub_config`, so the records of other runs stay as they were.
    """
    item, tasks = get(spec.task), members(spec.task)
    if spec.data_dir:
        source = f"mirror {spec.data_dir}"
    else:
        source = "hub " + ", ".join(f"{t.hub_id}@{t.revision or 'main'}" for t in tasks)
    splits = {t.name: DataSource.of(t, spec.data_dir).splits for t in tasks}
    record = {"task_version": item.name, "data_source": source}
    for role in ("train", "validation"):
        specs = [f"{name}={s[role]}" if len(tasks) > 1 else s[role] for name, s in splits.items()]
        record[f"{role}_split"] = "; ".join(specs)
    other = fallback_configs_read(spec.task, spec.data_dir)
    if other:
        record["data_config"] = "; ".join(f"{name}={c}" if len(tasks) > 1 else str(c) for name, c in other.items())
    return record


def prompt_record(spec: RunSpec) -> dict[str, Any]:
    """How the run's prompt started, under its config names (MLflow params, prompt file metadata)."""
    record: dict[str, Any] = {"prompt.init": spec.prompt.init.value, "prompt.length": spec.prompt.length}
    if spec.prompt.rank is not None:
        record.update({"prompt.rank": spec.prompt.rank, "prompt.train_shared": spec.prompt.train_shared})
        if spec.prompt.factors is not None:
            task = spec.prompt.factors_task
            record["prompt.factors_task"] = "average" if task is None else task
    return record


def tune_prompt(
    spec: RunSpec, out_dir: str | Path, tracker: Tracker | None = None, callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    """Runs (or resumes) one prompt-tuning run; returns its final metrics."""
    return trainer_for(spec, out_dir, tracker, callbacks).fit()


def tune_model(
    spec: RunSpec, out_dir: str | Path, tracker: Tracker | None = None, callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    """Runs (or resumes) one model-tuning run (SPoT's MODELTUNING; `ModelTrainer`): every weight of the backbone
    trains on `spec.task` (a task or a mixture), without a prompt, from the pretrained weights or from those of
    `spec.weights` (a model folder: multi-task model tuning's target runs start from the source-tuned model).
    `spec.prompt` is not read. Returns its final metrics."""
    weights = Path(spec.weights) if spec.weights else None
    if weights is not None and not (weights / "config.json").is_file():
        raise ConfigError(f"weights: no model folder at {weights} (a model-tuning run's best_model folder)")
    model, data = prepare(spec, module=lambda backbone: SoftPrompt(torch.zeros(0, backbone.hidden_size)))
    if weights is not None and not RunDir(out_dir).resume.exists():  # a checkpoint holds the weights to go on from
        start = type(model.model).from_pretrained(weights, dtype=model.model.dtype)
        model.model.load_state_dict(start.state_dict())
        del start
    meta = {
        **data_record(spec),
        "weights.init": str(weights) if weights else "pretrained",
        "trainable_params": sum(p.numel() for p in model.model.parameters()),
    }
    return ModelTrainer(spec.trainer, model, data, out_dir, tracker, callbacks, metadata=meta).fit()


def trainer_for(
    spec: RunSpec,
    out_dir: str | Path,
    tracker: Tracker | None = None,
    callbacks: Sequence[Callback] = (),
    backbone: Backbone | None = None,
    module: ModuleBuilder | None = None,
    trainer: type[Trainer] = Trainer,
    metadata: dict[str, Any] | None = None,
) -> Trainer:
    """The Trainer of one run (`prepare`: its checks, model and data; `backbone`: one already loaded; `module`: the
    prompt module's builder, where not the spec's), recording where its prompt and data came from and how many
    parameters it trains. `trainer`: a Trainer subclass (MPT's multitask run); `metadata`: more to record."""
    model, data = prepare(spec, backbone=backbone, module=module)
    meta = {**prompt_record(spec), **data_record(spec), "trainable_params": trainable_parameters(model.prompt)}
    return trainer(spec.trainer, model, data, out_dir, tracker, callbacks, metadata={**meta, **(metadata or {})})


def backbone_key(spec: RunSpec) -> tuple:
    """What runs must have in common to share one loaded backbone (a pack): the model, where it comes from, its
    dtype and device, and how the prompt runs on it."""
    return (spec.model, spec.cache_dir, spec.dtype, spec.device, spec.prompt_once)


def tune_prompts(
    specs: Sequence[RunSpec],
    out_dirs: Sequence[str | Path],
    trackers: Sequence[Tracker | None],
    on_result: ResultHook | None = None,
) -> list[dict[str, Any] | Exception]:
    """Trains (or resumes) several runs that share a backbone as one pack (`spot_core.packing`): the backbone loads
    once. Returns each run's final metrics, or the error that stopped it (a NaN, its own data or prompt file): one
    run's failure leaves the others training. `on_result(i, result)`: as soon as run i has its result."""
    on_result = on_result or (lambda index, result: None)
    if len({backbone_key(spec) for spec in specs}) != 1:
        raise ValueError("the runs of a pack must share the model, its dtype and device, and prompt_once")
    first = specs[0]
    backbone = load_backbone(first.model, first.cache_dir, first.dtype, first.device)
    trainers: list[Trainer | None] = []
    results: list[dict[str, Any] | Exception | None] = []
    for spec, out_dir, tracker in zip(specs, out_dirs, trackers, strict=True):
        try:
            trainers.append(trainer_for(spec, out_dir, tracker, backbone=backbone))
            results.append(None)
        except Exception as error:  # noqa: BLE001 - this run's own input is wrong: it alone fails
            trainers.append(None)
            results.append(error)
            on_result(len(results) - 1, error)
    index = [i for i, t in enumerate(trainers) if t is not None]  # a pack member's index among the specs
    packed = [trainers[i] for i in index]
    done = iter(Pack(packed, on_result=lambda i, result: on_result(index[i], result)).fit() if packed else [])
    return [next(done) if r is None else r for r in results]  # type: ignore[misc]


def evaluate_prompt(spec: RunSpec, out_dir: str | Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """Scores the initial prompt of `spec` on the task's validation split with no training: a prompt file (zero-shot
    transfer) or an untrained init (sampled_vocab, class_labels, ...). Only the trainer's `eval_batch_size` and
    `seed` (the init's) apply. Writes metrics.json and result.json (`best/val_score` is that score) like a
    training run; a finished evaluation is not repeated."""
    run = RunDir(out_dir)
    if run.finished():
        return run.result()
    tracker = tracker or NullTracker()
    model, data = prepare(spec, train=False)
    model.eval()
    tracker.log_params({**prompt_record(spec), **data_record(spec)})
    record = {f"val/{k}": v for k, v in data.evaluate(model, spec.trainer.eval_batch_size).items()}
    result = {
        "best/val_score": record["val/score"],
        "best/step": 0,
        "final/val_score": record["val/score"],
        "final/step": 0,
    }
    tracker.log_metrics({**record, **result}, 0)
    run.write_metrics([{"step": 0, **record}])
    run.finish(result)
    return result
