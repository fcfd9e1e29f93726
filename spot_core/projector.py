"""Cross-model prompt projection (Su et al. 2022, section 5): an MLP that maps a prompt trained on model A into
model B's input-embedding space.

    P_b = reshape(W2 act(W1 flatten(P_a) + b1) + b2)       P_a [L, H_a] -> P_b [L, H_b]

Two ways to train it, as in the paper:
    distance      regress onto B's own prompt for the same task: minimise mean((proj(P_a) - P_b)^2) over the
                  training tasks' prompt pairs (needs a prompt trained on B for each training task).
    task_tuning   train the projector through B's frozen forward pass on the training tasks' loss, the
                  projected prompt standing where B's soft prompt would (needs only B and the task data).
Then a prompt of A for any other task is projected and used on B zero-shot or as B's initial prompt.

The paper's projector is flatten -> 768 -> LeakyReLU -> flatten; the optimiser and its learning rate are not
stated (unverified): AdamW at 1e-3 here, both configurable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn

from spot_core.config import check_int, check_number, parse_choice
from spot_core.encoding import batch_indices
from spot_core.evaluation import MixtureData, TaskData
from spot_core.prompted import PromptedLM
from spot_core.prompts import PromptModule, PromptShapeError
from spot_core.trainer import NonFiniteLossError, accumulate_gradients


class ProjectorMethod(StrEnum):
    DISTANCE = "distance"
    TASK_TUNING = "task_tuning"


class Activation(StrEnum):
    LEAKY_RELU = "leaky_relu"
    RELU = "relu"
    GELU = "gelu"
    TANH = "tanh"


ACTIVATIONS = {
    Activation.LEAKY_RELU: nn.LeakyReLU,
    Activation.RELU: nn.ReLU,
    Activation.GELU: nn.GELU,
    Activation.TANH: nn.Tanh,
}


@dataclass
class ProjectorConfig:
    """The projector's shape and how it is trained."""

    method: ProjectorMethod = ProjectorMethod.TASK_TUNING
    hidden: int = 768
    activation: Activation = Activation.LEAKY_RELU
    steps: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 8  # task_tuning: examples per step (tasks take turns)
    eval_batch_size: int = 16
    seed: int = 0

    SETTING = "projector"  # a study's is study.cross_model.projector (config.nested)

    def __post_init__(self):
        self.method = parse_choice(ProjectorMethod, self.method, "projector.method")
        self.activation = parse_choice(Activation, self.activation, "projector.activation")
        for name in ("hidden", "steps", "batch_size", "eval_batch_size"):
            check_int(getattr(self, name), f"projector.{name}")
        check_number(self.lr, "projector.lr", positive=True)
        check_number(self.weight_decay, "projector.weight_decay")


class PromptProjector(nn.Module):
    """[L, H_a] (or [N, L, H_a]) -> [L, H_b] (or [N, L, H_b]) through one hidden layer over the flattened prompt."""

    def __init__(self, length: int, source_hidden: int, target_hidden: int, hidden: int = 768, activation="leaky_relu"):
        super().__init__()
        self.length, self.source_hidden, self.target_hidden = length, source_hidden, target_hidden
        self.net = nn.Sequential(
            nn.Linear(length * source_hidden, hidden),
            ACTIVATIONS[Activation(activation)](),
            nn.Linear(hidden, length * target_hidden),
        )

    @classmethod
    def from_config(cls, config: ProjectorConfig, length: int, source_hidden: int, target_hidden: int):
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            return cls(length, source_hidden, target_hidden, config.hidden, config.activation)

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        if prompt.shape[-2:] != (self.length, self.source_hidden):
            raise PromptShapeError(
                f"the projector maps prompts of shape [{self.length}, {self.source_hidden}] (length x the source "
                f"model's hidden size), got {tuple(prompt.shape)}"
            )
        lead = prompt.shape[:-2]
        out = self.net(prompt.reshape(*lead, -1).float())
        return out.reshape(*lead, self.length, self.target_hidden)


class ProjectedPrompt(PromptModule):
    """A prompt module whose prompt [L, H_b] is the projection of a fixed source prompt, so B's loss trains the
    projector (task tuning)."""

    def __init__(self, projector: PromptProjector, source: torch.Tensor):
        super().__init__()
        self.projector = projector
        self.register_buffer("source", source.detach().float().clone())

    def forward(self) -> torch.Tensor:
        return self.projector(self.source)


def _optimizer(projector: PromptProjector, config: ProjectorConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(projector.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _check_finite(loss: torch.Tensor, step: int, config: ProjectorConfig) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"projector loss is {loss.item()} at step {step} (method {config.method}, lr {config.lr}); "
            "lower projector.lr"
        )


def fit_distance(
    projector: PromptProjector,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    config: ProjectorConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Distance minimising: full-batch regression of proj(P_a) onto P_b over the (P_a [L, H_a], P_b [L, H_b])
    pairs of the training tasks. Returns the loss after each step's update is computed (before it)."""
    if not pairs:
        raise ValueError("distance minimising needs at least one (source prompt, target prompt) pair")
    a = torch.stack([p for p, _ in pairs]).float()
    b = torch.stack([q for _, q in pairs]).float()
    if b.shape[1:] != (projector.length, projector.target_hidden):
        raise PromptShapeError(
            f"target prompts must be [{projector.length}, {projector.target_hidden}], got {tuple(b.shape[1:])}"
        )
    opt, losses = _optimizer(projector, config), []
    projector.train()
    for step in range(1, config.steps + 1):
        loss = F.mse_loss(projector(a), b)
        _check_finite(loss, step, config)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step:
            on_step(step, losses[-1])
    return losses


def fit_task(
    projector: PromptProjector,
    models: Sequence[tuple[PromptedLM, TaskData | MixtureData]],
    config: ProjectorConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Task tuning: each model is B (frozen) wearing a ProjectedPrompt of one training task's source prompt;
    the tasks take turns, one batch of `batch_size` examples per step, and only the projector learns.
    Returns each step's mean target-token loss."""
    if not models:
        raise ValueError("task tuning needs at least one training task")
    for model, _ in models:
        if not isinstance(model.prompt, ProjectedPrompt) or model.prompt.projector is not projector:
            raise ValueError("task tuning needs models whose prompt is a ProjectedPrompt of this projector")
    opt, losses = _optimizer(projector, config), []
    torch.manual_seed(config.seed)  # B's dropout (T5): the same cell trains the same projector in any worker
    for step in range(1, config.steps + 1):
        model, data = models[(step - 1) % len(models)]
        model.train()
        turn = (step - 1) // len(models)  # each task walks through its own shuffled epochs
        examples = [data.train[i] for i in batch_indices(turn, config.batch_size, len(data.train), config.seed)]
        loss = accumulate_gradients(model, examples, data.codec, config.batch_size)
        _check_finite(loss, step, config)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step:
            on_step(step, losses[-1])
    for model, _ in models:
        model.eval()
    return losses


@torch.no_grad()
def project(projector: PromptProjector, prompt: torch.Tensor) -> torch.Tensor:
    """One prompt of A [L, H_a] -> [L, H_b] for B (detached, float32)."""
    was = projector.training
    projector.eval()
    out = projector(prompt).detach().float()
    projector.train(was)
    return out
