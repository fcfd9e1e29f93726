"""MPT (Wang et al. 2023, "Multitask Prompt Tuning Enables Parameter-Efficient Transfer Learning", ICLR 2023,
arXiv 2303.02861): one shared prompt P* learned from the source tasks together, each task's prompt P* * (u_k v_k^T),
elementwise, with rank-r factors of its own (`prompts.FactoredPrompt`).

Source run (`tune_mpt_source`): one run on the study's source tasks together. Its training batches draw from them
as a mixture's do (examples-proportional, SPoT's cap: the same examples in the same order as a mixture run); each
example is prompted by its own task's prompt, so P* gets the gradient of every task, and u_k, v_k that of task k's
examples. Validation scores each task with its own prompt; the run's score is their mean. Its prompt files hold
P*, the prompt a target starts from; `RunDir.best_module` holds P* and every task's factors.

Its loss is the paper's (section 3.2, eqs. 3-5), `Distillation`, with `study.mpt.distill` (default true):
    L = L_PLM + lambda * (L_Logits + L_Hidden)
- Teachers: each source task's own prompt, trained alone by plain prompt tuning (the study's source runs: the
  first source seed's run of each task), frozen. Each example's teacher is its task's.
- L_PLM: the student's cross-entropy on the target tokens, as every run's.
- L_Logits: KL(teacher || student), KL[P(y | x; teacher prompt) || P(y | x; P* * u_k v_k^T)] (eq. 3), here on the
  output distribution at every target token (teacher forcing), both softened by one temperature T (the paper has a
  T and no value; `distill_temperature`, 1: a choice).
- L_Hidden: the squared difference of the teacher's and the student's hidden states (eq. 4), "from both the encoder
  and decoder of T5" (section 4.1). Which layer the paper does not say: here the last (a choice), at every token
  of the example (decoder-only: input and target; T5: the encoder's input tokens, then the decoder's target
  positions; never the prompt's positions), the mean over the hidden size.
- lambda: `distill_weight`, 0.9 (the value read in the paper's implementation details; unverified here, see below).
Normalisation (a choice): L_PLM and L_Logits are means over the batch's target tokens, L_Hidden the mean over its
tokens, each over the whole batch, so micro-batches sum to the batch's loss as plain runs' do. The teachers run
without gradients and without dropout (eval mode: T5's 0.1), one more forward pass per step (`StageDef.work`).
Not done: the paper's stochastic task sampling (K of the tasks per batch, K drawn from [2, tasks]).
`study.mpt.distill` false: the plain multitask loss (L_PLM alone), without teachers.

Target (a `prompt.rank` run of the target stage's trainer): the prompt starts at P* (the source run's best
prompt), its factors by `study.mpt.target_init` (`target_factors`), from the source run's `RunDir.best_module`:
    average        the mean of the source tasks' u and, apart, of their v (PEFT's AVERAGE_SOURCE_TASKS, which
                   averages prefix_task_cols and prefix_task_rows over tasks); the paper's: "take averaged source
                   task-specific vectors to initialize the target task-specific vector" (section 4.1). Default.
    exact:<task>   that source task's u and v (PEFT's EXACT_SOURCE_TASK; its example notebook's choice, whose
                   target is its source task 0)
    ones           u = 1, v = 1/r: the prompt starts at P* itself (PEFT's ONLY_SOURCE_SHARED also loads P* alone,
                   but leaves its factors at their random init, N(0, 0.02))
The target then trains its factors and, unless `train_shared` is off, P* (the paper does).

Sources: the paper, arXiv 2303.02861 (https://arxiv.org/abs/2303.02861; sections 3.2, 3.3, 4.1). Its method
text could not be re-read when this was written (the stored copies reachable then held its first pages only): the
loss's form, the KL's direction, the unvalued temperature, the encoder and decoder hidden states, lambda = 0.9 and
the averaged target init (the quotes above included) are recalled from the paper (unverified: check them against
sections 3.2 and 4.1). Read in code: PEFT (huggingface/peft, src/peft/tuners/multitask_prompt_tuning/config.py and
model.py) for the init modes; PEFT has no distillation loss (https://github.com/huggingface/peft/issues/1124: the
loss is left to the user; examples/conditional_generation/multitask_prompt_tuning.ipynb trains the source prompt on
the plain loss and starts its target with EXACT_SOURCE_TASK).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spot_core.backbones import Backbone
from spot_core.config import check_int, check_number, nested
from spot_core.encoding import Encoded, batch_indices, length
from spot_core.errors import ConfigError
from spot_core.evaluation import MixtureData
from spot_core.methods import BestModule
from spot_core.packing import RowLoss, row_gradients
from spot_core.prompt_files import read_prompt_file
from spot_core.prompted import Outputs, PromptedLM
from spot_core.prompts import FactoredPrompt, check_shape
from spot_core.run_dir import RunDir
from spot_core.tasks import UnknownNameError, get_task, members
from spot_core.tracking import Tracker
from spot_core.trainer import Trainer, TrainerConfig, _State
from spot_core.tuning import RunSpec, codec_for, initial_prompt, label_words, trainer_for

DISTILL_WEIGHT = 0.9  # the paper's lambda (see the module)


class TargetInit(StrEnum):
    """How a target's factors start (see the module); `exact` is written `exact:<source task>`."""

    AVERAGE = "average"
    EXACT = "exact"
    ONES = "ones"


