"""The soft prompt: one trainable [L, H] matrix, and the functions that initialise it.

Every initialiser returns a float32 tensor of shape [L, H] and checks shapes; a
`SoftPrompt` is then built from that tensor. Transfer is `SoftPrompt(read_prompt(path))`
(`spot_core.prompt_files`): no special code path.

A prompt module (`PromptModule`) is what `PromptedLM` prepends and the `Trainer` trains: an `nn.Module` whose
`forward()`, called with no arguments, returns the [L, H] prompt (H the backbone's hidden size, the same shape on
every call), computed from its parameters and buffers. The Trainer asks nothing else of it: it optimises
`parameters()`, checkpoints and restores `state_dict()`, and saves what `forward()` returns as the run's prompt
files. `SoftPrompt` is the plain one (forward returns its one parameter); a prompt computed from other parameters
(a projection of a fixed source prompt, a mixture of source prompts, a decomposition) is another.

A prompt that depends on the input (ATTEMPT's attention over source prompts, `spot_core.methods.attempt`) sets
`per_example = True` and gives each example its own prompt from `for_inputs(embeds, mask)`; its `forward()` is then
the part of the prompt that does not depend on the input (what its prompt files hold). `PromptedLM` runs such a
prompt on the concatenated path: a prompt computed per example cannot run once per batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

import torch
from torch import nn

from spot_core.errors import ConfigError, SpotError


class PromptInit(StrEnum):
    """How a fresh prompt is initialised (SPoT section 2 / Lester et al. 2021)."""

    RANDOM_UNIFORM = "random_uniform"
    SAMPLED_VOCAB = "sampled_vocab"
    CLASS_LABELS = "class_labels"
    FILE = "file"
    WEIGHTED_AVERAGE = "weighted_average"
    ZEROS = "zeros"  # an ATTEMPT target prompt (study.attempt.target_init): instance prompts start as the mixture


class PromptShapeError(SpotError, ValueError):
    """A prompt does not fit the model or the other prompts it is combined with."""


class PromptModule(nn.Module):
    """The interface of a prompt module (see the module docstring): `forward() -> [L, H]`, plus nn.Module's
    `parameters()` and `state_dict()`."""

    per_example = False  # True: each example gets its own prompt from `for_inputs`

    def forward(self) -> torch.Tensor:
        """The prompt, [L, H] (a per-example prompt: the part that does not depend on the input)."""
        raise NotImplementedError

    def for_inputs(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A per-example prompt's prompts for a batch: [B, T, H] embedded inputs and their [B, T] mask ->
        [B, L, H]."""
        raise NotImplementedError(f"{type(self).__name__} is not a per-example prompt")


