"""The ledger in MLflow: a parent run with child runs found again by key (`Keyed`): one parent per study and a child
per cell tagged with its key and coordinates (spot_core.tags.TAGS), or one per `make retrieve` and a child per
training run; what has finished, what a stopped or crashed process left running, the runs table the analysis reads,
and the lookups of the other pipelines (an evaluation's run, a library export's files). The entry points write it,
the report reads it; the queries live only here.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from math import nan
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipelines.tracking import PARENT_TAG, Client, TrackedRun, TrackingError, open_store, resumed_run, tracked_run
from spot_core.analysis.frames import CURVE_COLUMNS, FACT_COLUMNS, RUN_COLUMNS, StudyResults, order_runs
from spot_core.run_dir import RunDir
from spot_core.stages.catalogue import CATALOGUE, stage_of
from spot_core.tags import TAGS

STUDY_KIND, RETRIEVE_KIND = "study", "retrieve"  # the parent runs' `kind` tags
SUPERSEDED = "superseded"  # a tag: "true" on a finished run the study no longer plans (kept, not reported)
MAX_RUNS = 50000  # the most runs one search returns (the sqlite store's limit)


@dataclass(frozen=True)
class Keyed:
    """A parent run and its child runs, found again by key: a study's (a parent per study name, a child per cell,
    keyed by its cell key) or a `make retrieve`'s (a parent per retrieval, a child per training run). The parent and
    its children carry the scope tag; a re-run reuses the parent and finds the finished children by their key, so
    that nothing finished is trained again."""

    client: Client
    experiment_id: str
    kind: str  # the parent's `kind` tag
    scope_tag: str  # the tag, and its value, that the parent and its children share
    scope: str
    key_tag: str  # a child's key ("" on the parent)

    def search(self, *clauses: str, max_results: int = MAX_RUNS, **options: Any) -> list:
        query = " and ".join([f"tags.{self.scope_tag} = '{self.scope}'", *clauses])
        return self.client.search_runs([self.experiment_id], query, max_results=max_results, **options)

    def children(self, status: str | None = None, **options: Any) -> list:
        """The child runs (of one status; `order_by=[...]` as MLflow takes it)."""
        status_is = [f"attributes.status = '{status}'"] if status else []
        return self.search(f"tags.{self.key_tag} != ''", *status_is, **options)

    def finished_keys(self) -> set[str]:
        return {r.data.tags[self.key_tag] for r in self.children("FINISHED")}

    def finished(self, key: str) -> bool:
        """Whether `key` has a FINISHED child run (a cell that finished in an earlier attempt of a retried trial)."""
        return bool(self.search(f"tags.{self.key_tag} = '{key}'", "attributes.status = 'FINISHED'", max_results=1))

    def abandon_stale(self) -> int:
        """Child runs left RUNNING by a process that died or was stopped (their work resumes from its own last
        checkpoint when it runs again): marked KILLED, so that the store never shows them running."""
        stale = self.children("RUNNING")
        for r in stale:
            self.client.set_terminated(r.info.run_id, "KILLED")
        return len(stale)

    def find_parent(self) -> Any:
        found = self.search(f"tags.kind = '{self.kind}'", max_results=1)
        return found[0] if found else None

    def open_parent(self, name: str, config: str, tags: dict[str, Any]) -> TrackedRun:
        """The parent run (created as `name` the first time, reused by every re-run), RUNNING, with the composed
        configuration (`config.yaml`, and cut short as the `config` tag) and `tags` (settings a re-run may change);
        children an earlier process left RUNNING are KILLED first."""
        parent = self.find_parent()
        if parent is None:
            identity = {self.scope_tag: self.scope, "kind": self.kind, self.key_tag: ""}
            parent = self.client.create_run(self.experiment_id, run_name=name, tags=identity)
        self.abandon_stale()
        run = resumed_run(self.client, parent.info.run_id)
        for tag, value in {"config": config, **tags}.items():
            run.tag(tag, value)
        self.client.log_text(run.run_id, config, "config.yaml")
        return run

    def child(self, parent_id: str, key: str, name: str, tags: dict[str, str]) -> TrackedRun:
        """A new child run of `key`, RUNNING, as a TrackedRun context."""
        tags = {**tags, self.scope_tag: self.scope, self.key_tag: key}
        return tracked_run(self.client, self.experiment_id, name=name, tags=tags, parent_id=parent_id)


def study_ledger(client: Client, experiment_id: str, study: str) -> Keyed:
    return Keyed(client, experiment_id, STUDY_KIND, "study", study, "cell_key")


def retrieval_ledger(client: Client, experiment_id: str, key: str) -> Keyed:
    return Keyed(client, experiment_id, RETRIEVE_KIND, "retrieve_key", key, "run_key")


def finished_keys(client: Client, experiment_id: str, study: str) -> set[str]:
    return study_ledger(client, experiment_id, study).finished_keys()


def finished_runs(client: Client, experiment_id: str, study: str) -> list:
    """One run per finished cell of the study (superseded ones left out): the latest, if a cell finished twice."""
    runs = study_ledger(client, experiment_id, study).children("FINISHED", order_by=["attributes.end_time ASC"])
    current = [r for r in runs if r.data.tags.get(SUPERSEDED) != "true"]
    return list({r.data.tags["cell_key"]: r for r in current}.values())


def supersede(client: Client, experiment_id: str, study: str, kinds: list[str], keep: set[str]) -> int:
    """Marks the finished runs of these cell stages that are not among `keep` as superseded (retrieval cells of an
    earlier ranking, after an extension changed it), and clears the mark of those that are again. The runs stay
    in the store: a ranking that comes back finds them finished."""
    changed = 0
    for r in study_ledger(client, experiment_id, study).children("FINISHED"):
        if r.data.tags["stage"] not in kinds:
            continue
        mark = "false" if r.data.tags["cell_key"] in keep else "true"
        if r.data.tags.get(SUPERSEDED, "false") != mark:
            client.set_tag(r.info.run_id, SUPERSEDED, mark)
            changed += 1
    return changed


def study_names(client: Client, experiment_id: str) -> list[str]:
    """The names of the studies in the experiment (their parent runs)."""
    parents = client.search_runs([experiment_id], f"tags.kind = '{STUDY_KIND}'", max_results=1000)
    return sorted({r.data.tags.get("study", "") for r in parents} - {""})


def study_parent(client: Client, experiment_id: str, study: str):
    """The study's parent run.

    Raises:
        TrackingError: no study of that name in the experiment.
    """
    parent = study_ledger(client, experiment_id, study).find_parent()
    if parent is None:
        names = study_names(client, experiment_id)
        there = f"it holds {', '.join(names)}" if names else "it holds no study yet"
        raise TrackingError(
            f"no study named {study!r} in experiment {experiment_id} of this tracking store ({there}): run it first "
            "(make study), or name one it holds (study.name=NAME), or pass the tracking.uri it logged to"
        )
    return parent


def parent_config(client: MlflowClient, parent: Any) -> str:
    """The composed configuration the study last ran with."""
    if "config.yaml" not in {a.path for a in client.list_artifacts(parent.info.run_id)}:
        return parent.data.tags.get("config", "")
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(parent.info.run_id, "config.yaml", tmp)).read_text()


def logged_run(client: Client, experiment_id: str, out_dir: Path) -> str | None:
    """The id of the finished run that logged the work in `out_dir` (its `out_dir` tag), if this store has one."""
    query = f"tags.out_dir = '{out_dir}' and attributes.status = 'FINISHED'"
    found = client.search_runs([experiment_id], query, max_results=1)
    return found[0].info.run_id if found else None


def run_of(client: Client, run_id: str) -> Any | None:
    """The run of that id, or None if the store has none."""
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def parent_id(run: Any) -> str:
    """The id of a run's parent run; "" for a run without one."""
    return run.data.tags.get(PARENT_TAG, "")


