"""The study's ledger in MLflow: one parent run per study, one child run per cell tagged with its key and
coordinates (spot_core.tags.TAGS); what has finished, what a crashed driver left running, and the runs
table the analysis reads. The study driver writes it, the report reads it; the queries live only here.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from pipelines.tracking import TrackingError, open_store
from spot_core.analysis.frames import ATTENTION_COLUMNS, CURVE_COLUMNS, FACT_COLUMNS, RUN_COLUMNS, STAGES
from spot_core.analysis.similarity import task_embedding
from spot_core.neurons import load_neurons
from spot_core.prompt_files import load_prompt
from spot_core.report.study import StudyResults
from spot_core.run_dir import RunDir
from spot_core.tags import TAGS, Retrieval, Stage

STUDY_KIND = "study"  # the parent run's `kind` tag
SUPERSEDED = "superseded"  # a tag: "true" on a finished run the study no longer plans (kept, not reported)
LEGACY_RETRIEVAL = {"wavg": Retrieval.WEIGHTED_AVERAGE, "mix": Retrieval.MIXTURE}  # source "wavg-top{k}" / "mix-top{k}"
EMBEDDED = (Stage.SOURCE, Stage.TARGET)  # the runs whose task embeddings retrieval and the report compare


def study_query(study: str, status: str | None = None) -> str:
    """The filter of a study's cell runs (optionally of one status)."""
    query = f"tags.study = '{study}' and tags.cell_key != ''"
    return query + (f" and attributes.status = '{status}'" if status else "")


def cell_runs(client: MlflowClient, experiment_id: str, study: str, status: str | None = None) -> list:
    return client.search_runs([experiment_id], study_query(study, status), max_results=50000)


def finished_keys(client: MlflowClient, experiment_id: str, study: str) -> set[str]:
    return {r.data.tags["cell_key"] for r in cell_runs(client, experiment_id, study, "FINISHED")}


def finished_runs(client: MlflowClient, experiment_id: str, study: str) -> list:
    """One run per finished cell of the study (superseded ones left out): the latest, if a cell finished twice."""
    query = study_query(study, "FINISHED")
    runs = client.search_runs([experiment_id], query, max_results=50000, order_by=["attributes.end_time ASC"])
    current = [r for r in runs if r.data.tags.get(SUPERSEDED) != "true"]
    return list({r.data.tags["cell_key"]: r for r in current}.values())


def supersede(client: MlflowClient, experiment_id: str, study: str, kinds: list[Stage], keep: set[str]) -> int:
    """Marks the finished runs of these cell stages that are not among `keep` as superseded (retrieval cells of an
    earlier ranking, after an extension changed it), and clears the mark of those that are again. The runs stay
    in the store: a ranking that comes back finds them finished."""
    changed = 0
    for r in cell_runs(client, experiment_id, study, "FINISHED"):
        if r.data.tags["stage"] not in kinds:
            continue
        mark = "false" if r.data.tags["cell_key"] in keep else "true"
        if r.data.tags.get(SUPERSEDED, "false") != mark:
            client.set_tag(r.info.run_id, SUPERSEDED, mark)
            changed += 1
    return changed


def abandon_stale(client: MlflowClient, experiment_id: str, study: str) -> int:
    """Child runs left RUNNING by a driver that died: marked KILLED (their cells run again, resuming from
    their own last checkpoint)."""
    stale = cell_runs(client, experiment_id, study, "RUNNING")
    for r in stale:
        client.set_terminated(r.info.run_id, "KILLED")
    return len(stale)


def find_parent(client: MlflowClient, experiment_id: str, study: str):
    """The study's parent run, or None."""
    query = f"tags.study = '{study}' and tags.kind = '{STUDY_KIND}'"
    found = client.search_runs([experiment_id], query, max_results=1)
    return found[0] if found else None


