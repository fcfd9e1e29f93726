"""SPoT's retrieval (section 3.2): for each target and k, the top-k source runs by task-embedding similarity give
    weighted_average  the similarity-weighted average of their prompts as the init;
    mixture           a prompt trained on the mixture of their tasks plus the target (stage retrieval_mixture),
                      whose final checkpoint is the init.
Best-of-top-k needs no runs of its own (the report reads it off the transfer grid). The cells are planned once
the source and target runs have finished, from their task embeddings on disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spot_core.prompts import similarity_weights
from spot_core.run_dir import RunDir
from spot_core.similarity import TaskEmbedding, rank_sources
from spot_core.stages import source, target
from spot_core.stages.base import StageDef, Tags, run_tune, run_tune_pack, tune_spec
from spot_core.study import Cell, StudyConfig, initial, make_cell
from spot_core.tags import Retrieval, Stage
from spot_core.tasks import members


def plan_retrieval(study: StudyConfig, rankings: Mapping[str, Sequence[tuple[Cell, float]]]) -> list[Cell]:
    """The retrieval cells, from each target's source runs ranked most similar first (with their similarity).
    Mixture prompts (stage retrieval_mixture) come first in the list; k larger than the candidates is skipped."""
    mixtures, cells = [], []
    for name, ranked in rankings.items():
        for k in (k for k in study.retrieval_ks if k <= len(ranked)):
            top = list(ranked[:k])
            retrieve = dict(trainer=study.target_trainer, target=name, k=k, keyed=keyed(study, k))
            if Retrieval.WEIGHTED_AVERAGE in study.retrieval and sum(s for _, s in top) > 0:
                blend = tuple(zip((c for c, _ in top), similarity_weights([s for _, s in top]), strict=True))
                wavg = dict(blend=blend, origin=f"wavg-top{k}", retrieval=Retrieval.WEIGHTED_AVERAGE, **retrieve)
                cells += [make_cell(study, Stage.RETRIEVAL, name, s, **wavg) for s in study.seeds]
            if Retrieval.MIXTURE in study.retrieval:
                tasks = "+".join(dict.fromkeys([t.name for c, _ in top for t in members(c.task)] + [name]))
                mix = make_cell(
                    study, Stage.RETRIEVAL_MIXTURE, tasks, study.source_seeds[0], trainer=study.source_trainer,
                    init=initial(tasks, study.prompt.source_init), k=k, keyed=keyed(study, k),
                    retrieval=Retrieval.MIXTURE, prompt_file=RunDir.FINAL_PROMPT,
                )  # fmt: skip
                mixtures.append(mix)
                via = dict(source=mix, origin=f"mix-top{k}", retrieval=Retrieval.MIXTURE, **retrieve)
                cells += [make_cell(study, Stage.RETRIEVAL, name, seed, **via) for seed in study.seeds]
    return mixtures + cells


def keyed(study: StudyConfig, k: int) -> dict[str, Any]:
    """What of the retrieval's design a retrieval cell's key includes: k, the similarity, the task embedding."""
    retrieval: dict[str, Any] = {"k": k, "similarity": study.retrieval_similarity}
    if study.task_embedding != TaskEmbedding.PROMPT:  # keys of prompt-embedding studies stay as they were
        retrieval["embedding"] = study.task_embedding
    return {"retrieval": retrieval}


def designed(study: StudyConfig) -> list[Cell]:
    """The cells the design implies: every target ranking every source run (the real ranking changes which
    sources a cell starts from, not how many cells)."""
    ranked = [(c, 1.0) for c in source.plan(study)]
    return plan_retrieval(study, {t: ranked for t in study.targets})


def rankings(study: StudyConfig, root: Path, done: set[str]) -> dict[str, list[tuple[Cell, float]]]:
    """Each target's finished source runs, most similar first, from the task embeddings on disk (a target's
    similarity is averaged over its finished runs)."""
    kind = study.task_embedding
    sources = {c.key: (c, c.run_dir(root).embedding(kind)) for c in source.plan(study) if c.key in done}
    finished = [c for c in target.plan(study) if c.key in done]
    out = {}
    for name in study.targets:
        runs = [c.run_dir(root).embedding(kind) for c in finished if c.task == name]
        if runs and sources:
            ranked = rank_sources(runs, {k: e for k, (_, e) in sources.items()}, study.retrieval_similarity)
            out[name] = [(sources[k][0], sim) for k, sim in ranked]
    return out


def plan_later(study: StudyConfig, root: Path, done: set[str]) -> tuple[list[Cell], dict[str, str]]:
    """The retrieval cells once sources and targets have settled; the targets that had nothing to rank."""
    ranked = rankings(study, root, done)
    why = "no finished source and target runs to rank"
    return plan_retrieval(study, ranked), {f"retrieval:{t}": why for t in study.targets if t not in ranked}


def read_tags(tags: Tags) -> Tags:
    """A retrieval run's strategy: its `retrieval` tag; runs logged before the study wrote that tag carry it only
    in their display name (source "wavg-top{k}" or "mix-top{k}"; retrieval_mixture runs: none)."""
    if "retrieval" in tags:
        return tags
    legacy = {"wavg": Retrieval.WEIGHTED_AVERAGE, "mix": Retrieval.MIXTURE}
    prefix, _, k = tags.get("source", "").partition("-top")
    if tags["stage"] == Stage.RETRIEVAL_MIXTURE:
        strategy = Retrieval.MIXTURE.value
    else:
        strategy = legacy[prefix].value if prefix in legacy and k.isdigit() else ""
    return {**tags, "retrieval": strategy}


STAGE = StageDef(
    "retrieval",
    (Stage.RETRIEVAL_MIXTURE, Stage.RETRIEVAL),
    plan=lambda study: [],
    spec=tune_spec,
    run=run_tune,
    run_pack=run_tune_pack,
    plan_later=plan_later,
    waits_for=(Stage.SOURCE, Stage.TARGET),
    designed=designed,
    core=True,
    read_tags=read_tags,
)
