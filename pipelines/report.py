"""The report of a study, from what it logged to MLflow: matrices, retrieval tables, figures, one document.

python -m pipelines.report                               # the demo study in outputs/mlflow.db
python -m pipelines.report study=smoke tracking.uri=sqlite:///abs/mlflow.db out_dir=/tmp/report
python -m pipelines.report expect=docs/demo-report/expected.json   # also check the findings a re-run should keep

Works on a partial study (missing cells are shown as missing); re-running on the same runs writes identical
files. The study pipeline runs it as its last stage (`stages=[..., report]`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
logging.getLogger("fontTools").setLevel(logging.WARNING)  # one INFO line per font table of every PDF

import hydra  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipelines.tracking import TrackingError, normalise_uri, open_store  # noqa: E402
from spot_core.analysis.findings import check_expectations, describe  # noqa: E402
from spot_core.analysis.frames import STAGES  # noqa: E402
from spot_core.neurons import NEURONS_FILE, load_neurons  # noqa: E402
from spot_core.prompt_files import load_prompt  # noqa: E402
from spot_core.report.study import StudyResults, write_report  # noqa: E402
from spot_core.similarity import task_embedding  # noqa: E402

EMBEDDING, INITIAL = "task_embedding.safetensors", "initial_prompt.safetensors"
EXPECTED = "docs/demo-report/expected.json"  # the demo's expected findings


def study_parent(client: MlflowClient, experiment_id: str, study: str):
    found = client.search_runs([experiment_id], f"tags.study = '{study}' and tags.kind = 'study'", max_results=1)
    if not found:
        raise TrackingError(
            f"no study named {study!r} in experiment {experiment_id} of this tracking store: run it first "
            f'(`make study ARGS="study={study}"`), or pass the study\'s name and its tracking.uri'
        )
    return found[0]


def finished_runs(client: MlflowClient, experiment_id: str, study: str) -> list:
    query = f"tags.study = '{study}' and tags.cell_key != '' and attributes.status = 'FINISHED'"
    runs = client.search_runs([experiment_id], query, max_results=50000, order_by=["attributes.end_time ASC"])
    return list({r.data.tags["cell_key"]: r for r in runs}.values())  # one per cell: the latest finished


def runs_table(runs: list, sources: list[str], targets: list[str]) -> pd.DataFrame:
    """The analysis' runs table, in the planner's order (stage, source, target, seed): ties rank alike."""
    rows = [
        {
            "key": r.data.tags["cell_key"],
            "stage": r.data.tags["stage"],
            "task": r.data.tags["task"],
            "source": r.data.tags.get("source", ""),
            "source_key": r.data.tags.get("source_key", ""),
            "target": r.data.tags.get("target", ""),
            "seed": int(r.data.tags["seed"]),
            "k": int(r.data.tags.get("k", 0)),
            "score": r.data.metrics.get("best/val_score", float("nan")),
        }
        for r in runs
    ]
    table = pd.DataFrame(rows, columns=["key", "stage", "task", "source", "source_key", "target", "seed", "k", "score"])
    rank = lambda column, names: column.map({n: i for i, n in enumerate(names)}).fillna(len(names))  # noqa: E731
    source = table["source"].where(table["stage"] != "source", table["task"])
    table = table.assign(_s=rank(table["stage"], STAGES), _a=rank(source, sources), _b=rank(table["target"], targets))
    table = table.sort_values(["_s", "_a", "source", "_b", "target", "k", "seed", "key"], kind="stable")
    return table.drop(columns=["_s", "_a", "_b"]).reset_index(drop=True)


def curves_table(client: MlflowClient, runs: list) -> pd.DataFrame:
    rows = [
        (r.data.tags["cell_key"], m.step, m.value)
        for r in runs
        for m in client.get_metric_history(r.info.run_id, "val/score")
    ]
    return pd.DataFrame(rows, columns=["key", "step", "score"]).drop_duplicates(["key", "step"], keep="last")


def task_embeddings(client: MlflowClient, runs: list, kind: str) -> dict:
    """Run key -> task embedding, from the source and target runs' artifacts (`kind`: see TaskEmbedding)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in runs:
            if r.data.tags["stage"] not in ("source", "target"):
                continue
            names = {a.path for a in client.list_artifacts(r.info.run_id)}
            if EMBEDDING not in names:
                continue
            fetch = lambda name: load_prompt(client.download_artifacts(r.info.run_id, name, tmp))[0]  # noqa: E731,B023
            initial = fetch(INITIAL) if INITIAL in names else None
            out[r.data.tags["cell_key"]] = task_embedding(fetch(EMBEDDING), initial, kind)
    return out


