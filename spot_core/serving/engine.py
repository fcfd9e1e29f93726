"""One frozen model answering rows of many tasks in shared batches (`Predictor`).

Each row carries the index of its prompt among the batch's prompts, as packed training does
(`spot_core.packing`): nothing in the backbone mixes the examples of a batch, so each row gets what scoring it
alone with its task's prompt gives (`spot_core.evaluation.predict`), to float rounding.
- Decoder-only (prompt once): each prompt's keys and values are computed once and kept in a `PromptCache` bounded
  in bytes; a batch stacks its prompts' states and every row runs on its own prompt's. A row then costs its own
  tokens only.
- T5: the prompt is prepended to each row's embedded input, as in evaluation (`PromptedLM.embed`).

Rank classification: each row runs its own task's labels as a prefix tree, the rows of every task in one call
(`spot_core.scoring.label_scores_per_row`): a row costs its input and its own labels' tokens.
Generation: greedy, up to the longest `max_target_tokens` of the batch's tasks, each row cut to its own task's.
Batches hold rank-classification rows or generation rows, of one prompt length, sorted by input length
(`spot_core.evaluation.in_batches`); with a sliding-window model, generation batches hold inputs of one length.
A batch that does not fit the GPU is taken again in halves, and later batches keep the smaller size.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from spot_core.backbones import Backbone
from spot_core.encoding import Codec
from spot_core.evaluation import in_batches
from spot_core.prompted import PromptedLM, PromptStates
from spot_core.prompts import SoftPrompt
from spot_core.scoring import generate, has_sliding_window, label_scores_per_row
from spot_core.serving.cache import PromptCache
from spot_core.serving.prompts import Request, TaskPrompt


@dataclass(frozen=True)
class Prediction:
    """What a row gets: the entry that answered it, the task, the label (rank classification) or generated text,
    and each label's log-likelihood (summed over its tokens) where the task has labels."""

    entry: str
    task: str
    prediction: str
    scores: dict[str, float] | None = None
    id: Any = None

    def to_json(self, row: int | None = None) -> dict[str, Any]:
        """The output row: its number (`row`, counted from 1) where given, the row's id where it had one, then the
        prediction."""
        out = {"row": row} if row is not None else {}
        out |= {"id": self.id} if self.id is not None else {}
        return out | {"entry": self.entry, "task": self.task, "prediction": self.prediction, "scores": self.scores}


@dataclass
class Throughput:
    """What `Predictor.predict` has done: rows, calls, and the seconds they took."""

    rows: int = 0
    calls: int = 0
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


