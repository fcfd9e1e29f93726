"""A study's report from its tables: every file, missing cells shown as missing, identical on a re-run."""

import numpy as np
import pandas as pd
import pytest
from conftest import runs_frame

from spot_core.analysis.frames import StudyResults
from spot_core.report.study import write_report

SOURCES, TARGETS, SEEDS = ["mnli_v1", "sst2_v1", "qqp_v1"], ["rte_v1", "cr_v1"], [0, 1]
FIGURES = [
    "transfer_rel",
    "transfer_scores",
    "relative_performance",
    "similarity_avg_tokens",
    "similarity_per_token",
    "k_curve",
    "correlation_avg_tokens",
    "correlation_per_token",
    "convergence_speedup",
]
TABLES = [
    "transfer_scores",
    "transfer_rel",
    "transfer_gain",
    "baseline",
    "relative_performance",
    "similarity_avg_tokens",
    "table3",
    "table3_values",
    "retrieval_summary",
    "search_space",
    "correlation",
    "ranking_quality",
    "rankings",
    "convergence",
]


def results(drop: tuple[tuple[str, str, int], ...] = ()) -> StudyResults:
    """3 sources x 2 targets x 2 seeds with made-up scores; `drop` removes transfer runs (source, target, seed)."""
    gen = np.random.default_rng(0)
    rows, curves, embeddings = [], [], {}
    for i, source in enumerate(SOURCES):
        rows.append(dict(key=f"s{i}", stage="source", task=source, source="", source_key="", target="", seed=0))
        embeddings[f"s{i}"] = gen.standard_normal((4, 8)).astype(np.float32)
    for j, target in enumerate(TARGETS):
        for seed in SEEDS:
            key = f"b{j}{seed}"
            rows.append(dict(key=key, stage="target", task=target, source="", source_key="", target=target, seed=seed))
            rows[-1]["score"] = 60.0 + 10 * j + seed
            embeddings[key] = gen.standard_normal((4, 8)).astype(np.float32)
            curves += [(key, 0, 50.0), (key, 10, rows[-1]["score"])]
            for i, source in enumerate(SOURCES):
                if (source, target, seed) in drop:
                    continue
                key = f"t{i}{j}{seed}"
                score = 58.0 + 10 * j + 4 * i + seed
                rows.append(
                    dict(key=key, stage="transfer", task=target, source=source, source_key=f"s{i}", target=target)
                )
                rows[-1].update(seed=seed, score=score)
                curves += [(key, 0, score - 1), (key, 10, score)]
            rows.append(dict(key=f"w{j}{seed}", stage="retrieval", task=target, source="wavg-top2", target=target))
            rows[-1].update(seed=seed, k=2, score=66.0 + 10 * j, retrieval="weighted_average")
    runs = runs_frame(*rows).fillna({"score": 70.0})
    return StudyResults(
        name="t",
        runs=runs,
        curves=pd.DataFrame(curves, columns=["key", "step", "score"]),
        embeddings=embeddings,
        sources=SOURCES,
        targets=TARGETS,
        planned=len(runs) + len(drop),
        config="study:\n  name: t\n",
    )


@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    write_report(results(), out)
    return out


def test_the_report_has_every_figure_table_and_the_document(complete):
    for name in FIGURES:
        assert (complete / "figures" / f"{name}.png").stat().st_size > 0, name
        assert (complete / "figures" / f"{name}.pdf").stat().st_size > 0, name
    for name in TABLES:
        for suffix in (".csv", ".md", ".tex"):
            assert (complete / "tables" / f"{name}{suffix}").exists(), name + suffix
    document = (complete / "report.md").read_text()
    html = (complete / "report.html").read_text()
    assert all(f"figures/{name}.png" in document and f'src="figures/{name}.png"' in html for name in FIGURES)
    assert "Oracle (Brute-force)" in document and "name: t" in document
    # mnli's transfers score below the baseline (58.5 vs 60.5, 68.5 vs 70.5): 4 of the 6 pairs help
    assert "23 finished runs of 23 planned (3 source, 4 target, 12 transfer, 4 retrieval); 3 sources x 2 targets" in (
        document
    )
    assert (
        "4 of 6 source → target pairs beat the baseline on average. Largest relative error reductions: "
        "qqp_v1 → cr_v1 +20.3 %, qqp_v1 → rte_v1 +15.2 %, sst2_v1 → cr_v1 +6.8 %, sst2_v1 → rte_v1 +5.1 %." in document
    )
    assert "| mnli_v1 | -5.1 | -6.8 |" in document and "| rte_v1 | 60.5 | 0.7 | 2 |" in document


def test_numbers_in_the_tables_match_the_runs(complete):
    mean = pd.read_csv(complete / "tables" / "transfer_rel.csv", index_col=0)
    # qqp -> cr, seeds 0 and 1: 58 + 10 + 8 + {0, 1} = 76.5 against a baseline of 70.5: (76.5 - 70.5) / 29.5
    assert mean.loc["qqp_v1", "cr_v1"] == pytest.approx(6.0 / 29.5 * 100)
    table3 = pd.read_csv(complete / "tables" / "table3_values.csv", index_col=0)
    oracle = table3[table3["row"] == "Oracle (Brute-force)"].iloc[0]
    assert oracle["score"] == pytest.approx((66.5 + 76.5) / 2) and oracle["n_targets"] == 2


def test_a_re_run_writes_identical_files(complete, tmp_path):
    write_report(results(), tmp_path)
    for path in complete.rglob("*"):
        if path.is_file():
            assert (tmp_path / path.relative_to(complete)).read_bytes() == path.read_bytes(), path.name


def test_a_partial_study_shows_missing_cells_as_missing_and_says_what_numbers_rest_on(tmp_path):
    drop = (("qqp_v1", "cr_v1", 0), ("qqp_v1", "cr_v1", 1), ("sst2_v1", "rte_v1", 1))
    write_report(results(drop), tmp_path)
    scores = (tmp_path / "tables" / "transfer_scores.md").read_text()
    row = next(line for line in scores.splitlines() if line.startswith("| qqp_v1"))
    assert row.rstrip().endswith("| – |")  # qqp -> cr has no run: missing, not 0
    assert "| 62.0 (1) |" in next(line for line in scores.splitlines() if line.startswith("| sst2_v1"))
    table3 = pd.read_csv(tmp_path / "tables" / "table3_values.csv", index_col=0)
    oracle = table3[table3["row"] == "Oracle (Brute-force)"].iloc[0]
    # Both targets lack a candidate's seeds: the oracle is undefined for them, and the table says so.
    assert oracle["n_targets"] == 0 and oracle["n_left_out"] == 2
    summary = (tmp_path / "report.md").read_text()
    assert "20 finished runs of 23 planned (3 source, 4 target, 9 transfer, 4 retrieval)" in summary
    assert "3 of 5 source → target pairs beat the baseline on average" in summary  # qqp -> cr: no pair, not a loss
    assert "| sst2_v1 | 3.8 | 6.8 |" in summary and "| qqp_v1 | 15.2 | – |" in summary