def neuron_masks(client: MlflowClient, runs: list) -> dict:
    """Run key -> its activated-neuron mask, from the neurons runs' artifacts (keyed by the run they probed)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in runs:
            if r.data.tags["stage"] == "neurons":
                path = client.download_artifacts(r.info.run_id, NEURONS_FILE, tmp)
                out[r.data.tags["source_key"]] = load_neurons(path)
    return out


def load_results(uri: str, experiment: str, study: str) -> StudyResults:
    client, experiment_id = open_store(uri, experiment)
    parent = study_parent(client, experiment_id, study)
    tags = parent.data.tags
    sources, targets = tags.get("sources", "").split(","), tags.get("targets", "").split(",")
    runs = finished_runs(client, experiment_id, study)
    config = tags.get("config", "")
    if "config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(client.download_artifacts(parent.info.run_id, "config.yaml", tmp)).read_text()
    return StudyResults(
        name=study,
        runs=runs_table(runs, sources, targets),
        curves=curves_table(client, runs),
        embeddings=task_embeddings(client, runs, tags.get("task_embedding", "prompt")),
        sources=[s for s in sources if s],
        targets=[t for t in targets if t],
        planned=int(tags["cells"]) if tags.get("cells") else None,
        retrieval_similarity=tags.get("retrieval_similarity", "avg_tokens"),
        task_embedding=tags.get("task_embedding", "prompt"),
        config=config,
        neurons=neuron_masks(client, runs),
        cross_model=next((r.data.tags.get("model", "") for r in runs if r.data.tags["stage"] == "cross_source"), ""),
    )


def read_expectations(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"expect={path}: no such file (a JSON file of expected findings, see {EXPECTED})")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"expect={path}: not valid JSON ({e})") from None


def run(cfg: DictConfig) -> dict[str, Any]:
    uri = normalise_uri(cfg.tracking.uri)
    expected = read_expectations(cfg.expect) if cfg.get("expect") else None  # a bad file fails before any work
    results = load_results(uri, cfg.tracking.experiment, cfg.study.name)
    if cfg.get("notes"):  # a reader's notes on what the results show, written into the summary
        notes = Path(cfg.notes)
        if not notes.is_file():
            raise FileNotFoundError(f"notes={cfg.notes}: no such file (a Markdown file of notes for the summary)")
        results.notes = notes.read_text().strip()
    out_dir = Path(cfg.out_dir).resolve()
    paths = write_report(results, out_dir)
    summary = {
        "study": cfg.study.name,
        "runs": len(results.runs),
        "out_dir": str(out_dir),
        "document": [str(p) for p in paths],
    }
    if expected is not None:
        summary["expectations"] = check_expectations(expected, results.runs, results.curves, cfg.expect)
    return summary


@hydra.main(config_path="../conf", config_name="report", version_base="1.3")
def main(cfg: DictConfig) -> None:
    summary = run(cfg)
    print(f"report of study {summary['study']} ({summary['runs']} finished runs): {summary['document'][0]}")
    if "expectations" in summary:
        checked = summary["expectations"]
        print(f"expected findings ({cfg.expect}): {int(checked['holds'].sum())} of {len(checked)} hold")
        print(describe(checked))
        if not checked["holds"].all():
            sys.exit(1)


if __name__ == "__main__":
    main()
