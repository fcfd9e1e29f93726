"""C4 as a prefix-LM task (SPoT's C4 source): a document is cut into a prefix (input) and its continuation
(target). The cut is deterministic per document (a hash of its text), so every run sees the same examples."""

from __future__ import annotations

import zlib

from spot_core.metrics import squad
from spot_core.tasks.base import Example, Task, reads, register

MAX_PREFIX_WORDS = 96
MAX_TARGET_WORDS = 32


@reads({"text": "text"})
def prefix_lm(row: dict) -> Example | None:
    """`"c4 text: <first words>"` -> the next (at most 32) words; documents of fewer than 2 words are dropped."""
    words = row["text"].split()
    if len(words) < 2:
        return None
    cut = 1 + zlib.crc32(row["text"].encode()) % (min(len(words), MAX_PREFIX_WORDS + 1) - 1)
    target = " ".join(words[cut : cut + MAX_TARGET_WORDS])
    return {"inputs": "c4 text: " + " ".join(words[:cut]), "targets": target, "references": [target]}


register(
    Task(
        name="c4_v1",
        hub_id="allenai/c4",
        hub_config="en",
        splits={"train": "train", "validation": "validation"},
        hub_data_files={
            "train": "en/c4-train.00000-of-01024.json.gz",
            "validation": "en/c4-validation.00000-of-00008.json.gz",
        },
        preprocess=prefix_lm,
        metrics=(squad,),
        max_target_tokens=48,
        fallback_splits={"train": "train[:90%]", "validation": "train[90%:]"},
        family="language_modeling",
        notes="From the hub, the first train and validation shards only (356K and 45K documents). Scored by "
        "token F1 / exact match of the greedy continuation. Offline mirror: 1,000 train documents: validation = "
        "train[90%:].",
    )
)
