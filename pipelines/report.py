"""The report of a study, from what it logged to MLflow: matrices, retrieval tables, figures, one document.

python -m pipelines.report                               # the demo study in outputs/mlflow.db
python -m pipelines.report study=smoke tracking.uri=sqlite:///abs/mlflow.db out_dir=/tmp/report
python -m pipelines.report expect=docs/demo-report/expected.json   # also check the findings a re-run should keep

Works on a partial study (missing cells are shown as missing); re-running on the same runs writes identical
files. The study pipeline runs it as its last stage (`stages=[..., report]`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from pipelines.deprecated import upgrade
from pipelines.ledger import load_results
from pipelines.tracking import normalise_uri
from spot_core.analysis.findings import check_expectations, describe
from spot_core.report.study import write_report

EXPECTED = "docs/demo-report/expected.json"  # the demo's expected findings


def read_expectations(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"expect={path}: no such file (a JSON file of expected findings, see {EXPECTED})")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"expect={path}: not valid JSON ({e})") from None


def run(cfg: DictConfig) -> dict[str, Any]:
    upgrade(cfg)
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
