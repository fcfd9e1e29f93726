"""Extractive QA tasks, generated answers scored by SQuAD v1.1 EM and F1 against every gold answer.

SQuAD follows T5's format: `"squad question: ... context: ..." -> the first gold answer`. DROP's format is not in
the T5 reference code: it follows the same "task field: value" pattern, `"drop question: ... passage: ..."`.
The target is the first gold answer; the example's `references` hold all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from spot_core.metrics import squad
from spot_core.tasks.base import Example, FieldError, Task, reads, register
from spot_core.tasks.formats import fields

TRAIN_VAL = {"train": "train", "validation": "validation"}


def extractive(prefix: str, names: Sequence[str], answers: str) -> Callable[[dict], Example]:
    """The preprocessor of an extractive QA task: named fields in, the first answer out, all answers as references.
    `answers`: the field of the gold answers, `record.field` (SQuAD: `answers.text`)."""
    record, _, key = answers.partition(".")

    @reads({**dict.fromkeys(names, "text"), answers: "texts"})
    def preprocess(row: dict) -> Example:
        golds = list(row[record][key])
        if not golds:
            raise FieldError(answers, "is empty: no gold answer")
        return {"inputs": fields(prefix, row, names), "targets": golds[0], "references": golds}

    return preprocess


register(
    Task(
        name="squad_v1",
        hub_id="rajpurkar/squad",
        hub_config="plain_text",
        splits=TRAIN_VAL,
        preprocess=extractive("squad", ("question", "context"), "answers.text"),
        metrics=(squad,),
        max_target_tokens=32,
        family="qa",
        notes="SQuAD v1.1. The offline mirror's train split is a sample: the first 44 of 442 training articles "
        "(11,877 of 87,599 questions); its validation split is complete.",
    )
)
register(
    Task(
        name="drop_v1",
        hub_id="ucinlp/drop",
        hub_config=None,
        splits=TRAIN_VAL,
        preprocess=extractive("drop", ("question", "passage"), "answers_spans.spans"),
        metrics=(squad,),
        max_target_tokens=32,
        family="qa",
        notes="Format not in the T5 reference code. DROP's own metric (number normalisation, bags of spans for "
        "multi-span answers) is not replicated: predictions get SQuAD EM/F1 against the listed answer spans, "
        "the first of which is the target. Not in the offline mirror.",
    )
)
