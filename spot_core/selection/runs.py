"""The runs of a retrieval: the target's task embedding and baseline, the target from the top k by each method
(`variant_runs`), each keyed by what determines its result, and their comparison with the baseline (`compare`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spot_core.analysis.retrieval import best_of_top_k
from spot_core.analysis.transfer import relative_error_reduction
from spot_core.library import Entry
from spot_core.prompts import PromptInit, similarity_weights
from spot_core.run_dir import RunDir
from spot_core.selection.ranking import Method, SelectionConfig, Sources
from spot_core.study import initial
from spot_core.tasks import TaskDataError, UnknownNameError, check_data, members
from spot_core.tuning import PromptConfig, RunSpec


class Role(StrEnum):
    """What a run of a retrieval is for (its folder's prefix, its MLflow `role` tag)."""

    TASK_EMBEDDING = "task_embedding"  # the target's short run whose early checkpoint is its task embedding
    BASELINE = "baseline"  # the target's own prompt from the target init
    SOURCE = "source"  # the target from one top-k source prompt (best_of runs one per source)
    WEIGHTED_AVERAGE = Method.WEIGHTED_AVERAGE.value
    MIXTURE_PROMPT = "mixture_prompt"  # the prompt trained on the top-k source tasks plus the target
    MIXTURE = Method.MIXTURE.value  # the target from the mixture prompt


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
