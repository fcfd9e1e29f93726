"""GEM (SPoT's GEM mixture, Table 1; Gehrmann et al. 2021): CommonGen, DART, E2E, SGD (schema-guided dialog),
WebNLG, WikiAuto, XSum and WikiLingua, as the GEM 1.1 datasets that TFDS and the hub's `GEM/gem` serve. None is in
the offline mirror.

Inputs are linearised as T5 writes fields, `"<task> <field>: <value>"`: the data-to-text tasks list their
structured input (concepts, triples, a meaning representation, dialog acts), WikiAuto its complex sentence; XSum
and WikiLingua are summarization in T5's format (`spot_core.tasks.summarization`). The target is the row's one
`target`: GEM's validation rows keep it as the first of their `references`, and a row without one (a test row)
is dropped. Metrics as GEM's baselines report them, kept to one family each: corpus BLEU (sacrebleu, T5's settings)
for data-to-text, dialog and simplification, ROUGE-1/2/Lsum for summarization; both against the one target, so
they sit below GEM's multi-reference figures (and WikiAuto's own metric, SARI, is not computed).

`GEM/gem` on the hub is a loading script: the tasks read its parquet export (`refs/convert/parquet`).
"""

from __future__ import annotations

from collections.abc import Callable

from spot_core.metrics import bleu, rouge
from spot_core.tasks.base import Example, FieldError, Metric, Task, reads, register
from spot_core.tasks.source import EXPORT_NOTE, PARQUET_EXPORT, parquet_export
from spot_core.tasks.summarization import TRAIN_VAL, summarize

GEM = "GEM/gem"

# GEM's dialog-act names of schema_guided_dialog, in the order of its ClassLabel (an act is stored as its index)
SGD_ACTS = (
    "AFFIRM", "AFFIRM_INTENT", "CONFIRM", "GOODBYE", "INFORM", "INFORM_COUNT", "INFORM_INTENT", "NEGATE",
    "NEGATE_INTENT", "NOTIFY_FAILURE", "NOTIFY_SUCCESS", "OFFER", "OFFER_INTENT", "REQUEST", "REQUEST_ALTS",
    "REQ_MORE", "SELECT", "THANK_YOU",
)  # fmt: skip


def _example(inputs: str, row: dict) -> Example | None:
    """The example of `inputs` and the row's target; None (dropped) where it has none, as GEM's test rows."""
    return {"inputs": inputs, "targets": row["target"]} if row["target"].strip() else None


@reads({"concepts": "texts", "target": "text"})
def common_gen(row: dict) -> Example | None:
    """`"common_gen concepts: dog frisbee catch throw"` -> a sentence using them all."""
    return _example(f"common_gen concepts: {' '.join(row['concepts'])}", row)


def triples(field: str, value) -> str:
    """`[[s, p, o], ...]` -> `"s | p | o; ..."`; anything else is a FieldError."""
    if not isinstance(value, list) or not all(
        isinstance(t, list) and t and all(isinstance(x, str) for x in t) for t in value
    ):
        raise FieldError(field, "is not a list of triples (lists of strings)")
    return "; ".join(" | ".join(t) for t in value)


@reads({"target": "text"})
def dart(row: dict) -> Example | None:
    """`"dart triples: s | p | o; s | p | o"` -> their description."""
    return _example(f"dart triples: {triples('tripleset', row['tripleset'])}", row)


@reads({"meaning_representation": "text", "target": "text"})
def e2e_nlg(row: dict) -> Example | None:
    """`"e2e_nlg meaning_representation: name[The Eagle], eatType[coffee shop]"` -> a restaurant description."""
    return _example(f"e2e_nlg meaning_representation: {row['meaning_representation']}", row)


def dialog_act(act: dict) -> str:
    """One SGD act: `INFORM(price=$20|$25)`, `REQUEST(date)`, `GOODBYE`."""
    name = act["act"] if isinstance(act["act"], str) else SGD_ACTS[act["act"]]
    if not act["slot"]:
        return name
    values = "|".join(act["values"])
    return f"{name}({act['slot']}={values})" if values else f"{name}({act['slot']})"


@reads({"prompt": "text", "target": "text"})
def schema_guided_dialog(row: dict) -> Example | None:
    """`"schema_guided_dialog acts: OFFER(restaurant_name=Sakana) INFORM(city=Palo Alto) prompt: <user turn>"` ->
    the system's turn that realises those acts."""
    acts = row["dialog_acts"]
    if isinstance(acts, dict) and all(isinstance(v, list) for v in acts.values()):  # columns, as a Sequence stores
        acts = [dict(zip(acts, values, strict=True)) for values in zip(*acts.values(), strict=True)]
    if not isinstance(acts, list) or not all(isinstance(a, dict) for a in acts):
        raise FieldError("dialog_acts", "is not a list of acts (objects with act, slot, values)")
    linear = " ".join(dialog_act(a) for a in acts)
    return _example(f"schema_guided_dialog acts: {linear} prompt: {row['prompt']}", row)