def study_of(client: Client, run: Any) -> Any | None:
    """The parent run of the study `run` is a cell of; None for a run outside a study (pipelines.train's)."""
    parent = client.get_run(parent_id(run)) if parent_id(run) else None
    return parent if parent is not None and parent.data.tags.get("kind") == STUDY_KIND else None


def neurons_file(client: Client, run: Any, tmp: str) -> Path | None:
    """The activation mask a finished neurons run recorded of the run's task-embedding prompt, fetched into `tmp`;
    None if the study recorded none."""
    key = run.data.tags.get("cell_key")
    found = neurons_run(client, run.info.experiment_id, key) if key else None
    return None if found is None else download(client, found, RunDir.NEURONS, tmp)


def best_metrics(client: Client, run: Any) -> dict[str, float]:
    """The run's validation metrics at its best step (val/accuracy, val/score, ...)."""
    step = int(run.data.metrics.get("best/step", -1))
    out = {}
    for key in sorted(k for k in run.data.metrics if k.startswith("val/")):
        at_best = [m.value for m in client.get_metric_history(run.info.run_id, key) if m.step == step]
        if at_best:
            out[key] = at_best[-1]
    return out


def read_tags(tags: dict[str, str]) -> dict[str, str]:
    """A run's tags as its stage reads them (`StageDef.read_tags`: tags that older versions did not log); as
    logged for a run of a stage this process has not registered."""
    try:
        stage = stage_of(tags.get("stage", ""))
    except KeyError:
        return tags
    return stage.read_tags(tags) if stage.read_tags else tags


