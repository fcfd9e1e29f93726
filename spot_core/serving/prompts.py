"""The prompts one model serves (`PromptSet`), from a prompt library or prompt files, and the rows it is asked
to answer (`Request`): each names a library entry or a task, and holds the task's fields or its input text.

A row names `entry` (a library entry's id, or a prompt file's), `task`, or both:
- `entry` alone: the entry's own task (an entry trained on a mixture needs `task`, one task to answer);
- `task` alone: the best-scoring entry of that task for the model (then the lowest id);
- both: the entry's prompt on that task (Su et al.'s zero-shot cross-task transfer).
The rest of the row is the task's fields, as its data rows hold them (no label needed: `task_inputs`), or
`inputs`, the model input text itself. An optional `id` is echoed back in the prediction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spot_core.encoding import Codec
from spot_core.errors import SpotError
from spot_core.library import Entry, Library, sha256
from spot_core.library.entry import ID_LENGTH
from spot_core.prompt_files import PEFT_WEIGHTS, is_safetensors, load_prompt, read_prompt_file
from spot_core.prompts import check_shape
from spot_core.tasks import get
from spot_core.tasks.base import Mixture, Task, UnknownNameError
from spot_core.tasks.inputs import task_inputs
from spot_core.tasks.rows import RowError


class RequestError(SpotError, ValueError):
    """A row that cannot be answered; the message names the row and, where one is at fault, `field`."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class TaskPrompt:
    """One served prompt: its id, the task it was trained on (a task's or a mixture's name), the [L, H] float32
    prompt, and what `GET /entries` says of it."""

    id: str
    task: str
    model: str
    prompt: torch.Tensor = field(repr=False, compare=False)
    score: float = math.nan
    info: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def length(self) -> int:
        return self.prompt.shape[0]

    @classmethod
    def of_entry(cls, entry: Entry) -> TaskPrompt:
        info = {k: entry.fields()[k] for k in ("task", "model", "prompt_length", "score", "metrics", "seed", "steps")}
        info |= {"provenance": entry.provenance}
        return cls(entry.id, entry.task, entry.model, entry.best_prompt(), entry.score, info)

    @classmethod
    def of_file(cls, path: str | Path) -> TaskPrompt:
        """A prompt file (any format `read_prompt_file` reads; its id: the first 16 hex digits of its sha256, a PEFT
        adapter's weights'); a spot file's metadata names its task, model and score."""
        path = Path(path)
        tensor, model = read_prompt_file(path)
        meta = load_prompt(path)[1] if path.is_file() and is_safetensors(path) else {}
        task, score = meta.get("task"), meta.get("score")
        task = task if isinstance(task, str) else ""
        score = float(score) if isinstance(score, int | float) and not isinstance(score, bool) else math.nan
        info = {"task": task or None, "model": model, "prompt_length": tensor.shape[0]}
        info |= {"score": None if math.isnan(score) else score}
        info |= {"file": str(path)}
        digest = sha256(path if path.is_file() else path / PEFT_WEIGHTS)[:ID_LENGTH]
        return cls(digest, task, model or "", tensor, score, info)


@dataclass(frozen=True)
class Request:
    """One row to answer: the prompt it runs with, the task whose format and labels it uses, its input ids."""

    prompt: TaskPrompt
    task: Task
    input_ids: list[int]
    id: Any = None


class PromptSet:
    """The prompts of one model, by id; `others`: ids of entries for other models (named in messages)."""

    def __init__(self, model: str, prompts: Sequence[TaskPrompt], others: Mapping[str, str] | None = None):
        self.model = model
        self.prompts = {p.id: p for p in prompts}
        self.others = dict(others or {})
        best: dict[str, TaskPrompt] = {}
        for p in sorted(prompts, key=lambda p: (-p.score if not math.isnan(p.score) else math.inf, p.id)):
            best.setdefault(p.task, p)
        self.best = best  # task -> its best prompt

    def __len__(self) -> int:
        return len(self.prompts)

    @classmethod
    def from_library(cls, library: Library, model: str, hidden_size: int) -> PromptSet:
        mine = [e for e in library.entries if e.model == model]
        prompts = [TaskPrompt.of_entry(e) for e in mine]
        for p in prompts:
            check_shape(p.prompt, None, hidden_size, what=f"library entry {p.id}", model=model)
        return cls(model, prompts, {e.id: e.model for e in library.entries if e.model != model})

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], model: str, hidden_size: int) -> PromptSet:
        prompts = [TaskPrompt.of_file(path) for path in paths]
        for p, path in zip(prompts, paths, strict=True):
            check_shape(p.prompt, None, hidden_size, what=f"prompt file {path}", model=model, trained_on=p.model)
        return cls(model, prompts)

    def pick(self, row: Mapping[str, Any], place: str) -> tuple[TaskPrompt, Task]:
        """The prompt and the task a row names (see the module)."""
        entry, task = (_text(row, key, place) for key in ("entry", "task"))
        if entry is None and task is None:
            raise RequestError(f"{place} names no entry and no task: give \"entry\" (an entry's id) or "
                               "\"task\"", "entry")  # fmt: skip
        prompt = self._entry(entry, place) if entry is not None else None
        name = task if task is not None else prompt.task
        if not name:
            raise RequestError(f'{place}: entry {prompt.id}\'s file does not say its task: name it in "task"', "task")
        try:
            found = get(name)
        except UnknownNameError as e:
            raise RequestError(f"{place}: {e}", "task") from None
        if isinstance(found, Mixture):
            hint = f"entry {prompt.id} was trained on the mixture {name!r}; " if task is None else ""
            raise RequestError(f'{place}: {hint}name one of its tasks in "task": {", ".join(found.tasks)}', "task")
        if prompt is None:
            prompt = self.best.get(found.name)
            if prompt is None:
                tasks = ", ".join(sorted(t for t in self.best if t)) or "none"
                raise RequestError(
                    f"{place}: no prompt of task {found.name!r} for model {self.model} (its tasks: {tasks}); name an "
                    '"entry" to run another task\'s prompt on it',
                    "task",
                )
        return prompt, found

    def _entry(self, id: str, place: str) -> TaskPrompt:
        if id in self.prompts:
            return self.prompts[id]
        if id in self.others:
            raise RequestError(f"{place}: entry {id} is a prompt for model {self.others[id]}; this one serves "
                               f"{self.model}", "entry")  # fmt: skip
        ids = sorted(self.prompts)
        listed = ", ".join(ids[:6]) + (f" and {len(ids) - 6} more" if len(ids) > 6 else "")
        raise RequestError(f"{place}: no entry {id!r}; the entries served are {listed or 'none'}", "entry")

    def request(self, row: Any, codec: Codec, place: str) -> Request:
        """The request a row makes: its prompt, task and input ids, all checked (RequestError naming the field)."""
        if not isinstance(row, dict):
            raise RequestError(f"{place} must be a JSON object, got {type(row).__name__}")
        prompt, task = self.pick(row, place)
        text = _text(row, "inputs", place)
        if text is None:
            try:
                text = task_inputs(task, row, place)
            except RowError as e:
                raise RequestError(str(e), e.field) from None
        ids = codec.input_ids(text)
        if len(ids) > codec.max_input_tokens:
            raise RequestError(f"{place}: its input is {len(ids)} tokens, over the limit of {codec.max_input_tokens}"
                               " (model.max_input_tokens): shorten it", "inputs")  # fmt: skip
        return Request(prompt, task, ids, row.get("id"))


def _text(row: Mapping[str, Any], key: str, place: str) -> str | None:
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError(f"{place}: field {key!r} must be a string, got {type(value).__name__}", key)
    return value