class SoftPrompt(PromptModule):
    """Owns the one trainable parameter `weight` of shape [L, H]; `forward()` returns it."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        if init.dim() != 2:
            raise PromptShapeError(f"a soft prompt is a 2-D [L, H] matrix; got shape {tuple(init.shape)}")
        self.weight = nn.Parameter(init.detach().to(torch.float32).clone())

    @property
    def length(self) -> int:
        return self.weight.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.weight.shape[1]

    def forward(self) -> torch.Tensor:
        """The prompt, [L, H] (the parameter itself)."""
        return self.weight


class FactoredPrompt(PromptModule):
    """MPT's prompt (Wang et al. 2023): a shared prompt P* [L, H] times, elementwise, a rank-r matrix u_k v_k^T of
    task k's own (u_k [L, r], v_k [r, H]).

    With one task, `forward()` is that task's prompt. With several (MPT's source run), `task` picks the one
    `forward()` gives, None the shared prompt itself, and `task_prompts()` gives them all, [T, L, H].

    The factors start at u = 1, v = 1/r, so every task's prompt starts at P* (r > 1: v gets noise of std 0.01/r
    from `generator`, or the r components would stay alike); or, given `factors` (u [L, r], v [r, H]: a source
    run's, `source_factors`), every task's start at those. `train_shared` False: P* is a fixed buffer.
    """

    def __init__(
        self,
        shared: torch.Tensor,
        tasks: int = 1,
        rank: int = 1,
        train_shared: bool = True,
        generator: torch.Generator | None = None,
        factors: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        super().__init__()
        if shared.dim() != 2:
            raise PromptShapeError(f"a shared prompt is a 2-D [L, H] matrix; got shape {tuple(shared.shape)}")
        shared = shared.detach().to(torch.float32).clone()
        if train_shared:
            self.shared = nn.Parameter(shared)
        else:
            self.register_buffer("shared", shared)
        (L, H), r = shared.shape, rank
        if factors is None:
            u, v = torch.ones(tasks, L, r), torch.full((tasks, r, H), 1.0 / r)
            if r > 1:
                v += torch.randn(tasks, r, H, generator=generator) * (0.01 / r)
        else:
            u, v = (f.detach().to(torch.float32) for f in factors)
            if tuple(u.shape) != (L, r) or tuple(v.shape) != (r, H):
                raise PromptShapeError(
                    f"factors u {tuple(u.shape)} and v {tuple(v.shape)} do not fit a rank-{r} prompt of shape "
                    f"{(L, H)}: u must be [{L}, {r}] and v [{r}, {H}]"
                )
            u, v = u.expand(tasks, L, r).clone(), v.expand(tasks, r, H).clone()
        self.u = nn.Parameter(u)
        self.v = nn.Parameter(v)
        self.task: int | None = 0 if tasks == 1 else None

    def task_prompts(self) -> torch.Tensor:
        """Every task's prompt, [T, L, H]."""
        return self.shared[None] * (self.u @ self.v)

    def forward(self) -> torch.Tensor:
        """Task `task`'s prompt; the shared prompt when `task` is None."""
        if self.task is None:
            return self.shared
        return self.shared * (self.u[self.task] @ self.v[self.task])


def source_factors(state: Mapping[str, torch.Tensor], task: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A target's starting factors from an MPT source run's module (a `FactoredPrompt`'s state: u [T, L, r],
    v [T, r, H]): task `task`'s own (PEFT's EXACT_SOURCE_TASK), or (None) the mean of the tasks' u and the mean of
    their v, each averaged alone (PEFT's AVERAGE_SOURCE_TASKS: the product of the means, not the mean of the
    products). Returns (u [L, r], v [r, H]).

    Raises:
        PromptShapeError: the state holds no task factors, or no task `task`.
    """
    if "u" not in state or "v" not in state or state["u"].dim() != 3 or state["v"].dim() != 3:
        raise PromptShapeError(f"not an MPT source run's module: it holds {sorted(state)}, not factors u and v")
    u, v = state["u"], state["v"]
    if task is None:
        return u.mean(0), v.mean(0)
    if not 0 <= task < u.shape[0]:
        raise PromptShapeError(f"the MPT source module holds the factors of {u.shape[0]} tasks, not of task {task}")
    return u[task], v[task]


def trainable_parameters(module: nn.Module) -> int:
    """How many numbers training changes: the module's parameters that take gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_shape(
    prompt: torch.Tensor,
    length: int | None,
    hidden_size: int,
    *,
    what: str,
    model: str | None,
    trained_on: str | None = None,
    length_setting: str | None = "prompt.length",
) -> None:
    """Raises PromptShapeError unless `prompt` is [length, hidden_size] (length None = any), saying which is wrong:
    the rank (not a 2-D matrix), the width (another model's hidden size) or the length, and what fixes it.

    Args:
        what: the prompt, leading the message ("prompt file x.safetensors").
        model: the name of the model it is for (None: unnamed, only its hidden size is known).
        trained_on: the model the prompt was trained on, where its file says (named in a width error).
        length_setting: the setting that sets the length (its fix: set it to the prompt's length); None: the
            length is fixed here (a projector's), and no setting fixes it.
    """
    shape, want = tuple(prompt.shape), f"[{length if length is not None else 'L'}, {hidden_size}]"
    model = f"model {model!r}" if model else "the model"
    if prompt.dim() != 2:
        raise PromptShapeError(
            f"{what} holds a {prompt.dim()}-D tensor of shape {shape}, not a prompt: a prompt is a 2-D "
            f"[length, hidden size] matrix, and {model} needs {want}"
        )
    L, H = shape
    if H != hidden_size:
        origin = f" (trained on {trained_on!r})" if trained_on else ""
        raise PromptShapeError(
            f"{what} has shape {shape}: a prompt for hidden size {H}{origin}, but {model} needs {want} "
            f"(hidden size {hidden_size}). Train a prompt on this model, or project this one into it "
            "(study.cross_model)"
        )
    if length is not None and L != length:
        if length_setting:
            raise PromptShapeError(
                f"{what} has shape {shape}: a prompt of length {L}, but {length_setting}={length} ({model} "
                f"needs {want}). Set {length_setting}={L} to use it"
            )
        raise PromptShapeError(f"{what} has shape {shape}: a prompt of length {L}, but {model} needs {want}")


def random_uniform(length: int, hidden_size: int, scale: float, generator: torch.Generator) -> torch.Tensor:
    """U[-scale, scale] entries, [L, H] (SPoT's 'random uniform'; the reference code uses U[0, 0.5))."""
    if scale <= 0:
        raise ValueError(f"random_uniform scale must be > 0, got {scale}")
    return (torch.rand(length, hidden_size, generator=generator) * 2 - 1) * scale