@dataclass
class MPTConfig:
    """A study's MPT: the rank r of each task's factors; whether the source run distils the single-task source
    prompts (`distill`, with weight lambda and temperature T; false: the plain multitask loss); how a target's
    factors start (`target_init`: average, exact:<source task>, ones); whether a target also trains the shared
    prompt (the paper does); the source run's trainer (default: the study's source trainer)."""

    rank: int = 1
    train_shared: bool = True
    distill: bool = True
    distill_weight: float = DISTILL_WEIGHT
    distill_temperature: float = 1.0
    target_init: str = TargetInit.AVERAGE.value
    trainer: TrainerConfig | None = None

    SETTING = "study.mpt"

    def __post_init__(self):
        check_int(self.rank, "study.mpt.rank")
        for name in ("train_shared", "distill"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"study.mpt.{name} must be true or false, got {getattr(self, name)!r}")
        check_number(self.distill_weight, "study.mpt.distill_weight", hint=" (the paper's lambda: 0.9)")
        check_number(self.distill_temperature, "study.mpt.distill_temperature", positive=True)
        self.target_init = parse_target_init(self.target_init)
        if self.trainer is not None:
            self.trainer = nested(TrainerConfig, self.trainer, "study.mpt.trainer")

    @property
    def exact_task(self) -> str | None:
        """The source task whose factors start a target (`exact:<task>`), or None."""
        kind, _, task = self.target_init.partition(":")
        return task if kind == TargetInit.EXACT else None


def parse_target_init(value: Any) -> str:
    """`study.mpt.target_init` as stored: `average`, `ones`, or `exact:<task>` with the task's versioned name.

    Raises:
        ConfigError: another value, or an unknown task (with the closest task names).
    """
    kind, sep, task = value.partition(":") if isinstance(value, str) else ("", "", "")
    if kind == TargetInit.EXACT and task:
        try:
            return f"{TargetInit.EXACT.value}:{get_task(task.strip()).name}"
        except UnknownNameError as e:
            raise ConfigError(f"study.mpt.target_init={value}: {e}") from None
    if not sep and kind in (TargetInit.AVERAGE, TargetInit.ONES):
        return kind
    raise ConfigError(f"study.mpt.target_init must be one of: average, ones, exact:<source task>; got {value!r}")


