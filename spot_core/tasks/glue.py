"""GLUE (T5's formats: task-name prefix kept, fields as "name: value" in T5's order, label names as targets).

Hidden-label test splits are not declared. MNLI and QQP: the offline mirror has a train sample and no
validation, so their carve-out takes validation from the last 10% of that sample.
"""

from __future__ import annotations

from spot_core.metrics import accuracy, matthews_corr, pearson_spearman
from spot_core.tasks.base import FieldError, Task, reads, register
from spot_core.tasks.formats import classify, f1_and_accuracy, fields

HUB = "nyu-mll/glue"
TRAIN_VAL = {"train": "train", "validation": "validation"}
CARVE_10 = {"train": "train[:90%]", "validation": "train[90%:]"}
CARVE_NOTE = "Offline mirror: train is a 9,999-row sample and validation is missing: validation = train[90%:]."

SST2_LABELS = ("negative", "positive")
RTE_LABELS = ("entailment", "not_entailment")
STSB_LABELS = tuple(f"{i / 5:.1f}" for i in range(26))


def stsb_target(score: float) -> str:
    """Rounded to the nearest 0.2, as a string ("1.8")."""
    if score == -1:
        raise FieldError("label", "is -1, a hidden test label (similarity score)")
    if not 0 <= score <= 5:
        raise FieldError("label", f"is {score}, a similarity score outside 0..5")
    return f"{round(score * 5) / 5:.1f}"


@reads({"sentence1": "text", "sentence2": "text", "label": "number"})
def _stsb(row: dict) -> dict:
    return {"inputs": fields("stsb", row, ("sentence1", "sentence2")), "targets": stsb_target(row["label"])}


def _glue(name: str, config: str, names: tuple[str, ...], labels: tuple[str, ...], metrics, **kw) -> Task:
    return Task(
        name=name,
        hub_id=HUB,
        hub_config=config,
        splits=kw.pop("splits", TRAIN_VAL),
        preprocess=classify(config, names, labels),
        metrics=metrics,
        label_words=labels,
        family="glue",
        **kw,
    )


register(_glue("cola_v1", "cola", ("sentence",), ("unacceptable", "acceptable"), (matthews_corr,)))
register(_glue("sst2_v1", "sst2", ("sentence",), SST2_LABELS, (accuracy,)))
register(
    _glue(
        "mrpc_v1",
        "mrpc",
        ("sentence1", "sentence2"),
        ("not_equivalent", "equivalent"),
        (f1_and_accuracy("equivalent"),),
    )
)
register(
    _glue(
        "qqp_v1",
        "qqp",
        ("question1", "question2"),
        ("not_duplicate", "duplicate"),
        (f1_and_accuracy("duplicate"),),
        fallback_splits=CARVE_10,
        notes=CARVE_NOTE,
    )
)
register(
    Task(
        name="stsb_v1",
        hub_id=HUB,
        hub_config="stsb",
        splits=TRAIN_VAL,
        preprocess=_stsb,
        metrics=(pearson_spearman,),
        label_words=STSB_LABELS,
        family="glue",
        notes="Target: the similarity score rounded to the nearest 0.2, as text; rank classification over 26 values.",
    )
)
register(
    _glue(
        "mnli_v1",
        "mnli",
        ("hypothesis", "premise"),
        ("entailment", "neutral", "contradiction"),
        (accuracy,),
        splits={"train": "train", "validation": "validation_matched"},
        fallback_splits=CARVE_10,
        notes=CARVE_NOTE,
    )
)
register(_glue("qnli_v1", "qnli", ("question", "sentence"), RTE_LABELS, (accuracy,), notes="Mirror train: a sample."))
register(_glue("rte_v1", "rte", ("sentence1", "sentence2"), RTE_LABELS, (accuracy,)))
