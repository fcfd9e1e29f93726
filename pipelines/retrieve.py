"""Which library source prompt a new task should start from (SPoT's retrieval for one new target; the logic is
spot_core.selection's).

python -m pipelines.retrieve library=outputs/library task=rte                          # the ranking only
python -m pipelines.retrieve library=outputs/library task=rte train=true top_k=3       # and the target from the top 3

Trains the task's task embedding as a study's target cell does (the library's `embedding_step` steps from the target
init), ranks the library's source runs of the model by every indicator (ranking.csv / ranking.json in out_dir);
train=true then trains the target from the top k by `methods` and its baseline, and compares them (results.csv /
results.json). MLflow: a parent run per retrieval (library, task, model, out_dir), a child run per training run.
A re-run finds finished runs by their folder's result.json and their FINISHED child run, and trains nothing again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipelines.deprecated import upgrade
from pipelines.errors import entry_point
from pipelines.ledger import Keyed, retrieval_ledger
from pipelines.paths import check_writable, resolve_data_dir
from pipelines.specs import run_fields
from pipelines.tracking import TrackedRun, check_store, normalise_uri, open_store
from pipelines.user_tasks import use_tasks
from spot_core.backbones import Backbone, check_backbone, load_backbone
from spot_core.config import check_int
from spot_core.library import Library
from spot_core.neurons import load_neurons, record_neurons
from spot_core.run_dir import RunDir, write_atomic, write_json
from spot_core.selection import (
    Candidate,
    PlannedRun,
    SelectionConfig,
    Sources,
    baseline_run,
    compare,
    embedding_run,
    library_sources,
    rank_library,
    records,
    variant_runs,
)
from spot_core.tags import NEURONS
from spot_core.tasks import check_data, get
from spot_core.tasks.definitions import register_definitions
from spot_core.tracking import Tracker
from spot_core.trainer import TrainerConfig
from spot_core.tuning import RunSpec, data_record, prompt_record, trainer_for

MASKS = NEURONS  # out_dir/neurons/<entry id or target-<key>>: the neuron masks recorded here


def resolve_task(cfg: DictConfig, library: Library, data_dir: str | None) -> str:
    """The registry name of the new task ("rte" -> "rte_v1", a task file read and checked); an unknown name raises
    UnknownNameError listing the closest registered ones. The library's task-file sources are registered first from
    their entries' definitions, so that a mixture with them reads their data where this machine has it."""
    register_definitions({e.task: e.task_definition for e in library.entries if e.task_definition})
    return get(use_tasks(cfg, [cfg.task], data_dir)[0]).name


@dataclass
class RetrieveRequest:
    """A `make retrieve` as the checks found it: the library's sources for the model, what to do, the target's run
    template."""

    cfg: DictConfig
    library: Library
    sources: Sources
    selection: SelectionConfig
    template: RunSpec
    root: Path
    uri: str
    loaded: Backbone | None = None  # the model, once a run or a mask needed it: every one shares it

    def backbone(self) -> Backbone:
        """The model, loaded once for all the retrieval's runs and masks (they share its spec's model settings)."""
        if self.loaded is None:
            t = self.template
            self.loaded = load_backbone(t.model, t.cache_dir, t.dtype, t.device)
        return self.loaded

    @property
    def key(self) -> str:
        """The parent run's key: the same library, task, model and out_dir are the same retrieval."""
        identity = [str(self.library.root.resolve()), self.template.task, self.template.model, str(self.root)]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def check(cfg: DictConfig) -> RetrieveRequest:
    """Everything a user can get wrong, before any model loads or anything is written: the settings, the library
    and its entries for the model, the task and its data, the model, out_dir and the tracking store."""
    upgrade(cfg)  # renamed keys: their values move to the new names
    selection = SelectionConfig(
        top_k=cfg.top_k, methods=list(cfg.methods), similarity=cfg.similarity, train=cfg.train
    )  # fmt: skip
    check_int(cfg.seed, "seed", low=0)
    if cfg.prompt_length is not None:
        check_int(cfg.prompt_length, "prompt_length", hint=" (or null: the library's)")
    library = Library.open(cfg.library)  # none there, a malformed index or a changed file: fail here
    m = cfg.model
    sources = library_sources(library, m.name, cfg.prompt_length)
    selection.check_candidates(len(sources.entries), f"the library {library.root} for model {m.name!r}")
    data_dir = resolve_data_dir(cfg.data_dir)
    task = resolve_task(cfg, library, data_dir)
    check_data(task, data_dir)
    trainer = {**OmegaConf.to_container(cfg.trainer, resolve=True), "seed": cfg.seed, "embedding_step": None}
    template = RunSpec(model=m.name, task=task, trainer=TrainerConfig(**trainer), **run_fields(cfg, data_dir))
    embedding_run(template, sources)  # a class-label init too long for the prompt: fail here
    baseline_run(template, sources)  # a trainer setting: fail here
    check_backbone(m.name, m.cache_dir, m.get("prompt_once"))
    root = check_writable(cfg.out_dir, "out_dir")
    uri = normalise_uri(cfg.tracking.uri)
    check_store(uri)
    return RetrieveRequest(cfg, library, sources, selection, template, root, uri)


