"""Extractive QA tasks, generated answers scored by SQuAD v1.1 EM and F1 against every gold answer.

SQuAD follows T5's format: `"squad question: ... context: ..." -> the first gold answer`. DROP's format is not in
the T5 reference code: it follows the same "task field: value" pattern, `"drop question: ... passage: ..."`.
The target is the first gold answer; the example's `references` hold all of them.

MRQA (SPoT's Table 1 mixture) is the MRQA 2019 shared task's six in-domain training sets, which the hub keeps in one
dataset told apart by its `subset` column: one task per subset (`Task.row_filter`), in SQuAD's format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from spot_core.metrics import squad
from spot_core.tasks.base import Example, FieldError, Task, reads, register
from spot_core.tasks.formats import fields

TRAIN_VAL = {"train": "train", "validation": "validation"}
MRQA_HUB = "mrqa-workshop/mrqa"
MRQA_SUBSETS = {  # task base name -> (the hub's `subset` value, training questions in it)
    "mrqa_squad": ("SQuAD", 86_588),
    "mrqa_newsqa": ("NewsQA", 74_160),
    "mrqa_triviaqa": ("TriviaQA-web", 61_688),
    "mrqa_searchqa": ("SearchQA", 117_384),
    "mrqa_hotpotqa": ("HotpotQA", 72_928),
    "mrqa_natural_questions": ("NaturalQuestionsShort", 104_071),
}


def extractive(prefix: str, names: Sequence[str], answers: str) -> Callable[[dict], Example]:
    """The preprocessor of an extractive QA task: named fields in, the first answer out, all answers as references.
    `answers`: the field of the gold answers, a list (MRQA: `answers`) or `record.field` (SQuAD: `answers.text`)."""
    record, _, key = answers.partition(".")

    @reads({**dict.fromkeys(names, "text"), answers: "texts"})
    def preprocess(row: dict) -> Example:
        golds = list(row[record][key] if key else row[record])
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

for name, (subset, n_train) in MRQA_SUBSETS.items():
    register(
        Task(
            name=f"{name}_v1",
            hub_id=MRQA_HUB,
            hub_config="plain_text",
            splits=TRAIN_VAL,
            row_filter={"subset": subset},
            preprocess=extractive(name, ("question", "context"), "answers"),
            metrics=(squad,),
            max_target_tokens=32,
            family="qa",
            notes=f"MRQA 2019 shared task, in-domain {subset}: the rows of `{MRQA_HUB}` (formerly `mrqa`) whose "
            f"`subset` is {subset!r}; train is its training set ({n_train:,} questions), validation its in-domain "
            "development set (the hub's test split holds only MRQA's out-of-domain sets). Format not in the T5 "
            "reference code: SQuAD's, the target the first of `answers`, scored against all of them; contexts keep "
            "MRQA's [PAR]/[DOC]/[TLE]/[SEP] separators. Not in the offline mirror; a mirror holds MRQA's whole "
            "splits once, shared by its six tasks.",
        )
    )