def sampled_vocab(
    embeddings: torch.Tensor,
    length: int,
    generator: torch.Generator,
    population: int | Sequence[int] = 5000,
) -> torch.Tensor:
    """Rows of the input embedding matrix, drawn without replacement where possible.

    Args:
        embeddings: [V, H] input embedding matrix.
        length: L, rows to draw.
        population: either N (the first N token ids: SentencePiece and BPE vocabularies are
            ordered roughly by frequency, which is how the reference code reads "the 5,000 most
            frequent tokens") or an explicit list of token ids.

    Returns:
        [L, H] float32.
    """
    ids = (
        torch.arange(min(population, embeddings.shape[0]))
        if isinstance(population, int)
        else torch.as_tensor(list(population), dtype=torch.long)
    )
    if ids.numel() == 0:
        raise ValueError("sampled_vocab needs a non-empty token population")
    if ids.max() >= embeddings.shape[0]:
        raise ValueError(f"sampled_vocab population has id {int(ids.max())} >= vocabulary size {embeddings.shape[0]}")
    if length <= ids.numel():
        pick = ids[torch.randperm(ids.numel(), generator=generator)[:length]]
    else:
        pick = ids[torch.randint(ids.numel(), (length,), generator=generator)]
    return embeddings[pick].detach().to(torch.float32).clone()


def class_labels(
    embeddings: torch.Tensor,
    label_token_ids: Sequence[Sequence[int]],
    length: int,
    generator: torch.Generator,
    population: int | Sequence[int] = 5000,
) -> torch.Tensor:
    """Row i = mean embedding of label i's subword tokens; the remaining rows are sampled vocab.

    Args:
        embeddings: [V, H] input embedding matrix.
        label_token_ids: one list of token ids per label word (as tokenized for the target side).
        length: L; must be >= the number of labels (`check_class_label_length`).

    Returns:
        [L, H] float32.
    """
    check_class_label_length(len(label_token_ids), length)
    if any(len(ids) == 0 for ids in label_token_ids):
        raise ValueError("class_labels init got a label word that tokenizes to no tokens")
    rows = [embeddings[torch.as_tensor(list(ids))].to(torch.float32).mean(0) for ids in label_token_ids]
    rest = sampled_vocab(embeddings, length - len(rows), generator, population)
    return torch.cat([torch.stack(rows).detach(), rest]) if rows else rest


def check_class_label_length(
    labels: int,
    length: int,
    who: str = "",
    length_setting: str = "prompt.length",
    init_setting: str = "prompt.init",
) -> None:
    """The rule of the class-label init, for a planner to check before any model loads: one prompt token per label
    word (`labels` of them), so the prompt length must be at least `labels`.

    Args:
        who: what the init is for, leading the message ("task 'stsb_v1': ").
        length_setting, init_setting: the settings that fix it, as the user writes them.

    Raises:
        ConfigError: naming the number needed and both fixes.
    """
    if labels > length:
        raise ConfigError(
            f"{who}class_labels init needs one prompt token per label word: {labels} label words, but "
            f"{length_setting}={length}. Set {length_setting}>={labels}, or {init_setting}=sampled_vocab"
        )


def weighted_average(prompts: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """sum_r w_r * P_r over prompts of equal shape [L, H]; weights must be non-negative and are used as given."""
    if not prompts:
        raise ValueError("weighted_average needs at least one prompt")
    if len(prompts) != len(weights):
        raise ValueError(f"weighted_average got {len(prompts)} prompts but {len(weights)} weights")
    shape = prompts[0].shape
    for i, p in enumerate(prompts):
        if p.shape != shape:
            raise PromptShapeError(
                f"weighted_average: prompt {i} has shape {tuple(p.shape)}, prompt 0 has {tuple(shape)}"
            )
    if any(w < 0 for w in weights):
        raise ValueError(f"weighted_average weights must be >= 0, got {list(weights)}")
    stacked = torch.stack([p.to(torch.float32) for p in prompts])
    w = torch.as_tensor(list(weights), dtype=torch.float32).view(-1, 1, 1)
    return (stacked * w).sum(0)


def similarity_weights(similarities: Sequence[float]) -> list[float]:
    """SPoT's top-k weights a_r = sim_r / sum_l sim_l (they sum to 1)."""
    total = float(sum(similarities))
    if total <= 0:
        raise ValueError(f"similarity weights need a positive sum, got {list(similarities)}")
    return [float(s) / total for s in similarities]


def prefix(prompt: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prepends a prompt to embedded inputs.

    Args:
        prompt: [B, L, H] (or [L, H], broadcast over the batch).
        embeds: [B, T, H] embedded input tokens.
        mask: [B, T] attention mask (1 = attend).

    Returns:
        ([B, L + T, H] embeddings, [B, L + T] mask with ones over the prompt).
    """
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(embeds.shape[0], -1, -1)
    prompt = prompt.to(embeds.dtype)
    ones = torch.ones(mask.shape[0], prompt.shape[1], dtype=mask.dtype, device=mask.device)
    return torch.cat([prompt, embeds], dim=1), torch.cat([ones, mask], dim=1)
