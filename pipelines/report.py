"""The report of a study, from what it logged to MLflow: matrices, retrieval tables, figures, one document.

python -m pipelines.report                               # the demo study in outputs/mlflow.db
python -m pipelines.report study=smoke tracking.uri=sqlite:///abs/mlflow.db out_dir=/tmp/report
python -m pipelines.report expect=docs/demo-report/expected.json   # also check the findings a re-run should keep
python -m pipelines.report study=smoke "sizes=[tiny-llama,tiny-t5]"   # after a sweep over model=: Figure 1

Works on a partial study (missing cells are shown as missing); re-running on the same runs writes identical
files. The study pipeline runs it as its last stage (`stages=[..., report]`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from pipelines.deprecated import upgrade
from pipelines.errors import MissingFileError, entry_point
from pipelines.ledger import load_results
from pipelines.paths import check_writable
from pipelines.tracking import TrackingError, normalise_uri
from pipelines.user_tasks import use_stages
from spot_core.analysis.findings import check_claims, check_expectations, describe
from spot_core.analysis.frames import StudyResults
from spot_core.analysis.generic import benchmark_scores, model_size, size_table
from spot_core.errors import ConfigError
from spot_core.report.generic import size_section
from spot_core.report.study import write_report

EXPECTED = "docs/demo-report/expected.json"  # the demo's expected findings


def read_expectations(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise MissingFileError(f"expect={path}: no such file (a JSON file of expected findings, see {EXPECTED})")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"expect={path}: not valid JSON ({e})") from None


def read_notes(path: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise MissingFileError(f"notes={path}: no such file (a Markdown file of notes for the summary)")
    return file.read_text().strip()


def size_studies(uri: str, experiment: str, base: str, entries: list[str]) -> list[StudyResults]:
    """The studies `sizes` names, each given as the model of a sweep over model= of study `base` (the study
    `<base>-model=<entry>`, as `make study ARGS="-m ... model=a,b"` names its jobs) or as a study's own name.

    Raises:
        TrackingError: neither study is in the store (nothing is written then).
    """
    found = []
    for entry in entries:
        try:
            found.append(load_results(uri, experiment, f"{base}-model={entry}"))
        except TrackingError:
            found.append(load_results(uri, experiment, entry))
    return found


def size_points(studies: list[StudyResults]) -> pd.DataFrame:
    """Figure 1's points: each study's Table 1 rows at its model's parameter count (what its model-tuning runs
    train).

    Raises:
        ConfigError: a study without model-tuning runs.
    """
    points = []
    for results in studies:
        params = model_size(results.runs, results.facts)
        if params != params:  # NaN
            raise ConfigError(
                f"sizes: study {results.name!r} has no model-tuning run, whose parameter count places it on Figure "
                "1's x axis: run it with stage model_tuning"
            )
        points.append((results.name, params, benchmark_scores(results.runs, results.targets)))
    return size_table(points)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Checks the files it reads and the folder it writes, then the study in the store (nothing is written
    before: a wrong name leaves no trace), then writes the report."""
    upgrade(cfg)
    uri = normalise_uri(cfg.tracking.uri)
    expected = read_expectations(cfg.expect) if cfg.get("expect") else None
    notes = read_notes(cfg.notes) if cfg.get("notes") else None  # a reader's notes on what the results show
    out_dir = check_writable(cfg.out_dir, "out_dir")
    use_stages(cfg)  # stages added from outside: their runs' artifacts and report sections
    studies = size_studies(uri, cfg.tracking.experiment, cfg.study.name, list(cfg.get("sizes") or []))
    results = studies[0] if studies else load_results(uri, cfg.tracking.experiment, cfg.study.name)
    points = size_points(studies) if len(studies) > 1 else None
    if expected is not None:
        try:
            check_claims(expected, cfg.expect, [s.name for s in studies])
        except ValueError as e:  # a malformed claim: the user's file
            raise ConfigError(str(e)) from None
    if notes is not None:
        results.notes = notes
    if points is not None:
        results.extra_sections.append(size_section(points, out_dir))
    paths = write_report(results, out_dir)
    summary = {
        "study": results.name,
        "runs": len(results.runs),
        "out_dir": str(out_dir),
        "document": [str(p) for p in paths],
    }
    if expected is not None:
        others = {s.name: (s.runs, s.curves) for s in studies}
        summary["expectations"] = check_expectations(expected, results.runs, results.curves, cfg.expect, others)
    return summary


@entry_point("report")
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