@reads({"input": "texts", "target": "text"})
def web_nlg(row: dict) -> Example | None:
    """`"web_nlg triples: s | p | o; s | p | o"` (GEM's triples are already `s | p | o`) -> their description."""
    return _example(f"web_nlg triples: {'; '.join(row['input'])}", row)


@reads({"source": "text", "target": "text"})
def wiki_auto(row: dict) -> Example | None:
    """`"wiki_auto source: <complex sentence>"` -> its simplification."""
    return _example(f"wiki_auto source: {row['source']}", row)


def gem_task(
    name: str,
    config: str,
    preprocess: Callable[[dict], Example | None],
    metric: Metric,
    max_target_tokens: int,
    notes: str,
) -> Task:
    """A GEM 1.1 task: configuration `config` of GEM/gem, from the hub's parquet export."""
    return Task(
        name=name,
        hub_id=GEM,
        hub_config=config,
        splits=TRAIN_VAL,
        preprocess=preprocess,
        metrics=(metric,),
        max_target_tokens=max_target_tokens,
        revision=PARQUET_EXPORT,
        hub_data_files=parquet_export(config, TRAIN_VAL.values()),
        family="gem",
        notes=f"{notes} Scored against the row's one `target` (GEM's validation rows hold their first reference "
        f"there); rows without one are dropped. {EXPORT_NOTE.format(hub=GEM)}",
    )


register(
    gem_task(
        name="common_gen_v1",
        config="common_gen",
        preprocess=common_gen,
        metric=bleu,
        max_target_tokens=64,
        notes="`common_gen concepts: <concepts, space-separated as CommonGen writes them>` -> `<target>`, a "
        "sentence using them all; corpus BLEU.",
    )
)
register(
    gem_task(
        name="dart_v1",
        config="dart",
        preprocess=dart,
        metric=bleu,
        max_target_tokens=128,
        notes="`dart triples: <s | p | o; s | p | o>` -> `<target>`, from `tripleset` (a list of [subject, "
        "predicate, object] lists, checked as it is read); corpus BLEU.",
    )
)
register(
    gem_task(
        name="e2e_nlg_v1",
        config="e2e_nlg",
        preprocess=e2e_nlg,
        metric=bleu,
        max_target_tokens=128,
        notes="`e2e_nlg meaning_representation: <meaning_representation>` (as written: `name[...], eatType[...]`) "
        "-> `<target>`; corpus BLEU.",
    )
)
register(
    gem_task(
        name="schema_guided_dialog_v1",
        config="schema_guided_dialog",
        preprocess=schema_guided_dialog,
        metric=bleu,
        max_target_tokens=128,
        notes="`schema_guided_dialog acts: <ACT(slot=value|value) ...> prompt: <prompt>` -> `<target>`: the system "
        "turn's dialog acts and the user's turn before it -> the system turn. `dialog_acts` is a list of {act: an "
        "index into GEM's 18 act names, slot, values}, checked as it is read; corpus BLEU.",
    )
)
register(
    gem_task(
        name="web_nlg_v1",
        config="web_nlg_en",
        preprocess=web_nlg,
        metric=bleu,
        max_target_tokens=128,
        notes="English WebNLG: `web_nlg triples: <input, joined by '; '>` (GEM's triples are already `s | p | o`) "
        "-> `<target>`; corpus BLEU.",
    )
)
register(
    gem_task(
        name="wiki_auto_v1",
        config="wiki_auto_asset_turk",
        preprocess=wiki_auto,
        metric=bleu,
        max_target_tokens=128,
        notes="`wiki_auto source: <source>` -> `<target>`, a complex Wikipedia sentence -> its simplification "
        "(WikiAuto's training and validation pairs; the ASSET and TurkCorpus test sets are not read); corpus BLEU, "
        "not GEM's SARI.",
    )
)
register(
    gem_task(
        name="gem_xsum_v1",
        config="xsum",
        preprocess=summarize("document", "target"),
        metric=rouge,
        max_target_tokens=64,
        notes="`summarize: <document>` -> `<target>` (T5's format), ROUGE-1/2/Lsum: GEM's XSum, a subset of the "
        "original filtered for faithful summaries (`xsum_v1` reads all of it).",
    )
)