def study_names(client: MlflowClient, experiment_id: str) -> list[str]:
    """The names of the studies in the experiment (their parent runs)."""
    parents = client.search_runs([experiment_id], f"tags.kind = '{STUDY_KIND}'", max_results=1000)
    return sorted({r.data.tags.get("study", "") for r in parents} - {""})


def study_parent(client: MlflowClient, experiment_id: str, study: str):
    """The study's parent run.

    Raises:
        TrackingError: no study of that name in the experiment.
    """
    parent = find_parent(client, experiment_id, study)
    if parent is None:
        names = study_names(client, experiment_id)
        there = f"it holds {', '.join(names)}" if names else "it holds no study yet"
        raise TrackingError(
            f"no study named {study!r} in experiment {experiment_id} of this tracking store ({there}): run it first "
            "(make study), or name one it holds (study.name=NAME), or pass the tracking.uri it logged to"
        )
    return parent


def open_parent(client: MlflowClient, experiment_id: str, study: str, config: str, design: dict[str, str]) -> str:
    """The study's parent run (one per study name, reused and set RUNNING again on restarts), with the composed
    configuration (`config.yaml`) and the design's facts the report needs (tags: the order of sources and
    targets, the similarity and task embedding retrieval used)."""
    parent = find_parent(client, experiment_id, study)
    if parent is None:
        tags = {"study": study, "kind": STUDY_KIND, "cell_key": ""}
        run_id = client.create_run(experiment_id, run_name=f"study-{study}", tags=tags).info.run_id
    else:
        run_id = parent.info.run_id
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "config", config[:5000])
    client.log_text(run_id, config, "config.yaml")
    for name, value in design.items():
        client.set_tag(run_id, name, value)
    return run_id


def parent_config(client: MlflowClient, parent: Any) -> str:
    """The composed configuration the study last ran with."""
    if "config.yaml" not in {a.path for a in client.list_artifacts(parent.info.run_id)}:
        return parent.data.tags.get("config", "")
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(parent.info.run_id, "config.yaml", tmp)).read_text()


def retrieval_strategy(tags: dict[str, str]) -> str:
    """How a retrieval run built its init: its `retrieval` tag; runs logged before the study wrote that tag
    carry it only in their display name (source "wavg-top{k}" or "mix-top{k}"; retrieval_mixture runs: none)."""
    if "retrieval" in tags:
        return tags["retrieval"]
    if tags["stage"] == Stage.RETRIEVAL_MIXTURE:
        return Retrieval.MIXTURE.value
    prefix, _, k = tags.get("source", "").partition("-top")
    legacy = LEGACY_RETRIEVAL.get(prefix) if tags["stage"] == Stage.RETRIEVAL and k.isdigit() else None
    return legacy.value if legacy else ""


def runs_table(runs: list, sources: list[str], targets: list[str]) -> pd.DataFrame:
    """The analysis' runs table (one row per run, columns from the cells' tags), in the planner's order (stage,
    source, target, seed): ties rank alike."""
    rows = []
    for r in runs:
        row = {column: r.data.tags.get(tag, "") for tag, column in TAGS.items()}
        row.update(
            seed=int(row["seed"]),
            k=int(row["k"] or 0),
            score=r.data.metrics.get("best/val_score", float("nan")),
            retrieval=retrieval_strategy(r.data.tags),
        )
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    rank = lambda column, names: column.map({n: i for i, n in enumerate(names)}).fillna(len(names))  # noqa: E731
    source = table["source"].where(table["stage"] != Stage.SOURCE, table["task"])
    table = table.assign(_s=rank(table["stage"], STAGES), _a=rank(source, sources), _b=rank(table["target"], targets))
    table = table.sort_values(["_s", "_a", "source", "_b", "target", "k", "seed", "key"], kind="stable")
    return table.drop(columns=["_s", "_a", "_b"]).reset_index(drop=True)


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