def runs_table(runs: list, sources: list[str], targets: list[str]) -> pd.DataFrame:
    """The analysis' runs table (one row per run, columns from the cells' tags), in the planner's order."""
    rows = []
    for r in runs:
        tags = read_tags(r.data.tags)
        row = {column: tags.get(tag, "") for tag, column in TAGS.items()}
        row.update(seed=int(row["seed"]), k=int(row["k"] or 0), score=r.data.metrics.get("best/val_score", nan))
        rows.append(row)
    return order_runs(pd.DataFrame(rows, columns=list(RUN_COLUMNS)), sources, targets)


def score_histories(client: MlflowClient, runs: list) -> dict[str, list]:
    """Run key -> its `val/score` history (MLflow Metric objects: step, value, timestamp in ms), fetched once for
    the curves and the facts."""
    return {r.data.tags["cell_key"]: client.get_metric_history(r.info.run_id, "val/score") for r in runs}


def curves_table(histories: dict[str, list]) -> pd.DataFrame:
    """Every evaluation's validation score of every run (a step logged twice, by a resumed run: the last)."""
    rows = [(key, m.step, m.value) for key, history in histories.items() for m in history]
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS)).drop_duplicates(["key", "step"], keep="last")


def seconds_to_best(history: list, best_step: int | None) -> float:
    """Seconds from the first logged validation score to the one at `best_step` (the last logged at that step,
    as the curves keep it); NaN without a best step or an evaluation logged at it. A resumed run's time counts
    the pause in between."""
    at_best = [m.timestamp for m in history if m.step == best_step]
    if best_step is None or not at_best:
        return float("nan")
    return (at_best[-1] - min(m.timestamp for m in history)) / 1000.0


def facts_table(runs: list, histories: dict[str, list]) -> pd.DataFrame:
    """What each run's training cost (spot_core.analysis.frames.FACT_COLUMNS): its `trainable_params` param (NaN
    for runs logged before it existed), the step of its best validation score (`best/step`) and the seconds to it."""
    rows = []
    for r in runs:
        key = r.data.tags["cell_key"]
        step = r.data.metrics.get("best/step")
        best = int(step) if step is not None else None
        params = r.data.params.get("trainable_params")
        trainable = float(params) if params not in (None, "") else float("nan")
        rows.append((key, trainable, best, seconds_to_best(histories.get(key, []), best)))
    table = pd.DataFrame(rows, columns=list(FACT_COLUMNS))
    return table.astype({"trainable_params": float, "best_step": "Int64", "seconds_to_best": float})


