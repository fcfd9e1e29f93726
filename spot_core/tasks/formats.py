"""Building blocks the task families share: T5's "task field: value" inputs, label targets, metric adapters."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from spot_core.metrics import accuracy, f1
from spot_core.tasks.base import Example, FieldError, Metric, reads


def fields(prefix: str, row: dict, names: Sequence[str]) -> str:
    """T5's input format: `"<prefix> name1: value1 name2: value2"`, fields in the order given."""
    return " ".join([prefix, *(f"{name}: {row[name]}" for name in names)])


def label_word(words: Sequence[str], key: str = "label") -> Callable[[dict], str]:
    """row -> the label word of its integer label; a hidden (-1) or unknown label is a FieldError."""

    def target(row: dict) -> str:
        label = row[key]
        if label == -1:
            raise FieldError(key, "is -1, a hidden test label: this split cannot be used for training or scores")
        if not isinstance(label, int) or not 0 <= label < len(words):
            raise FieldError(key, f"is {label!r}, outside 0..{len(words) - 1} ({', '.join(words)})")
        return words[label]

    return target


def classify(prefix: str, names: Sequence[str], words: Sequence[str]) -> Callable[[dict], Example]:
    """The preprocessor of a classification task: named fields in (strings), the word of its integer label out."""
    target = label_word(words)
    return reads({**dict.fromkeys(names, "text"), "label": "integer"})(
        lambda row: {"inputs": fields(prefix, row, names), "targets": target(row)}
    )


def f1_and_accuracy(positive: str) -> Metric:
    """MRPC / QQP: F1 of the positive class and accuracy."""
    return lambda targets, predictions: {**f1(targets, predictions, positive), **accuracy(targets, predictions)}
