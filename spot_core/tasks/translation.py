"""WMT translation from English (SPoT's translation mixture, Table 1; T5's tasks and formats): German and French
(WMT14) and Romanian (WMT16), `"translate English to German: ..." -> the German sentence`, scored by corpus BLEU
(sacrebleu, T5's settings: `spot_core.metrics.bleu`). None is in the offline mirror: they read from the hub."""

from __future__ import annotations

from collections.abc import Callable

from spot_core.metrics import bleu
from spot_core.tasks.base import Example, Task, reads, register

LANGUAGES = {"de": "German", "fr": "French", "ro": "Romanian"}
TRAIN_VAL = {"train": "train", "validation": "validation"}


def from_english(to: str) -> Callable[[dict], Example]:
    """The preprocessor of English -> `to` on a WMT row (`{"translation": {"en": ..., to: ...}}`)."""

    @reads({"translation.en": "text", f"translation.{to}": "text"})
    def preprocess(row: dict) -> Example:
        pair = row["translation"]
        return {"inputs": f"translate English to {LANGUAGES[to]}: {pair['en']}", "targets": pair[to]}

    return preprocess


for code, year in (("de", "wmt14"), ("fr", "wmt14"), ("ro", "wmt16")):
    register(
        Task(
            name=f"wmt_en_{code}_v1",
            hub_id=f"wmt/{year}",
            hub_config=f"{code}-en",
            splits=TRAIN_VAL,
            preprocess=from_english(code),
            metrics=(bleu,),
            max_target_tokens=128,
            family="translation",
            notes=f"{year.upper()} {code}-en, English to {LANGUAGES[code]} (T5's format); validation is the "
            f"newstest set before the test year's. Not in the offline mirror.",
        )
    )