def download(client: MlflowClient, run: Any, name: str, tmp: str) -> Path | None:
    """A run's artifact `name` in a folder of its own under `tmp` (None if the run did not log it)."""
    if name not in {a.path for a in client.list_artifacts(run.info.run_id)}:
        return None
    folder = Path(tmp) / run.info.run_id
    folder.mkdir(exist_ok=True)
    return Path(client.download_artifacts(run.info.run_id, name, str(folder)))


def task_embeddings(client: MlflowClient, runs: list, kind: str) -> dict[str, np.ndarray]:
    """Run key -> task embedding [L, H] as a numpy array in the prompt file's dtype, from the artifacts of the runs
    of the stages whose embeddings retrieval compares (`StageDef.embedded`; `kind`: see TaskEmbedding)."""
    embedded = {kind for stage in CATALOGUE if stage.embedded for kind in stage.kinds}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in (r for r in runs if r.data.tags["stage"] in embedded):
            checkpoint = download(client, r, RunDir.TASK_EMBEDDING, tmp)
            if checkpoint is not None:
                download(client, r, RunDir.INITIAL_PROMPT, tmp)  # beside it: a displacement needs it
                out[r.data.tags["cell_key"]] = RunDir(checkpoint.parent).embedding(kind)
    return out


def stage_artifacts(client: MlflowClient, runs: list) -> dict[str, Any]:
    """What each stage's finished runs left for the report (`StageDef.artifacts`), by name; a name no run left
    is absent."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stage in CATALOGUE:
            mine = [r for r in runs if r.data.tags["stage"] in stage.kinds]
            for artifact in stage.artifacts:
                pairs = [(r.data.tags, artifact.file and download(client, r, artifact.file, tmp)) for r in mine]
                found = [(tags, path) for tags, path in pairs if artifact.file is None or path is not None]
                if found:
                    out[artifact.name] = artifact.read(found)
    return out


def neurons_run(client: MlflowClient, experiment_id: str, cell_key: str):
    """The latest FINISHED run that recorded the activated neurons of the cell `cell_key`'s prompt (a run of the
    stage whose artifact is `RunDir.NEURONS`, tagged with the probed run's key), or None."""
    kinds = [k for s in CATALOGUE if any(a.file == RunDir.NEURONS for a in s.artifacts) for k in s.kinds]
    for kind in kinds:
        query = f"tags.stage = '{kind}' and tags.source_key = '{cell_key}' and attributes.status = 'FINISHED'"
        found = client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.end_time DESC"])
        if found:
            return found[0]
    return None


def load_results(uri: str, experiment: str, study: str) -> StudyResults:
    """Everything the report of a study needs, from its runs in the tracking store.

    Raises:
        TrackingError: the store cannot be reached, or it holds no study of that name (nothing is written then).
    """
    client, experiment_id = open_store(uri, experiment, create=False)
    parent = study_parent(client, experiment_id, study)
    tags = parent.data.tags
    sources, targets = tags.get("sources", "").split(","), tags.get("targets", "").split(",")
    runs = finished_runs(client, experiment_id, study)
    histories = score_histories(client, runs)
    return StudyResults(
        name=study,
        runs=runs_table(runs, sources, targets),
        curves=curves_table(histories),
        facts=facts_table(runs, histories),
        embeddings=task_embeddings(client, runs, tags.get("task_embedding", "prompt")),
        sources=[s for s in sources if s],
        targets=[t for t in targets if t],
        planned=int(tags["cells"]) if tags.get("cells") else None,
        retrieval_similarity=tags.get("retrieval_similarity", "avg_tokens"),
        task_embedding=tags.get("task_embedding", "prompt"),
        config=parent_config(client, parent),
        artifacts=stage_artifacts(client, runs),
        sections=[stage.report for stage in CATALOGUE if stage.report],
    )