# --- MLflow -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tracked:
    """Where the retrieval is tracked: its runs in the ledger (`ledger.retrieval_ledger`: a parent per
    `RetrieveRequest.key`, a child per training run, found FINISHED by its run key on a re-run) and its parent, open."""

    runs: Keyed
    parent: TrackedRun

    def log(self, files: list[Path], metrics: dict[str, float] | None = None) -> None:
        """The retrieval's output files and measures, on its parent run."""
        for path in files:
            self.parent.tracker.log_artifact(path)
        if metrics:
            self.parent.tracker.log_metrics(metrics, 0)


def parent_tags(retrieval: RetrieveRequest) -> dict[str, Any]:
    """What the parent run says of the retrieval: tags, not params, since a re-run may change its settings."""
    sel = retrieval.selection
    methods = ",".join(m.value for m in sel.methods)
    extra = {"out_dir": str(retrieval.root), "methods": methods, "train": sel.train}
    return {**facts(retrieval), **extra, "candidates": len(retrieval.sources.entries)}


def train(
    retrieval: RetrieveRequest, tracked: Tracked, run: PlannedRun, then: Callable[[Tracker], None] | None = None
) -> tuple[dict, bool]:
    """Trains (or resumes) a run under its own child run, `then` after it with its tracker; a run finished
    before (its result.json and its FINISHED child run) is not touched. Returns its result and whether it
    was trained now."""
    folder = RunDir(run.out_dir(retrieval.root))
    was_finished = folder.finished()
    if was_finished and tracked.runs.finished(run.key):
        return folder.result(), False
    tags = {"role": run.role.value, "task": run.spec.task, "model": run.spec.model, "entries": ",".join(run.sources)}
    tags |= {"rank": str(run.rank), "k": str(run.k), "out_dir": str(folder.path)}
    with tracked.runs.child(tracked.parent.run_id, run.key, run.label, tags) as child:
        if was_finished:  # trained before this store knew it: its record, from the folder
            result = folder.result()
            child.tracker.log_params({**prompt_record(run.spec), **data_record(run.spec)})
            child.tracker.log_metrics({k: float(v) for k, v in result.items()}, int(result["final/step"]))
        else:
            trainer = trainer_for(run.spec, folder.path, child.tracker, backbone=retrieval.backbone())
            result = trainer.fit()  # or resumes
        if then:
            then(child.tracker)
        child.tracker.log_artifact(folder.result_file)
    return result, not was_finished


# --- the retrieval ----------------------------------------------------------------------------------------------
def record_mask(retrieval: RetrieveRequest, prompt_file: Path, folder: Path, tracker: Tracker | None = None):
    """The activated-neuron mask of a task-embedding prompt (as the study's neurons stage records it)."""
    spec, run = retrieval.template, RunDir(folder)
    if not run.finished():  # the backbone loads only for a mask still to record
        record_neurons(
            spec.model, prompt_file, folder, spec.cache_dir, spec.device, spec.dtype, tracker, spec.prompt_once,
            retrieval.backbone(),
        )  # fmt: skip
    return load_neurons(run.neurons).numpy()


def rank(retrieval: RetrieveRequest, tracked: Tracked) -> tuple[pd.DataFrame, int]:
    """The target's task embedding (trained or found), its mask and the entries' masks; the ranking, written to
    out_dir. Returns it and how many runs were trained now."""
    root, sources = retrieval.root, retrieval.sources
    embedding = embedding_run(retrieval.template, sources)
    run = RunDir(embedding.out_dir(root))
    mask_dir = root / MASKS / f"target-{embedding.key}"
    print(f"{embedding.label}: {sources.embedding_step} steps, task embedding of kind {sources.kind.value}", flush=True)
    _, trained = train(
        retrieval, tracked, embedding, lambda tracker: record_mask(retrieval, run.task_embedding, mask_dir, tracker)
    )
    target = run.embedding(sources.kind)
    target_mask = record_mask(retrieval, run.task_embedding, mask_dir)  # a no-op once recorded
    masks = {e.id: e.neurons() for e in sources.entries}  # an entry without one: recorded here, as a study would
    unrecorded = [e for e in sources.entries if masks[e.id] is None]
    if unrecorded:
        print(f"recording the activated neurons of {len(unrecorded)} library prompts without a mask", flush=True)
    for e in unrecorded:
        masks[e.id] = record_mask(retrieval, e.path(RunDir.TASK_EMBEDDING), root / MASKS / e.id)
    candidates = [
        Candidate(e.id, e.task, e.seed, e.score, e.embedding(sources.kind), masks[e.id]) for e in sources.entries
    ]
    ranking = rank_library(target, candidates, target_mask, retrieval.selection.similarity)
    return ranking, int(trained)