class Predictor:
    """Answers `Request`s with one frozen backbone (see the module).

    Args:
        backbone: the frozen model, loaded once.
        codec: how inputs and labels are tokenized (the model's `max_input_tokens`, `max_target_tokens`).
        batch_size: rows per forward pass.
        cache_bytes: the prompt cache's bound (decoder-only prompt states; T5's prompts).
        prompt_once: decoder-only: run on cached prompt states (None: wherever it applies); False: prepend each
            row's prompt to its input (the reference path).

    One `predict` at a time: its prompt cache and engines are not shared between threads (a server runs its
    batches one after another).
    """

    def __init__(
        self,
        backbone: Backbone,
        codec: Codec,
        batch_size: int = 32,
        cache_bytes: int = 256 << 20,
        prompt_once: bool | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backbone, self.codec, self.batch_size = backbone, codec, batch_size
        self.prompt_once = prompt_once
        self.cache: PromptCache = PromptCache(cache_bytes)
        self.throughput = Throughput()
        self._engines: dict[int, PromptedLM] = {}
        self._labels: dict[str, list[list[int]]] = {}

    def engine(self, length: int) -> PromptedLM:
        """A prompted model for prompts of `length` (the prompts themselves are passed per batch)."""
        if length not in self._engines:
            placeholder = SoftPrompt(torch.zeros(length, self.backbone.hidden_size))
            self._engines[length] = PromptedLM(self.backbone, placeholder, self.prompt_once).eval()
        return self._engines[length]

    def states(self, prompt: TaskPrompt) -> PromptStates | torch.Tensor:
        """The prompt's keys/values (prompt once) or the prompt on the model's device, from the cache."""
        engine = self.engine(prompt.length)

        def compute() -> PromptStates | torch.Tensor:
            tensor = prompt.prompt.to(engine.device)
            if not engine.shares_prompt:
                return tensor
            with torch.no_grad():
                return engine.prompt_states(prompts=tensor[None])

        return self.cache.get(prompt.id, compute)

    def label_ids(self, request: Request) -> list[list[int]] | None:
        task = request.task
        if task.label_words is None:
            return None
        if task.name not in self._labels:
            self._labels[task.name] = [self.codec.encode_target(w) for w in task.label_words]
        return self._labels[task.name]

    @torch.no_grad()
    def predict(self, requests: Sequence[Request]) -> list[Prediction]:
        """Each request's prediction, in the order given."""
        start = time.perf_counter()
        out: list[Prediction | None] = [None] * len(requests)
        groups: dict[tuple[bool, int], list[int]] = {}
        lengths = [len(r.input_ids) for r in requests]
        for i, r in enumerate(requests):
            groups.setdefault((r.task.label_words is None, r.prompt.length), []).append(i)
        for (generating, length), members in groups.items():
            order = sorted(members, key=lambda i: lengths[i])
            one_length = generating and has_sliding_window(self.engine(length))
            done, self.batch_size = in_batches(
                order,
                lengths,
                self.batch_size,
                one_length,
                lambda idx, generating=generating: self._batch([requests[i] for i in idx], generating),
            )
            for i, p in done.items():
                out[i] = p
        self.throughput.rows += len(requests)
        self.throughput.calls += 1
        self.throughput.seconds += time.perf_counter() - start
        return out  # type: ignore[return-value]

    def _batch(self, requests: list[Request], generating: bool) -> list[Prediction]:
        engine = self.engine(requests[0].prompt.length)
        distinct = list({r.prompt.id: r.prompt for r in requests}.values())
        where = {p.id: i for i, p in enumerate(distinct)}
        rows = torch.tensor([where[r.prompt.id] for r in requests], device=engine.device)
        prompts = stack([self.states(p) for p in distinct])
        inputs = [r.input_ids for r in requests]
        if generating:
            steps = max(r.task.max_target_tokens for r in requests)
            texts = generate(engine, inputs, steps, prompts, rows)
            return [
                Prediction(r.prompt.id, r.task.name, self.codec.decode(ids[: r.task.max_target_tokens]), None, r.id)
                for r, ids in zip(requests, texts, strict=True)
            ]
        sets = list({r.task.name: r for r in requests}.values())  # one label set per task of the batch
        of_task = {r.task.name: i for i, r in enumerate(sets)}
        label_sets = [self.label_ids(r) for r in sets]
        of_row = [of_task[r.task.name] for r in requests]
        scores = label_scores_per_row(engine, inputs, label_sets, of_row, prompts, rows)
        out = []
        for r, row in zip(requests, scores, strict=True):
            mine = dict(zip(r.task.label_words, row.tolist(), strict=True))
            best = r.task.label_words[int(row.argmax())]
            out.append(Prediction(r.prompt.id, r.task.name, best, mine, r.id))
        return out


def stack(states: Sequence[PromptStates | torch.Tensor]) -> PromptStates | torch.Tensor:
    """P prompts' states (each a batch of one) as one batch of P; P prompts [L, H] as [P, L, H]."""
    if isinstance(states[0], torch.Tensor):
        return torch.stack(list(states))
    if len(states) == 1:
        return states[0]
    first = states[0]
    keys = [torch.cat([s.keys[i] for s in states]) for i in range(len(first.keys))]
    values = [torch.cat([s.values[i] for s in states]) for i in range(len(first.values))]
    return PromptStates(first.length, keys, values, first.dtype)
