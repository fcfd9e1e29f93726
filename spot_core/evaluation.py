"""Scoring a prompted model on a task's examples."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from spot_core.data import Codec, Encoded
from spot_core.prompted import PromptedLM
from spot_core.scoring import generate, label_scores
from spot_core.tasks.base import Task


def predict(model: PromptedLM, codec: Codec, task: Task, examples: Sequence[Encoded], batch_size: int) -> list[str]:
    """Predicted target strings: rank classification over the task's label words when it has a closed
    label set, greedy generation otherwise. Examples are batched by input length to limit padding."""
    was_training = model.training
    model.eval()
    label_ids = [codec.encode_target(w) for w in task.label_words] if task.label_words else None
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    preds: list[str] = [""] * len(examples)
    with torch.no_grad():  # prompt once: its states serve every batch of the evaluation
        prompt = model.prompt_states() if model.shares_prompt else None
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        inputs = [examples[i].input_ids for i in idx]
        if label_ids is not None:
            best = label_scores(model, inputs, label_ids, prompt).argmax(-1).tolist()
            texts = [task.label_words[k] for k in best]
        else:
            texts = [codec.decode(ids) for ids in generate(model, inputs, task.max_target_tokens, prompt)]
        for i, text in zip(idx, texts, strict=True):
            preds[i] = text
    model.train(was_training)
    return preds


def evaluate(
    model: PromptedLM, codec: Codec, task: Task, examples: Sequence[Encoded], batch_size: int
) -> dict[str, float]:
    """Task metrics (0-100) and `score`, their mean."""
    preds = predict(model, codec, task, examples, batch_size)
    return task.score([e.reference for e in examples], preds)