def facts(retrieval: RetrieveRequest) -> dict[str, Any]:
    """What every output file says of the retrieval it comes from."""
    s, sel = retrieval.sources, retrieval.selection
    return {
        "task": retrieval.template.task,
        "model": retrieval.template.model,
        "library": str(retrieval.library.root.resolve()),
        "prompt_length": s.prompt_length,
        "embedding_step": s.embedding_step,
        "task_embedding": s.kind.value,
        "similarity": sel.similarity.value,
        "top_k": sel.top_k,
        "seed": retrieval.template.trainer.seed,
    }


def write_table(retrieval: RetrieveRequest, name: str, table: pd.DataFrame, **extra: Any) -> list[Path]:
    """`<name>.csv` and `<name>.json` (the facts of the retrieval, `extra`, and the rows) in out_dir."""
    csv = write_atomic(retrieval.root / f"{name}.csv", lambda tmp: table.to_csv(tmp, index=False))
    return [csv, write_json(retrieval.root / f"{name}.json", {**facts(retrieval), **extra, "rows": records(table)})]


def train_variants(
    retrieval: RetrieveRequest, ranking: pd.DataFrame, tracked: Tracked
) -> tuple[pd.DataFrame, int, dict]:
    """The baseline and the methods' runs from the top k; their comparison, written to out_dir."""
    sel, root = retrieval.selection, retrieval.root
    baseline = baseline_run(retrieval.template, retrieval.sources)
    runs, skipped = variant_runs(retrieval.template, retrieval.sources, ranking.head(sel.top_k), sel, root)
    for method, why in skipped.items():
        print(f"{method.value}: {why}", flush=True)
    scores, trained_now = {}, 0
    for run in [baseline, *runs]:
        result, trained = train(retrieval, tracked, run)
        scores[run.key], trained_now = float(result["best/val_score"]), trained_now + trained
        print(f"{run.label}: {'trained' if trained else 'finished before'}, score {scores[run.key]:.4g}", flush=True)
    results = compare(scores[baseline.key], runs, scores, root, skipped, sel.top_k)
    return results, trained_now, {m.value: why for m, why in skipped.items()}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Checks everything first (nothing written for a bad invocation), then ranks and, with train=true, trains and
    compares; returns the ranking, the results (None without train), how many runs trained now, the parent run."""
    retrieval = check(cfg)
    client, experiment_id = open_store(retrieval.uri, cfg.tracking.experiment)  # all checked: the runs start
    runs = retrieval_ledger(client, experiment_id, retrieval.key)
    name, config = f"retrieve-{retrieval.template.task}", OmegaConf.to_yaml(retrieval.cfg)
    with runs.open_parent(name, config, parent_tags(retrieval)) as parent:  # its end: FINISHED, FAILED or KILLED
        tracked = Tracked(runs, parent)
        ranking, trained_now = rank(retrieval, tracked)
        files = write_table(retrieval, "ranking", ranking)
        tracked.log(files)
        print(show(ranking), flush=True)
        summary = {"ranking": ranking, "results": None, "skipped": {}, "files": [str(f) for f in files]}
        if retrieval.selection.train:
            results, trained, skipped = train_variants(retrieval, ranking, tracked)
            trained_now += trained
            files = write_table(retrieval, "results", results, methods=[m.value for m in retrieval.selection.methods])
            measures = results[results["method"] != "source"].dropna(subset=["score"])
            metrics = {
                f"{r.method}/{m}": float(getattr(r, m)) for r in measures.itertuples() for m in ("score", "abs", "rel")
            }
            tracked.log(files, metrics)
            print(show(results.drop(columns=["out_dir"])), flush=True)
            summary |= {"results": results, "skipped": skipped, "files": summary["files"] + [str(f) for f in files]}
    return {**summary, "trained_now": trained_now, "parent_run_id": parent.run_id, "out_dir": str(retrieval.root)}


def show(table: pd.DataFrame) -> str:
    return table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")


@entry_point("retrieve")
def main(cfg: DictConfig) -> None:
    summary = run(cfg)
    print(f"{summary['trained_now']} runs trained now; written: {', '.join(summary['files'])}")
    print(f"MLflow parent run {summary['parent_run_id']}")


if __name__ == "__main__":
    main()
