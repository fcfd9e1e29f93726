"""Which library source prompts a new task should start from (SPoT section 3.2-3.3, for one target outside any
study): the library's source runs of the model ranked against the target's task embedding by every
transferability indicator, the top k by one of them, and the runs that train the target from those:

    best_of           a run from each of the top-k source prompts (init=file); the best is reported
    weighted_average  a run from sum_r a_r P_r, a_r = sim_r / sum_l sim_l over the top k (`prompts.similarity_weights`)
    mixture           a prompt trained on the top-k source tasks plus the target (examples-proportional), then the
                      target from its final prompt (as `spot_core.stages.retrieval` builds it)

each against the baseline: the target's own prompt from the target init, scored by the study report's measures
(score, abs. gain, relative error reduction: `spot_core.analysis`). A library source task with several runs is
ranked once per run, as SPoT ranks runs. A run's folder is named by a hash of what determines its result (never
paths): a re-run finds it finished, a changed ranking or setting gets new folders.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spot_core.analysis.retrieval import best_of_top_k
from spot_core.analysis.similarity import Indicator, Similarity, TaskEmbedding, rank_sources, task_embedding
from spot_core.analysis.transfer import relative_error_reduction
from spot_core.config import check_int, parse_choice
from spot_core.errors import ConfigError
from spot_core.library import Entry, Library
from spot_core.prompt_files import load_prompt
from spot_core.prompts import PromptInit, similarity_weights
from spot_core.run_dir import RunDir
from spot_core.study import initial
from spot_core.tags import Retrieval
from spot_core.tasks import TaskDataError, UnknownNameError, check_data, members
from spot_core.tuning import PromptConfig, RunSpec

INDICATORS = tuple(Indicator)


class Method(StrEnum):
    """How the target starts from the top k (the `methods` setting)."""

    BEST_OF = "best_of"
    WEIGHTED_AVERAGE = Retrieval.WEIGHTED_AVERAGE.value
    MIXTURE = Retrieval.MIXTURE.value


class Role(StrEnum):
    """What a run of a retrieval is for (its folder's prefix, its MLflow `role` tag)."""

    TASK_EMBEDDING = "task_embedding"  # the target's short run whose early checkpoint is its task embedding
    BASELINE = "baseline"  # the target's own prompt from the target init
    SOURCE = "source"  # the target from one top-k source prompt (best_of runs one per source)
    WEIGHTED_AVERAGE = Method.WEIGHTED_AVERAGE.value
    MIXTURE_PROMPT = "mixture_prompt"  # the prompt trained on the top-k source tasks plus the target
    MIXTURE = Method.MIXTURE.value  # the target from the mixture prompt


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
        raise ConfigError(f"library {library.root} has no source prompt for model {model!r}; it has {have}: set model=")
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


def run_embedding(run: RunDir, kind: TaskEmbedding | str) -> np.ndarray:
    """A finished run's task embedding [L, H] from its folder (the displacement needs its initial prompt)."""
    initial_prompt = run.initial_prompt
    return task_embedding(
        load_prompt(run.task_embedding)[0].numpy(),
        load_prompt(initial_prompt)[0].numpy() if initial_prompt.exists() else None,
        kind,
    )


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


# --- the runs -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedRun:
    """One prompt-tuning run of a retrieval: its spec, and the library entries (or run) its prompt starts from."""

    role: Role
    spec: RunSpec
    sources: tuple[str, ...] = ()  # entry ids; a mixture: the mixture prompt run's key
    rank: int = 0  # a source run: the rank of its source
    k: int = 0  # how many top-ranked sources it draws on
    tasks: tuple[str, ...] = field(default=(), compare=False)  # the source tasks (display)

    @property
    def identity(self) -> str:
        """What determines its result, as canonical JSON: the spec without paths (files become `sources`)."""
        spec = asdict(self.spec)
        for name in ("data_dir", "cache_dir", "device", "prompt_once"):
            spec.pop(name)
        spec["prompt"].pop("files")
        spec["prompt"]["weights"] = [round(w, 6) for w in spec["prompt"]["weights"]]
        spec["trainer"]["optimizer"] = str(spec["trainer"]["optimizer"])
        spec["prompt"]["init"] = str(spec["prompt"]["init"])
        return json.dumps({"role": self.role.value, "sources": list(self.sources), **spec}, sort_keys=True)

    @property
    def key(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:16]

    def out_dir(self, root: str | Path) -> Path:
        return Path(root) / f"{self.role.value}-{self.key}"

    @property
    def label(self) -> str:
        via = {
            Role.SOURCE: f"from {','.join(self.tasks)} (rank {self.rank})",
            Role.WEIGHTED_AVERAGE: f"from the weighted average of the top {self.k}",
            Role.MIXTURE: f"from the top-{self.k} mixture prompt",
        }.get(self.role, "")
        return f"{self.role.value}:{self.spec.task}" + (f" {via}" if via else "")


def target_spec(template: RunSpec, length: int) -> RunSpec:
    """The target's spec from the study's target init: class labels where the task has label words, else sampled
    vocab (`spot_core.study.initial`), `length` prompt tokens."""
    init = initial(template.task, PromptInit.CLASS_LABELS.value)
    return replace(template, prompt=PromptConfig(length=length, init=init))


def embedding_run(template: RunSpec, sources: Sources) -> PlannedRun:
    """The target's short run, as a study's target cell is up to its task-embedding checkpoint: the library's
    `embedding_step` steps from the target init, the library's prompt length."""
    step = sources.embedding_step
    trainer = replace(template.trainer, steps=step, embedding_step=step, eval_every=step)
    return PlannedRun(Role.TASK_EMBEDDING, replace(target_spec(template, sources.prompt_length), trainer=trainer))


def trained(template: RunSpec, sources: Sources) -> RunSpec:
    """The spec of a full run: the template's trainer, saving the task embedding at the library's step too."""
    step = sources.embedding_step if sources.embedding_step <= template.trainer.steps else None
    return replace(target_spec(template, sources.prompt_length), trainer=replace(template.trainer, embedding_step=step))


def baseline_run(template: RunSpec, sources: Sources) -> PlannedRun:
    return PlannedRun(Role.BASELINE, trained(template, sources))


def variant_runs(
    template: RunSpec, sources: Sources, top: pd.DataFrame, config: SelectionConfig, root: str | Path
) -> tuple[list[PlannedRun], dict[Method, str]]:
    """The runs of the methods asked for, from the top-k rows of the ranking (`rank_library`, first k rows).

    Returns:
        The runs (a mixture prompt before the run that starts from it) and, per method that cannot run, why: a
        weighted average of similarities that do not sum above zero; a mixture whose source task is unknown here
        or whose data is missing (one line).
    """
    entries = {e.id: e for e in sources.entries}
    spec = trained(template, sources)
    ids, k = list(top["entry"]), len(top)
    runs, skipped = [], {}
    if Method.BEST_OF in config.methods:
        for rank, entry in enumerate(ids, start=1):
            start = prompt_from(spec, [entries[entry].best_prompt_path])
            runs.append(PlannedRun(Role.SOURCE, start, (entry,), rank, k, (entries[entry].task,)))
    tasks = tuple(entries[e].task for e in ids)
    if Method.WEIGHTED_AVERAGE in config.methods:
        similarities = [float(s) for s in top[config.similarity.value]]
        if sum(similarities) > 0:
            files = [entries[e].best_prompt_path for e in ids]
            start = prompt_from(spec, files, similarity_weights(similarities))
            runs.append(PlannedRun(Role.WEIGHTED_AVERAGE, start, tuple(ids), 0, k, tasks))
        else:
            skipped[Method.WEIGHTED_AVERAGE] = (
                f"skipped: the top-{k} {config.similarity.value} similarities sum to {sum(similarities):.4g}, not "
                "above 0: no weights"
            )
    if Method.MIXTURE in config.methods:
        try:
            mixture = mixture_runs(spec, [entries[e] for e in ids], root)
            runs += mixture
        except (UnknownNameError, TaskDataError) as e:
            skipped[Method.MIXTURE] = f"skipped: {' '.join(str(e).split())}"
    return runs, skipped


def prompt_from(spec: RunSpec, files: Sequence[str | Path], weights: Sequence[float] = ()) -> RunSpec:
    init = PromptInit.WEIGHTED_AVERAGE if weights else PromptInit.FILE
    prompt = PromptConfig(spec.prompt.length, init, files=[str(f) for f in files], weights=list(weights))
    return replace(spec, prompt=prompt)


def mixture_runs(spec: RunSpec, top: Sequence[Entry], root: str | Path) -> list[PlannedRun]:
    """The mixture prompt (the top-k source tasks plus the target, from sampled vocab: SPoT's source init) and the
    target run from its final prompt.

    Raises:
        UnknownNameError: a source task this installation does not know (its message says which, in one line).
        TaskDataError: a source task's data is missing.
    """
    parts = []
    for entry in top:
        try:
            parts += [t.name for t in members(entry.task)]
        except UnknownNameError:
            raise UnknownNameError(f"source task {entry.task!r} (entry {entry.id}) is not a task known here") from None
    tasks = "+".join(dict.fromkeys([*parts, spec.task]))
    check_data(tasks, spec.data_dir)
    prompt = PromptConfig(spec.prompt.length, initial(tasks, PromptInit.SAMPLED_VOCAB.value))
    ids, names = tuple(e.id for e in top), tuple(e.task for e in top)
    mixture = PlannedRun(Role.MIXTURE_PROMPT, replace(spec, task=tasks, prompt=prompt), ids, 0, len(top), names)
    start = prompt_from(spec, [mixture.out_dir(root) / RunDir.FINAL_PROMPT])
    return [mixture, PlannedRun(Role.MIXTURE, start, (mixture.key,), 0, len(top), names)]


# --- the comparison ---------------------------------------------------------------------------------------------
RESULT_COLUMNS = ["method", "k", "rank", "entries", "tasks", "score", "abs", "rel", "note", "out_dir"]


def compare(
    baseline: float,
    runs: Sequence[PlannedRun],
    scores: Mapping[str, float],
    root: str | Path,
    skipped: Mapping[Method, str] | None = None,
    top_k: int = 0,
) -> pd.DataFrame:
    """Each method against the baseline, by the study report's measures.

    Args:
        baseline: the baseline run's score.
        runs: the variant runs (`variant_runs`).
        scores: run key -> its best validation score.
        root: where the runs' folders are.
        skipped: the methods that could not run, with why.
        top_k: the k of the methods.

    Returns:
        DataFrame with columns method (baseline, best_of, weighted_average, mixture, then source: one row per
        top-k prompt the target started from), k, rank (best_of: its pick's; source: its own), entries and tasks
        (the library entries and source tasks it starts from, ","-joined), score, abs (score - baseline), rel
        (relative error reduction, %), note (why a method did not run) and out_dir. best_of is the best of the
        source runs (ties: the higher ranked).
    """

    def row(method: str, run: PlannedRun, rank: int, k: int, entries: str) -> tuple:
        return (method, k, rank, entries, ",".join(run.tasks), scores[run.key], "", str(run.out_dir(root)))

    rows = [("baseline", 0, 0, "", "", baseline, "", "")]
    sources = sorted((r for r in runs if r.role is Role.SOURCE), key=lambda r: r.rank)
    if sources:
        by_entry = {r.sources[0]: r for r in sources}
        best = best_of_top_k(list(by_entry), {e: scores[r.key] for e, r in by_entry.items()}, len(sources))
        rows.append(row(Method.BEST_OF.value, by_entry[best], by_entry[best].rank, top_k, best))
    for run in runs:
        if run.role is Role.WEIGHTED_AVERAGE:
            rows.append(row(run.role.value, run, 0, run.k, ",".join(run.sources)))
        elif run.role is Role.MIXTURE:
            prompt = next(r for r in runs if r.key == run.sources[0])  # the mixture prompt it starts from
            rows.append(row(run.role.value, run, 0, run.k, ",".join(prompt.sources)))
    rows += [(method.value, top_k, 0, "", "", np.nan, why, "") for method, why in (skipped or {}).items()]
    rows += [row(Role.SOURCE.value, run, run.rank, 0, run.sources[0]) for run in sources]
    columns = [c for c in RESULT_COLUMNS if c not in ("abs", "rel")]
    table = pd.DataFrame(rows, columns=columns)
    order = {name: i for i, name in enumerate(["baseline", *(m.value for m in Method), Role.SOURCE.value])}
    table = table.sort_values("method", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    table["score"] = table["score"].astype(float)
    table["abs"] = table["score"] - baseline
    table["rel"] = relative_error_reduction(table["score"], np.full(len(table), baseline, dtype=float))
    return table[RESULT_COLUMNS]


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """A table's rows as JSON-ready dicts (NaN and NA as None)."""
    return json.loads(table.to_json(orient="records"))