def target_factors(config: MPTConfig, source_task: str, module: str | Path) -> dict[str, Any]:
    """The prompt settings (`PromptConfig.factors`, `factors_task`) that start a target's factors by
    `config.target_init`, from the source run on `source_task` (the mixture of the source tasks) whose module file
    is `module` (its `RunDir.best_module`)."""
    if config.target_init == TargetInit.ONES:
        return {"factors": None, "factors_task": None}
    task, names = config.exact_task, [t.name for t in members(source_task)]
    if task is not None and task not in names:
        raise ConfigError(f"study.mpt.target_init=exact:{task}: not one of MPT's source tasks {names}")
    return {"factors": str(module), "factors_task": None if task is None else names.index(task)}


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


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """`module` in eval mode (no dropout) inside, its mode as it was after."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def distilled_losses(
    student: Outputs, teacher: Outputs, examples: int, weight: float, temperature: float, scale: float
) -> torch.Tensor:
    """Each example's MPT source loss, [examples], in the unit of the LM loss summed over its target tokens:
    CE_i + weight * (KL_i + scale * MSE_i), where CE_i and KL_i sum over example i's target tokens the student's
    cross-entropy and KL(teacher || student) of their output distributions at temperature T, and MSE_i sums over
    its tokens the mean over the hidden size of (h_student - h_teacher)^2.

    Divided by the batch's target tokens, the sum over the batch is L_PLM + weight * (L_Logits + L_Hidden) with
    L_Hidden the mean over the batch's tokens when `scale` is its target tokens / its tokens (see the module).
    `student` and `teacher` come from `PromptedLM.outputs(..., states=True)` on the same batch."""
    ce = F.cross_entropy(student.logits, student.labels, reduction="none")
    log_student = F.log_softmax(student.logits / temperature, -1)
    log_teacher = F.log_softmax(teacher.logits / temperature, -1)
    kl = F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(-1)
    per_token = torch.zeros(examples, device=ce.device).index_add(0, student.example, ce + weight * kl)
    squared = (student.states.float() - teacher.states.float()).pow(2).mean(-1)  # type: ignore[union-attr]
    return per_token + weight * scale * (squared * student.mask).sum(1)


@dataclass
class Distillation:
    """MPT's distillation from the single-task prompts (see the module): `teachers` [T, L, H], task k's teacher
    prompt (frozen), `weight` lambda, `temperature` T."""

    teachers: torch.Tensor
    weight: float = DISTILL_WEIGHT
    temperature: float = 1.0
    _made: tuple[PromptedLM, Any] | None = field(default=None, init=False, repr=False)

    def prompts(self, engine: PromptedLM) -> Any:
        """The teachers as `engine` takes them, made once per engine (frozen prompts and model, no dropout: the
        same every step): in prompt-once mode their keys/values, else the prompts on the engine's device."""
        if self._made is None or self._made[0] is not engine:
            teachers = self.teachers.to(engine.device)
            with torch.no_grad(), evaluating(engine.model):
                self._made = engine, engine.prompt_states(prompts=teachers) if engine.shares_prompt else teachers
        return self._made[1]

    def row_loss(self, engine: PromptedLM, items: Sequence[tuple[int, Encoded]]) -> RowLoss:
        """The per-example loss of a step over `items` (task, example) for `row_gradients`: each forward pass of
        the student runs its examples through their tasks' teachers too (no gradients, eval mode)."""
        targets = sum(len(e.target_ids) for _, e in items)
        scale = targets / sum(length(e) for _, e in items)
        teacher = self.prompts(engine)

        def loss(batch: dict[str, torch.Tensor], prompt: Any, rows: torch.Tensor) -> torch.Tensor:
            student = engine.outputs(batch, prompt, rows, states=True)
            with torch.no_grad(), evaluating(engine.model):
                reference = engine.outputs(batch, teacher, rows, states=True)
            return distilled_losses(student, reference, len(rows), self.weight, self.temperature, scale)

        return loss


