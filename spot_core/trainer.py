"""Prompt-tuning loop with evaluation, checkpoints and exact resume.

The Trainer trains the model's prompt module (`spot_core.prompts.PromptModule`): it optimises the module's
`parameters()`, checkpoints its `state_dict()` and saves the [L, H] prompt its `forward()` returns.

Everything is written inside `out_dir`, a `RunDir` (`spot_core.run_dir` names the files):
    resume            last checkpoint: prompt module, optimizer, RNG, step, history (atomic)
    checkpoint(step)  prompt at each evaluation (if keep_checkpoints)
    initial_prompt    prompt before training (for task embeddings taken as the displacement from it)
    task_embedding    prompt after `embedding_step` steps (SPoT's task embedding)
    best_prompt       prompt with the best validation score (SPoT's source prompt)
    final_prompt      prompt after the last step
    metrics           every evaluation
    result            final metrics, written last; its presence marks the run finished
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from spot_core.config import check_int, check_number, parse_choice, plain_values
from spot_core.encoding import Codec, Encoded, batch_indices, collate, length, to_device
from spot_core.errors import ConfigError, SpotError
from spot_core.prompt_files import save_prompt
from spot_core.prompted import PromptedLM
from spot_core.run_dir import RunDir, follow_umask, write_atomic
from spot_core.tracking import NullTracker, Tracker


class OptimizerName(StrEnum):
    ADAFACTOR = "adafactor"
    ADAMW = "adamw"


class NonFiniteLossError(SpotError, FloatingPointError):
    """The training loss became NaN or infinite: a user-fixable setting (the learning rate, mostly)."""


@dataclass
class TrainerConfig:
    """Prompt-tuning hyperparameters (defaults: SPoT's optimizer settings, a CPU-sized budget)."""

    steps: int = 1000
    batch_size: int = 8
    micro_batch_size: int | None = None  # split each batch into chunks this size (same gradient, less memory)
    optimizer: OptimizerName = OptimizerName.ADAFACTOR
    lr: float = 0.3
    weight_decay: float = 1e-5
    decay_rate: float = 0.8  # Adafactor second-moment decay: beta2_t = 1 - t^(-decay_rate)
    # Adafactor: scale each update by its parameter's RMS. Off for prompts (SPoT's and Lester et al.'s settings); on
    # for model tuning, as T5X's Adafactor defaults it (multiply_by_parameter_scale) in T5's fine-tuning.
    scale_parameter: bool = False
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    eval_every: int = 100
    eval_batch_size: int = 16
    eval_at_start: bool = True
    embedding_step: int | None = None  # save the task embedding after this step
    # The evaluated initial prompt (step 0) competes for the best checkpoint. SPoT's long runs never need it; in
    # runs of a few steps the init is much of what a transfer brings, and training may not beat it.
    best_includes_init: bool = False
    keep_checkpoints: bool = True
    seed: int = 0

    SETTING = "trainer"  # its settings' names as pipelines.train takes them; a study's are renamed (config.nested)
    # Settings added after studies had run: at these values a cell's key leaves them out (`identity`), so that the
    # cells those studies finished keep their keys.
    ADDED: ClassVar[dict[str, Any]] = {"scale_parameter": False}

    def identity(self) -> dict[str, Any]:
        """The settings as a cell's key holds them (plain values; `ADDED` ones only where set otherwise)."""
        values = {**asdict(self), "optimizer": str(self.optimizer)}
        return {k: v for k, v in values.items() if not (k in self.ADDED and v == self.ADDED[k])}

    def __post_init__(self):
        self.optimizer = parse_choice(OptimizerName, self.optimizer, "trainer.optimizer")
        hint = {"steps": " (to score a prompt without training, evaluate it: make evaluate)"}
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            check_int(getattr(self, name), f"trainer.{name}", hint=hint.get(name, ""))
        check_number(self.lr, "trainer.lr", positive=True, hint=" (SPoT's is trainer.lr=0.3 with Adafactor)")
        check_number(self.weight_decay, "trainer.weight_decay")
        check_number(self.grad_clip, "trainer.grad_clip", hint=" (0 = off)")
        check_number(self.decay_rate, "trainer.decay_rate", positive=True)
        if not isinstance(self.scale_parameter, bool):
            raise ConfigError(f"trainer.scale_parameter must be true or false, got {self.scale_parameter!r}")
        if self.micro_batch_size is not None:
            check_int(self.micro_batch_size, "trainer.micro_batch_size")
            if self.micro_batch_size > self.batch_size:
                raise ConfigError(
                    f"trainer.micro_batch_size must be in 1..trainer.batch_size ({self.batch_size}), "
                    f"got {self.micro_batch_size}"
                )
        if self.embedding_step is not None:
            check_int(self.embedding_step, "trainer.embedding_step")
            if self.embedding_step > self.steps:
                raise ConfigError(
                    f"trainer.embedding_step must be in 1..trainer.steps ({self.steps}), got {self.embedding_step}"
                )


def make_optimizer(config: TrainerConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer is OptimizerName.ADAMW:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    from transformers.optimization import Adafactor

    # SPoT / prompt tuning: constant LR, no parameter scaling, no relative step, no momentum (model tuning: scaling).
    return Adafactor(
        params,
        lr=config.lr,
        scale_parameter=config.scale_parameter,
        relative_step=False,
        warmup_init=False,
        decay_rate=-config.decay_rate,
        weight_decay=config.weight_decay,
        beta1=None,
        clip_threshold=1.0,
    )


class RunData(Protocol):
    """What the Trainer trains on (spot_core.evaluation.TaskData, MixtureData): encoded examples, their codec and
    how to score the model on the validation examples."""

    name: str
    codec: Codec
    train: list[Encoded]
    validation: list[Encoded]

    def evaluate(self, model: PromptedLM, batch_size: int) -> dict[str, float]: ...


class Callback:
    """Named hooks; override what you need."""

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_checkpoint(self, step: int, path: Path) -> None:
        pass

    def on_resume(self, step: int) -> None:
        """The run restarts from its last checkpoint, taken at `step`."""


@dataclass
class _State:
    step: int = 0
    best_score: float = -math.inf
    best_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    loss_sum: float = 0.0
    loss_count: int = 0


class Trainer:
    """Trains `model.prompt` (any prompt module) on `data`, writing into the run folder `out_dir`."""

    def __init__(
        self,
        config: TrainerConfig,
        model: PromptedLM,
        data: RunData,
        out_dir: str | Path,
        tracker: Tracker | None = None,
        callbacks: Sequence[Callback] = (),
        metadata: dict[str, Any] | None = None,
    ):
        if not data.train:
            raise SpotError(f"task {data.name!r} has no training examples: its train split is empty")
        if not data.validation:
            raise SpotError(f"task {data.name!r} has no validation examples: its validation split is empty")
        self.config, self.model, self.data = config, model, data
        self.run = RunDir(out_dir)
        self.tracker = tracker or NullTracker()
        self.callbacks = list(callbacks)
        self.metadata = {"model": model.backbone.name, "task": data.name, "seed": config.seed, **(metadata or {})}
        self.optimizer = make_optimizer(config, self.trained().parameters())

    # --- what trains, and its files ----------------------------------------------------------
    STATE = "prompt_state"  # the resume file's key for the trained module's state

    def trained(self) -> torch.nn.Module:
        """The module whose parameters the optimizer steps and whose state a checkpoint keeps: the prompt module."""
        return self.model.prompt

    def save(self, kind: str, step: int, **extra: Any) -> Path | None:
        """Writes the run's `kind` of file (initial, embedding, best, checkpoint, final): the prompt, with the
        run's metadata; returns its path (None: a kind this trainer does not write)."""
        path = {
            "initial": self.run.initial_prompt,
            "embedding": self.run.task_embedding,
            "best": self.run.best_prompt,
            "checkpoint": self.run.checkpoint(step),
            "final": self.run.final_prompt,
        }[kind]
        with torch.no_grad():
            prompt = self.model.prompt()
        return save_prompt(path, prompt, step=step, **self.metadata, **extra)

    def checkpoint(self, state: _State) -> None:
        """Writes the resume file: the trained module, optimizer, RNG, step and history."""
        blob = {
            "step": state.step,
            self.STATE: {k: v.detach().cpu().clone() for k, v in self.trained().state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "state": {k: v for k, v in asdict(state).items() if k != "step"},
        }
        write_atomic(self.run.resume, lambda tmp: torch.save(blob, tmp))  # a kill mid-write keeps the last one

    def _restore(self) -> _State:
        if not self.run.resume.exists():
            torch.manual_seed(self.config.seed)
            return _State()
        blob = torch.load(self.run.resume, weights_only=False)
        # resume.pt files written before the Trainer took prompt modules hold a SoftPrompt's weight, as "prompt".
        trained = blob[self.STATE] if self.STATE in blob else {"weight": blob["prompt"]}
        self.trained().load_state_dict(trained)
        self.optimizer.load_state_dict(blob["optimizer"])
        torch.set_rng_state(blob["rng"])
        if blob["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(blob["cuda_rng"])
        return _State(step=blob["step"], **blob["state"])

    # --- loop --------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Trains (or resumes, or returns the saved result of a finished run) and returns final metrics."""
        if self.run.finished():
            return self.run.result()
        state = self.start()
        while not self.done(state):
            self._train_step(state)
        return self.finish(state)

    def start(self) -> _State:
        """Restores the last checkpoint (or starts afresh: the initial prompt, its evaluation) and logs the run's
        parameters; the model is then in training mode. What `fit` does before its first step, and what a pack
        (`spot_core.packing`) does for each of its runs."""
        state = self._restore()
        settings = {f"trainer.{k}": v for k, v in plain_values(asdict(self.config)).items()}  # its config names
        self.tracker.log_params({**self.metadata, **settings})
        if state.step == 0:
            self.save("initial", 0)
            if self.config.eval_at_start:
                self._evaluate(state)
        else:  # resumed, maybe into another tracker run (a retried cell): its record is whole again
            for record in state.history:
                self.tracker.log_metrics({k: v for k, v in record.items() if k != "step"}, record["step"])
            self.tracker.log_metrics({"train/resumed_at_step": float(state.step)}, state.step)
            for cb in self.callbacks:
                cb.on_resume(state.step)
        self.model.train()
        return state

    def done(self, state: _State) -> bool:
        return state.step >= self.config.steps

    def batch(self, state: _State) -> list[Encoded]:
        """The examples of the next step (its own data stream: the step, the batch size and the seed)."""
        idx = batch_indices(state.step, self.config.batch_size, len(self.data.train), self.config.seed)
        return [self.data.train[i] for i in idx]

    def _train_step(self, state: _State) -> None:
        micro = self.config.micro_batch_size or self.config.batch_size
        self.step(state, accumulate_gradients(self.model, self.batch(state), self.data.codec, micro))

    def step(self, state: _State, loss: torch.Tensor) -> bool:
        """Takes the optimizer step for a batch whose gradient is on the prompt and whose mean loss is `loss`,
        then saves the task embedding, evaluates and checkpoints when they are due; returns whether it
        checkpointed. A non-finite loss raises NonFiniteLossError, with the prompt unchanged."""
        cfg = self.config
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {state.step + 1} (task {self.data.name!r}, "
                f"lr {cfg.lr}): lower the learning rate (the trainer's lr), or clip gradients (grad_clip=1.0)"
            )
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trained().parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.loss_sum += loss.item()
        state.loss_count += 1
        if state.step == cfg.embedding_step:
            self.tracker.log_artifact(self.save("embedding", state.step))
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            self._evaluate(state)
            self.checkpoint(state)
            return True
        return False

    def _evaluate(self, state: _State) -> None:
        metrics = self.data.evaluate(self.model, self.config.eval_batch_size)
        record = {f"val/{k}": v for k, v in metrics.items()}
        if state.loss_count:
            record["train/loss"] = state.loss_sum / state.loss_count
            state.loss_sum, state.loss_count = 0.0, 0
        state.history.append({"step": state.step, **record})
        self.tracker.log_metrics(record, state.step)
        self.run.write_metrics(state.history)
        score = metrics["score"]
        if (state.step > 0 or self.config.best_includes_init) and score > state.best_score:
            state.best_score, state.best_step = score, state.step
            self.save("best", state.step, score=score)
        if state.step > 0 and self.config.keep_checkpoints:
            path = self.save("checkpoint", state.step, score=score)
            for cb in self.callbacks if path is not None else ():
                cb.on_checkpoint(state.step, path)
        for cb in self.callbacks:
            cb.on_eval(state.step, record)

    def finish(self, state: _State) -> dict[str, float]:
        """Saves the final prompt, logs the run's files and result, and marks the run finished."""
        final = self.save("final", state.step)
        last = state.history[-1]
        result = {
            "best/val_score": state.best_score,
            "best/step": state.best_step,
            "final/val_score": last["val/score"],
            "final/step": state.step,
        }
        for path in (self.run.initial_prompt, self.run.best_prompt, self.run.task_embedding, final):
            if path is not None and path.exists():
                self.tracker.log_artifact(path)
        self.tracker.log_metrics({k: float(v) for k, v in result.items()}, state.step)
        self.run.finish(result)
        return result


class ModelTrainer(Trainer):
    """Model tuning (SPoT's MODELTUNING baselines): every weight of the backbone trains, on the loop, evaluation,
    checkpoints and exact resume of the prompt Trainer. The model carries no prompt (an empty one: `PromptedLM`
    with `SoftPrompt` of length 0), and `model.train()` turns the backbone's dropout on, as fine-tuning does.

    Files: the resume checkpoint holds every weight (with the optimizer's state), and the weights at the best
    validation score are kept once, as a Hugging Face model folder (`RunDir.best_model`: `from_pretrained` loads it;
    each better score replaces it). No prompt files, checkpoints per evaluation or task embedding are written, and
    the tracker gets the run's parameters, metrics and result, not the weights."""

    STATE = "model_state"

    def __init__(self, config: TrainerConfig, model: PromptedLM, data: RunData, *args: Any, **kwargs: Any):
        if model.prompt_length:
            raise ConfigError(
                f"model tuning trains the backbone without a prompt; this model carries a prompt of length "
                f"{model.prompt_length}: give it an empty one (SoftPrompt of shape [0, H])"
            )
        if config.embedding_step is not None:
            raise ConfigError("trainer.embedding_step: model tuning writes no task embedding; leave it unset (null)")
        model.model.requires_grad_(True)  # the backbone was loaded frozen, for prompt tuning
        super().__init__(config, model, data, *args, **kwargs)

    def trained(self) -> torch.nn.Module:
        return self.model.model

    def start(self) -> _State:
        old = self.run.best_model.with_name(f".{RunDir.BEST_MODEL}-old")
        if old.exists() and not self.run.best_model.exists():  # killed between save_model_folder's two renames
            old.rename(self.run.best_model)
        return super().start()

    def save(self, kind: str, step: int, **extra: Any) -> Path | None:
        if kind != "best":
            return None
        return save_model_folder(self.run.best_model, self.model.model, {"step": step, **self.metadata, **extra})


def save_model_folder(path: Path, model: torch.nn.Module, metadata: dict[str, Any]) -> Path:
    """A transformers model as a Hugging Face model folder at `path` (its config, its weights in safetensors and
    `spot.json`: `metadata`), replacing what is there only once the new folder is complete."""
    import json
    import shutil
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        model.save_pretrained(tmp)
        (tmp / "spot.json").write_text(json.dumps(metadata, indent=1, sort_keys=True))
        follow_umask(tmp)
        old = path.with_name(f".{path.name}-old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def accumulate_gradients(
    model: PromptedLM, examples: Sequence[Encoded], codec: Codec, micro_batch_size: int
) -> torch.Tensor:
    """Backpropagates the batch's mean target-token loss, `micro_batch_size` examples at a time.

    Each chunk's summed loss is divided by the whole batch's target-token count, so the gradient
    equals one pass over the batch (up to float rounding) with a fraction of the activation memory.
    In prompt-once mode the prompt runs once for the whole batch: the chunks share its states, and
    their gradients go back through it once at the end. Stops at the first non-finite chunk.
    Returns the batch's mean loss (detached).
    """
    device = model.device
    n_targets = sum(len(e.target_ids) for e in examples)
    prompt = model.prompt_states(leaves=True) if model.shares_prompt else None
    total = torch.zeros((), device=device)
    if micro_batch_size < len(examples):  # the chunks' sum is the same in any order: chunks of like lengths pad less
        examples = sorted(examples, key=length)
    for start in range(0, len(examples), micro_batch_size):
        batch = to_device(collate(examples[start : start + micro_batch_size], codec), device)
        chunk = model.loss(batch, reduction="sum", prompt=prompt)
        if not torch.isfinite(chunk):
            return chunk.detach()
        (chunk / n_targets).backward()
        total += chunk.detach()
    if prompt is not None:
        prompt.backward()
    return total / n_targets
