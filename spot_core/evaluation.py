"""Scoring a prompted model on a task's examples, and the encoded data of a run (a task, or a mixture of tasks),
which the Trainer trains on and scores with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from spot_core.encoding import Codec, Encoded
from spot_core.prompted import PromptedLM, PromptStates
from spot_core.scoring import generate, has_sliding_window, label_scores
from spot_core.tasks.base import Mixture, Task

T = TypeVar("T")


def predict(model: PromptedLM, codec: Codec, task: Task, examples: Sequence[Encoded], batch_size: int) -> list[str]:
    """Predicted target strings: rank classification over the task's label words when it has a closed
    label set, greedy generation otherwise. Examples are batched by input length to limit padding.

    Generation left-pads its batches, and a sliding-window layer (Gemma 3) counts the padding as positions of its
    window: a short input batched with a long one would lose the prompt from the window and generate something
    else than alone. With such a model, generation batches hold inputs of one length only.

    `batch_size` is an upper bound: a batch that does not fit the GPU (CUDA out of memory) is retried in halves,
    and the rest of the evaluation keeps the smaller size, so one eval_batch_size fits every device."""
    was_training = model.training
    model.eval()
    label_ids = [codec.encode_target(w) for w in task.label_words] if task.label_words else None
    lengths = [len(e.input_ids) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: lengths[i])
    one_length = label_ids is None and has_sliding_window(model)
    with torch.no_grad():  # prompt once: its states serve every batch of the evaluation
        prompt = model.prompt_states() if model.shares_prompt else None

    def run(idx: list[int]) -> list[str]:
        return _predict_batch(model, codec, task, [examples[i].input_ids for i in idx], label_ids, prompt)

    done, _ = in_batches(order, lengths, batch_size, one_length, run)
    preds = [done[i] for i in range(len(examples))]
    model.train(was_training)
    return preds


def _predict_batch(
    model: PromptedLM,
    codec: Codec,
    task: Task,
    inputs: list[list[int]],
    label_ids: list[list[int]] | None,
    prompt: PromptStates | None,
) -> list[str]:
    """One batch's predicted strings: its best label word (`label_ids`: the label words' target ids), or greedy
    generation."""
    if label_ids is not None:
        best = label_scores(model, inputs, label_ids, prompt).argmax(-1).tolist()
        return [task.label_words[k] for k in best]
    return [codec.decode(ids) for ids in generate(model, inputs, task.max_target_tokens, prompt)]


def in_batches(
    order: Sequence[int], lengths: Sequence[int], size: int, one_length: bool, run: Callable[[list[int]], list[T]]
) -> tuple[dict[int, T], int]:
    """`run(indices)` over `order` cut into `batches`; returns each index's result and the batch size it ended with.

    A batch that does not fit the GPU (CUDA out of memory) is taken again in halves, and the batches after it keep
    the smaller size."""
    done: dict[int, T] = {}
    pending = batches(order, lengths, size, one_length)
    while pending:
        idx = pending.pop(0)
        try:
            results = run(idx)
        except torch.OutOfMemoryError:
            if len(idx) == 1:
                raise
            results = None
        if results is None:  # after the handler: its traceback held the failed batch's tensors
            torch.cuda.empty_cache()
            size = (len(idx) + 1) // 2
            pending = batches([i for b in (idx, *pending) for i in b], lengths, size, one_length)
            continue
        done.update(zip(idx, results, strict=True))
    return done, size


def batches(order: Sequence[int], lengths: Sequence[int], size: int, one_length: bool) -> list[list[int]]:
    """`order` (sorted by length) cut into batches of at most `size`; with `one_length`, also wherever the length
    changes."""
    out: list[list[int]] = []
    for i in order:
        if not out or len(out[-1]) == size or (one_length and lengths[out[-1][-1]] != lengths[i]):
            out.append([])
        out[-1].append(i)
    return out


def evaluate(
    model: PromptedLM, codec: Codec, task: Task, examples: Sequence[Encoded], batch_size: int
) -> dict[str, float]:
    """Task metrics (0-100) and `score`, their mean."""
    preds = predict(model, codec, task, examples, batch_size)
    return task.score([e.reference for e in examples], preds)


@dataclass
class TaskData:
    """A task's encoded training and validation examples."""

    task: Task
    codec: Codec
    train: list[Encoded]
    validation: list[Encoded]

    @property
    def name(self) -> str:
        return self.task.name

    def evaluate(self, model: PromptedLM, batch_size: int) -> dict[str, float]:
        """The task's validation metrics and `score`."""
        return evaluate(model, self.codec, self.task, self.validation, batch_size)


@dataclass
class MixtureData:
    """Tasks trained together. Training draws uniformly from the concatenation of each task's first
    `Mixture.counts` examples (min(n, cap)), i.e. each task at its `Mixture.rates` (examples-proportional with
    SPoT's cap). Validation scores every task; the mixture's score is the mean of their scores."""

    mixture: Mixture
    parts: list[TaskData]

    def __post_init__(self):
        self.codec = self.parts[0].codec
        counts = self.mixture.counts({part.name: len(part.train) for part in self.parts})
        self.train = [ex for part in self.parts for ex in part.train[: counts[part.name]]]
        self.validation = [ex for part in self.parts for ex in part.validation]

    @property
    def name(self) -> str:
        return self.mixture.name

    def evaluate(self, model: PromptedLM, batch_size: int) -> dict[str, float]:
        metrics, scores = {}, []
        for part in self.parts:
            values = part.evaluate(model, batch_size)
            metrics.update({f"{part.name}/{k}": v for k, v in values.items()})
            scores.append(values["score"])
        return {**metrics, "score": sum(scores) / len(scores)}
