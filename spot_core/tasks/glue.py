"""GLUE tasks (T5 formats: task-name prefix kept, fields as "name: value")."""

from __future__ import annotations

from spot_core.metrics import accuracy, pearson_spearman
from spot_core.tasks.base import Task, register

HUB = "nyu-mll/glue"
TRAIN_VAL = {"train": "train", "validation": "validation"}


def _label(words: tuple[str, ...]):
    def target(row: dict) -> str:
        if not 0 <= row["label"] < len(words):
            raise ValueError(f"label {row['label']} outside 0..{len(words) - 1}")
        return words[row["label"]]

    return target


SST2_LABELS = ("negative", "positive")
RTE_LABELS = ("entailment", "not_entailment")
STSB_LABELS = tuple(f"{i / 5:.1f}" for i in range(26))


def stsb_target(score: float) -> str:
    """Rounded to the nearest 0.2, as a string ("1.8")."""
    return f"{round(score * 5) / 5:.1f}"


register(
    Task(
        name="sst2_v1",
        hub_id=HUB,
        hub_config="sst2",
        splits=TRAIN_VAL,
        preprocess=lambda r: {"inputs": f"sst2 sentence: {r['sentence']}", "targets": _label(SST2_LABELS)(r)},
        metrics=(accuracy,),
        label_words=SST2_LABELS,
    )
)
register(
    Task(
        name="rte_v1",
        hub_id=HUB,
        hub_config="rte",
        splits=TRAIN_VAL,
        preprocess=lambda r: {
            "inputs": f"rte sentence1: {r['sentence1']} sentence2: {r['sentence2']}",
            "targets": _label(RTE_LABELS)(r),
        },
        metrics=(accuracy,),
        label_words=RTE_LABELS,
    )
)
register(
    Task(
        name="stsb_v1",
        hub_id=HUB,
        hub_config="stsb",
        splits=TRAIN_VAL,
        preprocess=lambda r: {
            "inputs": f"stsb sentence1: {r['sentence1']} sentence2: {r['sentence2']}",
            "targets": stsb_target(r["label"]),
        },
        metrics=(pearson_spearman,),
        label_words=STSB_LABELS,
    )
)
