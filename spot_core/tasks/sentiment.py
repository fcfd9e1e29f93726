"""Sentiment tasks (SPoT's sentiment mixture and the CR target). Not in T5's reference code: inputs follow
its "task field: value" pattern with the hub's field names; targets are label names."""

from __future__ import annotations

from collections.abc import Sequence

from spot_core.metrics import accuracy
from spot_core.tasks.base import Example, FieldError, Task, reads, register
from spot_core.tasks.formats import classify, fields

POLARITY = ("negative", "positive")
GOEMOTIONS = tuple(
    "admiration amusement anger annoyance approval caring confusion curiosity desire disappointment disapproval "
    "disgust embarrassment excitement fear gratitude grief joy love nervousness optimism pride realization relief "
    "remorse sadness surprise neutral".split()
)


@reads({"text": "text", "labels": "integers"})
def _goemotions(row: dict) -> Example:
    labels = sorted(set(row["labels"]))
    if not labels:
        raise FieldError("labels", "is empty: no labels, and every GoEmotions example has at least one (a test row?)")
    if not all(0 <= i < len(GOEMOTIONS) for i in labels):
        raise FieldError("labels", f"are {row['labels']}, outside 0..{len(GOEMOTIONS) - 1}")
    return {"inputs": fields("goemotions", row, ("text",)), "targets": ", ".join(GOEMOTIONS[i] for i in labels)}


@reads({"text": "text", "sentiment": "integer"})
def _sentiment140(row: dict) -> Example:
    if row["sentiment"] not in (0, 4):
        raise FieldError("sentiment", f"is {row['sentiment']}, not 0 (negative) or 4 (positive)")
    return {"inputs": fields("sentiment140", row, ("text",)), "targets": POLARITY[row["sentiment"] // 4]}


def _exact_set(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Accuracy of the predicted emotion set, order ignored."""
    canon = lambda s: sorted(w.strip() for w in s.split(","))  # noqa: E731
    return accuracy([", ".join(canon(t)) for t in targets], [", ".join(canon(p)) for p in predictions])


register(
    Task(
        name="cr_v1",
        hub_id="SetFit/SentEval-CR",
        hub_config=None,
        splits={"train": "train", "validation": "test", "test": "test"},
        preprocess=classify("cr", ("text",), POLARITY),
        metrics=(accuracy,),
        label_words=POLARITY,
        family="sentiment",
        notes="CR has no validation split; its labelled test split serves as validation (as in LM-BFF). "
        "The offline mirror holds LM-BFF's 1,775/2,000 split of the same 3,775 sentences, not SetFit's.",
    )
)
register(
    Task(
        name="yelp_polarity_v1",
        hub_id="fancyzhx/yelp_polarity",
        hub_config="plain_text",
        splits={"train": "train", "validation": "test", "test": "test"},
        preprocess=classify("yelp_polarity", ("text",), POLARITY),
        metrics=(accuracy,),
        label_words=POLARITY,
        family="sentiment",
        notes="No validation split on the hub: the labelled test split serves as validation. Not in the mirror.",
    )
)
register(
    Task(
        name="goemotions_v1",
        hub_id="google-research-datasets/go_emotions",
        hub_config="simplified",
        splits={"train": "train", "validation": "validation", "test": "test"},
        preprocess=_goemotions,
        metrics=(_exact_set,),
        max_target_tokens=16,
        family="sentiment",
        notes="Multi-label: target = the emotion names in label order, comma-separated; scored by exact set "
        "accuracy (greedy generation). Not in the mirror.",
    )
)
register(
    Task(
        name="sentiment140_v1",
        hub_id="stanfordnlp/sentiment140",
        hub_config="sentiment140",
        # The train file is sorted by label: validation takes 5,000 rows from each end.
        splits={"train": "train[5000:-5000]", "validation": "train[:5000]+train[-5000:]"},
        preprocess=_sentiment140,
        metrics=(accuracy,),
        label_words=POLARITY,
        family="sentiment",
        notes="Validation carved from train (5,000 rows from each end, as the file is sorted by label); the test "
        "split has a neutral class and is not used. Not in the mirror.",
    )
)
