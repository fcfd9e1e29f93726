"""Which library source runs a new task should start from: the settings (`SelectionConfig`), the library's runs of
one model and prompt length (`Sources`), and their ranking by every transferability indicator (`rank_library`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from spot_core.config import check_int, parse_choice
from spot_core.errors import ConfigError
from spot_core.library import Entry, Library
from spot_core.similarity import Indicator, Similarity, TaskEmbedding, rank_sources
from spot_core.tags import Retrieval

INDICATORS = tuple(Indicator)


class Method(StrEnum):
    """How the target starts from the top k (the `methods` setting)."""

    BEST_OF = "best_of"
    WEIGHTED_AVERAGE = Retrieval.WEIGHTED_AVERAGE.value
    MIXTURE = Retrieval.MIXTURE.value


@dataclass
class SelectionConfig:
    """What to rank by and what to train: `top_k` source runs by `similarity`, then `methods` (with `train`)."""

    top_k: int = 3
    methods: Sequence[Method] = tuple(Method)
    similarity: Indicator = Indicator.AVG_TOKENS
    train: bool = False

    def __post_init__(self):
        check_int(self.top_k, "top_k")
        self.similarity = parse_choice(Indicator, self.similarity, "similarity")
        self.methods = [parse_choice(Method, m, "methods") for m in self.methods]
        if not self.methods or len(set(self.methods)) != len(self.methods):
            allowed = ", ".join(m.value for m in Method)
            given = [m.value for m in self.methods]
            raise ConfigError(f"methods must be a non-empty list of {allowed} without repeats, got {given}")
        if not isinstance(self.train, bool):
            raise ConfigError(f"train must be true or false, got {self.train!r}")
        if self.train and Method.WEIGHTED_AVERAGE in self.methods and self.similarity is Indicator.EUCLIDEAN:
            raise ConfigError(
                "similarity=euclidean is a negated distance, no weights for methods=[weighted_average]: use "
                "similarity=avg_tokens, per_token or neuron_overlap, or leave weighted_average out of methods"
            )

    def check_candidates(self, count: int, where: str) -> None:
        """Training from the top k needs k candidates; a ranking alone lists however many there are."""
        if self.train and self.top_k > count:
            raise ConfigError(f"top_k={self.top_k}, but {where} holds {count} source runs: set top_k<={count}")


@dataclass(frozen=True)
class Sources:
    """The library entries retrieval ranks (one model, one prompt length), and how their task embeddings were made."""

    entries: list[Entry]
    prompt_length: int
    embedding_step: int
    kind: TaskEmbedding


def library_sources(library: Library, model: str, prompt_length: int | None = None) -> Sources:
    """The entries of `model` (and `prompt_length`; None: the one length they have).

    Raises:
        ConfigError: no entry for the model (naming the models the library has), no entry or several lengths
            for the prompt length, entries taken at several embedding steps or of several task-embedding kinds.
    """
    models = Counter(e.model for e in library.entries)
    mine = [e for e in library.entries if e.model == model]
    if not mine:
        have = ", ".join(f"{m} ({n} entries)" for m, n in sorted(models.items())) or "no entries at all"
        export = f"export the source runs of a study on {model!r} into it (make library)"
        fix = f"set model.name to one of its models (model.name={min(models)}), or {export}" if models else export
        raise ConfigError(f"library {library.root} has no source prompt for model {model!r}; it has {have}: {fix}")
    lengths = sorted({e.prompt_length for e in mine})
    if prompt_length is None and len(lengths) > 1:
        raise ConfigError(
            f"library {library.root} holds prompts of lengths {lengths} for model {model!r}: choose one, "
            f"prompt_length={lengths[0]}"
        )
    length = lengths[0] if prompt_length is None else prompt_length
    mine = [e for e in mine if e.prompt_length == length]
    if not mine:
        raise ConfigError(
            f"prompt_length={length}, but the library {library.root} holds prompts of lengths {lengths} for model "
            f"{model!r}: set prompt_length to one of them (or null)"
        )
    for name, values in (
        ("embedding steps", {e.embedding_step for e in mine}),
        ("task embeddings", {e.task_embedding for e in mine}),
    ):
        if len(values) > 1:
            raise ConfigError(
                f"the library's prompts for model {model!r}, length {length}, were made with different {name} "
                f"{sorted(values)}: their task embeddings do not compare; use a library made by one study"
            )
    return Sources(mine, length, mine[0].embedding_step, TaskEmbedding(mine[0].task_embedding))


# --- the ranking ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A library source run as the ranking sees it."""

    entry: str  # the library entry id
    task: str
    seed: int
    score: float  # its own best validation score
    embedding: np.ndarray  # [L, H], the kind the library was made with
    neurons: np.ndarray | None = None  # [layers, L, I] activated-neuron mask of its task-embedding prompt


def ranking_columns() -> list[str]:
    values = [name for i in INDICATORS for name in (i.value, f"{i.value}_rank")]
    return ["rank", "task", "seed", "entry", *values, "source_score"]


def rank_library(
    target: np.ndarray,
    candidates: Sequence[Candidate],
    target_neurons: np.ndarray | None = None,
    by: Indicator | str = Similarity.AVG_TOKENS,
) -> pd.DataFrame:
    """Every candidate by every indicator against the target's task embedding [L, H] (and neuron mask).

    Args:
        target: the target's task embedding, of the candidates' kind.
        candidates: the source runs, in the library's order (which breaks ties).
        target_neurons: the target's mask; without it (or a candidate's), neuron_overlap is NaN.
        by: the indicator that orders the table (its `rank`).

    Returns:
        DataFrame with columns rank (by `by`, 1 = most similar), task, seed, entry, then per indicator its value
        and its own rank (`avg_tokens`, `avg_tokens_rank`, ...), and source_score; most similar by `by` first.

    Raises:
        ValueError: no candidates, or `by` is neuron_overlap without the masks.
    """
    by = Indicator(by)
    if not candidates:
        raise ValueError("rank_library needs at least one candidate")
    table = pd.DataFrame(
        {
            "task": [c.task for c in candidates],
            "seed": [int(c.seed) for c in candidates],
            "entry": [c.entry for c in candidates],
        }
    )
    masks = target_neurons is not None and all(c.neurons is not None for c in candidates)
    for indicator in INDICATORS:
        if indicator is Indicator.NEURON_OVERLAP and not masks:
            if by is indicator:
                raise ValueError("ranking by neuron_overlap needs the target's and every candidate's neuron mask")
            table[indicator.value], table[f"{indicator.value}_rank"] = np.nan, pd.array([pd.NA] * len(table), "Int64")
            continue
        neurons = indicator is Indicator.NEURON_OVERLAP
        features = {c.entry: c.neurons if neurons else c.embedding for c in candidates}
        ranked = rank_sources([target_neurons if neurons else target], features, indicator)
        value = dict(ranked)
        rank = {entry: r for r, (entry, _) in enumerate(ranked, start=1)}
        table[indicator.value] = table["entry"].map(value).astype(float)
        table[f"{indicator.value}_rank"] = table["entry"].map(rank).astype("Int64")
    table["source_score"] = [float(c.score) for c in candidates]
    table["rank"] = table[f"{by.value}_rank"]
    return table.sort_values("rank", kind="stable").reset_index(drop=True)[ranking_columns()]
