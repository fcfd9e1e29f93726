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

import numpy as np

from spot_core.analysis.similarity import rank_sources, task_embedding
from spot_core.prompt_files import load_prompt
from spot_core.prompts import similarity_weights
from spot_core.stages import source, target
from spot_core.stages.base import StageDef, run_tune, run_tune_pack, tune_spec
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
            retrieve = dict(trainer=study.target_trainer, target=name, k=k)
            if Retrieval.WEIGHTED_AVERAGE in study.retrieval and sum(s for _, s in top) > 0:
                blend = tuple(zip((c for c, _ in top), similarity_weights([s for _, s in top]), strict=True))
                cells += [make_cell(study, Stage.RETRIEVAL, name, s, blend=blend, **retrieve) for s in study.seeds]
            if Retrieval.MIXTURE in study.retrieval:
                tasks = "+".join(dict.fromkeys([t.name for c, _ in top for t in members(c.task)] + [name]))
                mix = make_cell(
                    study, Stage.RETRIEVAL_MIXTURE, tasks, study.source_seeds[0], trainer=study.source_trainer,
                    init=initial(tasks, study.prompt.source_init), k=k,
                )  # fmt: skip
                mixtures.append(mix)
                cells += [
                    make_cell(study, Stage.RETRIEVAL, name, seed, source=mix, **retrieve)
                    for seed in study.seeds
                ]
    return mixtures + cells


def embedding(study: StudyConfig, cell: Cell, root: Path) -> np.ndarray:
    """A finished run's task embedding, from its folder."""
    folder = cell.run_dir(root)
    initial_prompt = folder.initial_prompt
    return task_embedding(
        load_prompt(folder.task_embedding)[0].numpy(),
        load_prompt(initial_prompt)[0].numpy() if initial_prompt.exists() else None,
        study.task_embedding,
    )


def rankings(study: StudyConfig, root: Path, done: set[str]) -> dict[str, list[tuple[Cell, float]]]:
    """Each target's finished source runs, most similar first, from the task embeddings on disk (a target's
    similarity is averaged over its finished runs)."""
    sources = {c.key: (c, embedding(study, c, root)) for c in source.plan(study) if c.key in done}
    finished = [c for c in target.plan(study) if c.key in done]
    out = {}
    for name in study.targets:
        runs = [embedding(study, c, root) for c in finished if c.task == name]
        if runs and sources:
            ranked = rank_sources(runs, {k: e for k, (_, e) in sources.items()}, study.retrieval_similarity)
            out[name] = [(sources[k][0], sim) for k, sim in ranked]
    return out


def plan_later(study: StudyConfig, root: Path, done: set[str]) -> tuple[list[Cell], dict[str, str]]:
    """The retrieval cells once sources and targets have settled; the targets that had nothing to rank."""
    ranked = rankings(study, root, done)
    why = "no finished source and target runs to rank"
    return plan_retrieval(study, ranked), {f"retrieval:{t}": why for t in study.targets if t not in ranked}


STAGE = StageDef(
    "retrieval",
    (Stage.RETRIEVAL_MIXTURE, Stage.RETRIEVAL),
    plan=lambda study: [],
    spec=tune_spec,
    run=run_tune,
    run_pack=run_tune_pack,
    plan_later=plan_later,
    waits_for=(Stage.SOURCE, Stage.TARGET),
    core=True,
)
