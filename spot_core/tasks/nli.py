"""NLI tasks beyond GLUE/SuperGLUE (SPoT's NLI mixture): SNLI, ANLI, DocNLI. Format as MNLI's."""

from __future__ import annotations

from spot_core.metrics import accuracy
from spot_core.tasks.base import Example, FieldError, Task, reads, register
from spot_core.tasks.formats import fields, label_word

NLI3 = ("entailment", "neutral", "contradiction")
DOC_NLI = ("not_entailment", "entailment")


@reads({"hypothesis": "text", "premise": "text", "label": "integer"})
def _snli(row: dict) -> Example | None:
    if row["label"] == -1:  # pairs whose annotators reached no consensus: SNLI (and T5) drop them
        return None
    return {"inputs": fields("snli", row, ("hypothesis", "premise")), "targets": label_word(NLI3)(row)}


@reads({"hypothesis": "text", "premise": "text", "label": "integer"})
def _anli(row: dict) -> Example:
    return {"inputs": fields("anli", row, ("hypothesis", "premise")), "targets": label_word(NLI3)(row)}


@reads({"hypothesis": "text", "premise": "text", "label": "text"})
def _doc_nli(row: dict) -> Example:
    if row["label"] not in DOC_NLI:
        raise FieldError("label", f"is {row['label']!r}, not one of {DOC_NLI}")
    return {"inputs": fields("doc_nli", row, ("hypothesis", "premise")), "targets": row["label"]}


register(
    Task(
        name="snli_v1",
        hub_id="stanfordnlp/snli",
        hub_config="plain_text",
        splits={"train": "train", "validation": "validation", "test": "test"},
        preprocess=_snli,
        metrics=(accuracy,),
        label_words=NLI3,
        fallback_splits={"train": "train[:90%]", "validation": "train[90%:]"},
        family="nli",
        notes="Rows without a gold label (-1) are dropped. Offline mirror: a 9,999-row train sample only: "
        "validation = train[90%:].",
    )
)
register(
    Task(
        name="anli_v1",
        hub_id="facebook/anli",
        hub_config="plain_text",
        splits={
            "train": "train_r1+train_r2+train_r3",
            "validation": "dev_r1+dev_r2+dev_r3",
            "test": "test_r1+test_r2+test_r3",
        },
        preprocess=_anli,
        metrics=(accuracy,),
        label_words=NLI3,
        family="nli",
        notes="All three rounds joined. Not in the offline mirror.",
    )
)
register(
    Task(
        name="doc_nli_v1",
        hub_id="tasksource/doc-nli",
        hub_config=None,
        splits={"train": "train", "validation": "validation", "test": "test"},
        preprocess=_doc_nli,
        metrics=(accuracy,),
        label_words=DOC_NLI,
        family="nli",
        notes="SPoT read DocNLI from TFDS; this hub copy has string labels. Not in the offline mirror.",
    )
)
