"""Summarization (SPoT's summarization mixture, Table 1): AESLC, BillSum, CNN/DailyMail, WikiLingua, Gigaword,
Multi-News, Newsroom, SAMSum and XSum in T5's format, `"summarize: <document>" -> the summary`, scored by ROUGE-1,
ROUGE-2 and ROUGE-Lsum (`spot_core.metrics.rouge`, T5's settings). None is in the offline mirror.

Several of these datasets' own hub repositories are loading scripts, which `datasets` >= 3 no longer runs; those
tasks read the hub's parquet export of the same data instead (the repository's `refs/convert/parquet` branch,
`parquet_export`). Newsroom's data is given out only through a form: it needs a manual download
(`Task.manual_download`) and reads only from a data directory.
"""

from __future__ import annotations

from collections.abc import Callable

from spot_core.metrics import rouge
from spot_core.tasks.base import Example, Task, reads, register, split_file
from spot_core.tasks.source import EXPORT_NOTE, PARQUET_EXPORT, parquet_export

TRAIN_VAL = {"train": "train", "validation": "validation"}


def summarize(document: str, summary: str) -> Callable[[dict], Example | None]:
    """T5's summarization preprocessor on the fields `document` and `summary` of a row: `"summarize: " + document`
    -> the summary. A row whose document or summary is blank is dropped (nothing to learn from it)."""

    @reads({document: "text", summary: "text"})
    def preprocess(row: dict) -> Example | None:
        if not row[document].strip() or not row[summary].strip():
            return None
        return {"inputs": f"summarize: {row[document]}", "targets": row[summary]}

    return preprocess


def summarization_task(
    name: str,
    hub_id: str,
    fields: tuple[str, str],
    max_target_tokens: int,
    notes: str,
    config: str | None = None,
    exported: bool = False,
    **more,
) -> Task:
    """A summarization task in T5's format: `fields` = (document, summary); `exported`: read the hub's parquet
    export (`parquet_export`) because the dataset's own repository is a loading script."""
    splits = more.pop("splits", TRAIN_VAL)
    notes = f"`summarize: <{fields[0]}>` -> `<{fields[1]}>` (T5's format), ROUGE-1/2/Lsum. {notes}"
    if exported:
        names = [name for spec in splits.values() for name in split_file(spec)]
        more |= {"revision": PARQUET_EXPORT, "hub_data_files": parquet_export(config or "default", names)}
        notes = f"{notes} {EXPORT_NOTE.format(hub=hub_id)}"
    return Task(
        name=name,
        hub_id=hub_id,
        hub_config=config,
        splits=splits,
        preprocess=summarize(*fields),
        metrics=(rouge,),
        max_target_tokens=max_target_tokens,
        family="summarization",
        notes=notes,
        **more,
    )


NEWSROOM_DOWNLOAD = (
    "Newsroom is given out only after a form at https://lil.nlp.cornell.edu/newsroom/ (the hub's lil-lab/newsroom "
    "script needs those files too): unpack the release's train and dev JSON-lines files (rows with text and summary) "
    "as train.jsonl and validation.jsonl in <data_dir>/lil-lab__newsroom/default/ and set data_dir."
)

register(
    summarization_task(
        name="aeslc_v1",
        hub_id="Yale-LILY/aeslc",
        fields=("email_body", "subject_line"),
        max_target_tokens=32,
        notes="AESLC: an Enron email's body -> its subject line.",
    )
)
register(
    summarization_task(
        name="billsum_v1",
        hub_id="FiscalNote/billsum",
        fields=("text", "summary"),
        max_target_tokens=256,
        notes="US Congressional bills -> their summaries. BillSum has no validation split: validation = the last 5% of "
        "train (947 bills), train the rest; its test splits (US, California) are not read.",
        splits={"train": "train[:95%]", "validation": "train[95%:]"},
    )
)
register(
    summarization_task(
        name="cnn_dailymail_v1",
        hub_id="abisee/cnn_dailymail",
        fields=("article", "highlights"),
        max_target_tokens=128,
        notes="Version 3.0.0 (not anonymised), as T5; the target is the article's highlights, one per line.",
        config="3.0.0",
    )
)
register(
    summarization_task(
        name="gigaword_v1",
        hub_id="Harvard/gigaword",
        fields=("document", "summary"),
        max_target_tokens=32,
        notes="An article's first sentence -> its headline (Rush et al. 2015's split; 3.8M training pairs, of which a "
        "mixture reads its 2^19 cap).",
        exported=True,
    )
)
register(
    summarization_task(
        name="multi_news_v1",
        hub_id="alexfabbri/multi_news",
        fields=("document", "summary"),
        max_target_tokens=256,
        notes="Several news articles (separated by `|||||`, kept) -> one summary.",
        exported=True,
    )
)
register(
    summarization_task(
        name="newsroom_v1",
        hub_id="lil-lab/newsroom",
        fields=("text", "summary"),
        max_target_tokens=128,
        notes="Articles of 38 publishers -> their summaries.",
        manual_download=NEWSROOM_DOWNLOAD,
    )
)
register(
    summarization_task(
        name="samsum_v1",
        hub_id="Samsung/samsum",
        fields=("dialogue", "summary"),
        max_target_tokens=128,
        notes="A messenger-style dialogue (one turn per line) -> its summary; licence CC BY-NC-ND 4.0.",
        exported=True,
    )
)
register(
    summarization_task(
        name="xsum_v1",
        hub_id="EdinburghNLP/xsum",
        fields=("document", "summary"),
        max_target_tokens=64,
        notes="A BBC article -> its one-sentence summary (the original splits; GEM's filtered XSum is `gem_xsum_v1`).",
        exported=True,
    )
)
register(
    summarization_task(
        name="wiki_lingua_v1",
        hub_id="GEM/gem",
        fields=("source", "target"),
        max_target_tokens=128,
        notes="WikiLingua's English how-to articles -> their summaries, as GEM's `wiki_lingua_english_en` "
        "configuration serves them; one task in both the summarization and the GEM mixture.",
        config="wiki_lingua_english_en",
        exported=True,
    )
)