class MultitaskTrainer(Trainer):
    """The Trainer on a `MultitaskData`, whose steps prompt each example with its own task's prompt; with
    `distillation`, the loss distils each task's teacher prompt into its student prompt."""

    def __init__(
        self,
        config: TrainerConfig,
        model: PromptedLM,
        data: Any,
        *args: Any,
        distillation: Distillation | None = None,
        **kwargs: Any,
    ):
        super().__init__(config, model, MultitaskData(data), *args, **kwargs)
        self.distillation: Distillation | None = None
        self.distil(distillation)

    def distil(self, distillation: Distillation | None) -> None:
        """Trains with `distillation` (None: the plain multitask loss); its teachers must be one per task, each of
        the tasks' prompts' shape."""
        if distillation is not None:
            with torch.no_grad():
                want = tuple(self.model.prompt.task_prompts().shape)  # type: ignore[operator]
            if tuple(distillation.teachers.shape) != want:
                raise ConfigError(
                    f"MPT's distillation needs a teacher prompt per task of shape {want[1:]} ({want[0]} tasks), got "
                    f"teachers of shape {tuple(distillation.teachers.shape)}"
                )
        self.distillation = distillation

    def _train_step(self, state: _State) -> None:
        cfg = self.config
        idx = batch_indices(state.step, cfg.batch_size, len(self.data.train), cfg.seed)  # Trainer.batch's examples
        items = [(self.data.rows[i], self.data.train[i]) for i in idx]
        targets = sum(len(e.target_ids) for _, e in items)
        prompts = self.model.prompt.task_prompts()
        weight = torch.full((prompts.shape[0],), 1.0 / targets, device=self.model.device)
        micro = cfg.micro_batch_size or cfg.batch_size
        loss = self.distillation.row_loss(self.model, items) if self.distillation else None
        sums = row_gradients(self.model, prompts, items, weight, self.data.codec, micro, loss=loss)
        self.step(state, sums.sum() / targets)


def tune_mpt_source(
    spec: RunSpec,
    config: MPTConfig,
    out_dir: str | Path,
    tracker: Tracker | None = None,
    teachers: Sequence[str] = (),
) -> dict[str, Any]:
    """Runs (or resumes) MPT's source run on `spec.task`, a mixture of the source tasks; returns its result.

    `teachers`: with `config.distill`, the prompt file of each source task's teacher, in the mixture's order."""
    run = RunDir(out_dir)
    if run.finished():
        return run.result()
    tasks = [t.name for t in members(spec.task)]
    if len(tasks) < 2:
        raise ConfigError(f"MPT's source run needs at least two source tasks, got {spec.task!r}")
    if config.distill and len(teachers) != len(tasks):
        raise ConfigError(
            f"MPT's distillation (study.mpt.distill) needs a teacher prompt file per source task {tasks}, got "
            f"{len(teachers)}"
        )
    loaded: list[torch.Tensor] = []

    def build(backbone: Backbone) -> FactoredPrompt:
        seed = spec.trainer.seed
        init = initial_prompt(spec.prompt, backbone, codec_for(spec, backbone), label_words(spec.task) or None, seed)
        loaded[:] = [teacher_prompt(f, spec.prompt.length, backbone) for f in teachers] if config.distill else []
        return FactoredPrompt(init, len(tasks), config.rank, generator=torch.Generator().manual_seed(seed))

    meta: dict[str, Any] = {"prompt.rank": config.rank, "mpt.tasks": tasks, "mpt.distill": config.distill}
    if config.distill:
        meta["mpt.distill_weight"], meta["mpt.distill_temperature"] = config.distill_weight, config.distill_temperature
    trainer = trainer_for(spec, out_dir, tracker, module=build, trainer=MultitaskTrainer, metadata=meta)
    if loaded:
        stacked = torch.stack(loaded).to(trainer.model.device)
        trainer.distil(Distillation(stacked, config.distill_weight, config.distill_temperature))  # type: ignore[attr-defined]
    trainer.callbacks.append(BestModule(trainer.model.prompt, trainer.run, spec.trainer.best_includes_init))
    result = trainer.fit()
    if run.best_module.exists():
        trainer.tracker.log_artifact(run.best_module)
    return result


def teacher_prompt(path: str, length: int, backbone: Backbone) -> torch.Tensor:
    """A teacher's prompt file, checked against the student's [length, H]."""
    prompt, trained_on = read_prompt_file(path)
    what = f"MPT teacher prompt file {path}"
    check_shape(prompt, length, backbone.hidden_size, what=what, model=backbone.name, trained_on=trained_on)
    return prompt