def attention_table(client: MlflowClient, runs: list) -> pd.DataFrame:
    """The mean attention over the prompts of every ATTEMPT run (its `RunDir.ATTENTION` artifact), long form
    (spot_core.analysis.frames.ATTENTION_COLUMNS); a run without the artifact has no rows."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in runs:
            if r.data.tags["stage"] != Stage.ATTEMPT:
                continue
            if RunDir.ATTENTION not in {a.path for a in client.list_artifacts(r.info.run_id)}:
                continue
            record = json.loads(Path(client.download_artifacts(r.info.run_id, RunDir.ATTENTION, tmp)).read_text())
            key = r.data.tags["cell_key"]
            # A run without validation examples logs an empty mean: no rows.
            rows += [(key, prompt, float(w)) for prompt, w in zip(record["prompts"], record["mean"], strict=False)]
    return pd.DataFrame(rows, columns=list(ATTENTION_COLUMNS))


def fetch_prompt(client: MlflowClient, run_id: str, name: str, tmp: str) -> np.ndarray:
    """A prompt file artifact of a run as a numpy array [L, H], in its dtype (the analysis takes no tensors)."""
    return load_prompt(client.download_artifacts(run_id, name, tmp))[0].numpy()


def task_embeddings(client: MlflowClient, runs: list, kind: str) -> dict[str, np.ndarray]:
    """Run key -> task embedding [L, H] as a numpy array in the prompt file's dtype, from the source and target
    runs' artifacts (`kind`: see TaskEmbedding; a displacement is taken in that dtype, as the study takes it)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in runs:
            if r.data.tags["stage"] not in EMBEDDED:
                continue
            names = {a.path for a in client.list_artifacts(r.info.run_id)}
            if RunDir.TASK_EMBEDDING not in names:
                continue
            checkpoint = fetch_prompt(client, r.info.run_id, RunDir.TASK_EMBEDDING, tmp)
            has_initial = RunDir.INITIAL_PROMPT in names
            initial = fetch_prompt(client, r.info.run_id, RunDir.INITIAL_PROMPT, tmp) if has_initial else None
            out[r.data.tags["cell_key"]] = task_embedding(checkpoint, initial, kind)
    return out


def neurons_run(client: MlflowClient, experiment_id: str, cell_key: str):
    """The latest FINISHED neurons run that probed the cell `cell_key`'s prompt, or None."""
    query = f"tags.stage = '{Stage.NEURONS.value}' and tags.source_key = '{cell_key}'"
    query += " and attributes.status = 'FINISHED'"
    found = client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.end_time DESC"])
    return found[0] if found else None


def neuron_masks(client: MlflowClient, runs: list) -> dict[str, np.ndarray]:
    """Run key -> its activated-neuron mask (numpy bool [layers, L, I]), from the neurons runs' artifacts (keyed
    by the run they probed)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in runs:
            if r.data.tags["stage"] == Stage.NEURONS:
                path = client.download_artifacts(r.info.run_id, RunDir.NEURONS, tmp)
                out[r.data.tags["source_key"]] = load_neurons(path).numpy()
    return out


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
    cross = (r.data.tags.get("model", "") for r in runs if r.data.tags["stage"] == Stage.CROSS_SOURCE)
    histories = score_histories(client, runs)
    return StudyResults(
        name=study,
        runs=runs_table(runs, sources, targets),
        curves=curves_table(histories),
        facts=facts_table(runs, histories),
        attention=attention_table(client, runs),
        embeddings=task_embeddings(client, runs, tags.get("task_embedding", "prompt")),
        sources=[s for s in sources if s],
        targets=[t for t in targets if t],
        planned=int(tags["cells"]) if tags.get("cells") else None,
        retrieval_similarity=tags.get("retrieval_similarity", "avg_tokens"),
        task_embedding=tags.get("task_embedding", "prompt"),
        config=parent_config(client, parent),
        neurons=neuron_masks(client, runs),
        cross_model=next(cross, ""),
    )
