"""Building blocks the task families share: T5's "task field: value" inputs, label targets, metric adapters."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from spot_core.metrics import accuracy, f1
from spot_core.tasks.base import Example, Metric


def fields(prefix: str, row: dict, names: Sequence[str]) -> str:
    """T5's input format: `"<prefix> name1: value1 name2: value2"`, fields in the order given."""
    return " ".join([prefix, *(f"{name}: {row[name]}" for name in names)])


def label_word(words: Sequence[str], key: str = "label") -> Callable[[dict], str]:
    """row -> the label word of its integer label; a hidden (-1) or unknown label is a ValueError."""

    def target(row: dict) -> str:
        label = row[key]
        if label == -1:
            raise ValueError(f"{key} is -1, a hidden test label: this split cannot be used for training or scores")
        if not isinstance(label, int) or not 0 <= label < len(words):
            raise ValueError(f"{key} {label!r} outside 0..{len(words) - 1}")
        return words[label]

    return target


def classify(prefix: str, names: Sequence[str], words: Sequence[str]) -> Callable[[dict], Example]:
    """The preprocessor of a classification task: named fields in, the label's word out."""
    target = label_word(words)
    return lambda row: {"inputs": fields(prefix, row, names), "targets": target(row)}


def f1_and_accuracy(positive: str) -> Metric:
    """MRPC / QQP: F1 of the positive class and accuracy."""
    return lambda targets, predictions: {**f1(targets, predictions, positive), **accuracy(targets, predictions)}
