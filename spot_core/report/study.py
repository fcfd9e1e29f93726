"""A study's report from its runs: every matrix, table and figure of SPoT's analysis, and one document.

`write_report(StudyResults, out_dir)` is what `make report` (and the study's last stage) calls once the
pipeline has read the runs, curves and task embeddings out of MLflow. Layout of `out_dir`:

    report.md, report.html              the document: every figure and table, the study's configuration
    figures/<name>.png, .pdf            heatmaps, k-curve, correlation scatter plots
    tables/<name>.csv, .md, .tex        the numbers (CSV at full precision)

Missing cells stay missing (NaN, "n/a" in figures, "–" in tables) and every table carries its counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from spot_core import analysis as A
from spot_core.analysis.frames import StudyResults
from spot_core.report.curves import k_curve
from spot_core.report.document import Section, config_section, figure, write_document
from spot_core.report.heatmap import heatmap
from spot_core.report.scatter import correlation_scatter
from spot_core.report.su import INDICATOR_NAMES, convergence_sections, indicator_section
from spot_core.report.tables import write_table
from spot_core.similarity import Indicator
from spot_core.tags import NEURONS

METHOD_NAMES = INDICATOR_NAMES
VALUE_LABELS = {"euclidean": "-distance", "neuron_overlap": "cosine of neuron masks"}
EMBEDDING_NAMES = {
    "prompt": "the prompt checkpoints after the embedding step (SPoT)",
    "displacement": "the displacement of the prompt at the embedding step from its initial prompt",
}


def write_report(results: StudyResults, out_dir: str | Path) -> list[Path]:
    """Computes every analysis of the study and writes figures, tables and the document; returns the paths.

    SPoT's core (transfer, task similarity, retrieval, convergence) comes first, then each stage's own section
    (`results.sections`, the stage catalogue's, once each), then `results.extra_sections` and the configuration."""
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    runs = A.check_runs(results.runs)
    sections = [_summary(results, runs)]
    sections += _transfer_sections(results, runs, out)
    sections += _similarity_sections(results, runs, out)
    sections += convergence_sections(runs, results.curves, results.sources, results.targets, out)
    for stage_sections in dict.fromkeys(results.sections):  # a section two stages share is written once
        sections += stage_sections(results, runs, out)
    sections += results.extra_sections
    sections.append(config_section("Configuration", results.config or "(not recorded)"))
    return write_document(out, title=f"Transfer study `{results.name}`", sections=sections)


def _summary(results: StudyResults, runs: pd.DataFrame) -> Section:
    counts = runs["stage"].value_counts()
    kinds = [*(s for s in A.frames.STAGES if s in counts), *sorted(set(counts.index) - set(A.frames.STAGES))]
    stages = ", ".join(f"{counts[s]} {s}" for s in kinds)  # the built-in stages in their order, added ones after
    planned = f" of {results.planned} planned" if results.planned else ""
    text = (
        f"{len(runs)} finished runs{planned} ({stages}); {len(results.sources)} sources x "
        f"{len(results.targets)} targets, seeds {A.study_seeds(runs)}. Scores are each run's best validation score "
        "(0-100). Missing cells are shown as n/a (figures) or – (tables), never as zero; counts say how many runs "
        "each number rests on."
    )
    return Section("Summary", "\n\n".join(t for t in (text, results.notes) if t))


def _transfer_sections(results: StudyResults, runs: pd.DataFrame, out: Path) -> list[Section]:
    m = A.transfer_matrices(runs, results.sources, results.targets)
    seeds = max(len(A.study_seeds(runs)), 1)
    scores = pd.concat([m.baseline[["mean"]].T.rename(index={"mean": "baseline"}), m.mean])
    counts = pd.concat([m.baseline[["n"]].T.rename(index={"n": "baseline"}), m.n])
    figs = [
        figure(
            heatmap(
                m.rel,
                out / "figures/transfer_rel",
                title="Relative error reduction over the baseline (%)",
                value_label="(score - base) / (100 - base), %",
                counts=m.n,
                expected_n=seeds,
            ),
            "Relative error reduction of each source's prompt as the target's initialisation (SPoT Figure 3).",
        ),
        figure(
            heatmap(
                scores,
                out / "figures/transfer_scores",
                title="Target score (mean over seeds)",
                value_label="best validation score",
                center=None,
                counts=counts,
                expected_n=seeds,
            ),
            "Absolute target scores; the first row is prompt tuning from scratch (class-label init).",
        ),
        figure(
            heatmap(
                m.relative_performance,
                out / "figures/relative_performance",
                title="Relative performance (transferred / baseline, %)",
                value_label="%",
                center=100.0,
                counts=m.n,
                expected_n=seeds,
            ),
            "Su et al.'s relative performance: the transferred prompt's score over the target's own prompt's.",
        ),
    ]
    table = _mean_std(m.mean, m.std, m.n)
    tables = [
        write_table(table, out / "tables/transfer_scores", caption="Target score, mean ± std over seeds (n)")[1],
        write_table(m.rel, out / "tables/transfer_rel", caption="Relative error reduction (%)")[1],
        write_table(m.baseline, out / "tables/baseline", caption="Baseline: prompt tuning from scratch")[1],
    ]
    write_table(m.gain, out / "tables/transfer_gain", caption="Absolute gain over the baseline")
    write_table(m.relative_performance, out / "tables/relative_performance", caption="Relative performance (%)")
    return [Section("Transferability", _transfer_text(m), figs, tables)]


def _transfer_text(m: A.TransferMatrices) -> str:
    rel = m.rel.stack().dropna().sort_values(ascending=False, kind="stable")
    if rel.empty:
        return "No transfer cell has finished yet."
    text = f"{int((rel > 0).sum())} of {len(rel)} source → target pairs beat the baseline on average."
    best = ", ".join(f"{s} → {t} {v:+.1f} %" for (s, t), v in rel[rel > 0].head(4).items())
    return text + (f" Largest relative error reductions: {best}." if best else "")


def _mean_std(mean: pd.DataFrame, std: pd.DataFrame, n: pd.DataFrame) -> pd.DataFrame:
    def cell(mu: float, sd: float, k: int) -> str | None:
        if np.isnan(mu):
            return None
        spread = f" ± {sd:.1f}" if not np.isnan(sd) else ""
        return f"{mu:.1f}{spread} ({k})"

    values = [[cell(*x) for x in zip(*row, strict=True)] for row in zip(mean.values, std.values, n.values, strict=True)]
    return pd.DataFrame(values, index=mean.index, columns=mean.columns)


def _similarity_sections(results: StudyResults, runs: pd.DataFrame, out: Path) -> list[Section]:
    tasks = A.embedding_keys(runs, results.embeddings)
    if not tasks:
        return [Section("Task similarity and retrieval", "No task embeddings were logged yet.")]
    order = [t for t in [*results.sources, *results.targets] if t in tasks]
    tasks = {t: tasks[t] for t in dict.fromkeys(order + sorted(tasks))}
    figs = []
    for method in (i.value for i in Indicator):
        features = neurons(results) if method == Indicator.NEURON_OVERLAP else results.embeddings
        if not features:
            continue
        sim = A.task_similarity_matrix(tasks, features, method)
        figs.append(
            figure(
                heatmap(
                    sim,
                    out / f"figures/similarity_{method}",
                    title=f"Task similarity ({METHOD_NAMES[method]})",
                    value_label=VALUE_LABELS.get(method, "cosine"),
                    center=None,
                    fmt=".2f",
                    xlabel="task",
                    ylabel="task",
                ),
                _similarity_caption(method, results.task_embedding),
            )
        )
        write_table(sim, out / f"tables/similarity_{method}", caption=f"Task similarity ({method})", float_fmt="{:.3f}")
    ranking = A.rank_candidates(
        runs,
        results.embeddings,
        targets=[t for t in results.targets if t in set(runs["target"])],
        neurons=neurons(results),
    )
    if ranking.empty:
        return [Section("Task similarity", "", figs)]
    return [Section("Task similarity", "", figs), *_retrieval_sections(results, runs, ranking, out)]


def neurons(results: StudyResults) -> Mapping[str, np.ndarray]:
    """Run key -> the activated-neuron mask of its task-embedding prompt (the neurons stage's runs), if any."""
    return results.artifact(NEURONS, {})


def _similarity_caption(method: str, embedding: str) -> str:
    if method == Indicator.NEURON_OVERLAP:
        return (
            "Activated-neuron overlap (Su et al. 2022): cosine of the binary FFN activation masks that the runs' "
            "task-embedding prompts produce, mean over run pairs."
        )
    kind = EMBEDDING_NAMES.get(embedding, embedding)
    return f"Task-embedding similarity, {METHOD_NAMES[method]}, mean over run pairs; embeddings: {kind}."


def _retrieval_sections(results: StudyResults, runs: pd.DataFrame, ranking: pd.DataFrame, out: Path) -> list[Section]:
    summary = A.retrieval_summary(ranking, runs, None, results.retrieval_similarity, results.targets)
    picks = A.pick_best_of_top_k(ranking, runs)
    n = int(picks["n_candidates"].max()) if len(picks) else 0
    ks = [k for k in A.PAPER_KS if k < n] + [n] if n else []
    table3 = A.table3(summary, ks)
    t3 = write_table(
        _table3_display(table3),
        out / "tables/table3",
        caption="Retrieval against the oracle, average over targets (SPoT Table 3)",
    )[1]
    write_table(table3, out / "tables/table3_values", caption="Table 3 at full precision", float_fmt="{:.3f}")
    write_table(summary, out / "tables/retrieval_summary", caption="Every retrieval row (all k)")
    space = A.search_space(picks)
    t_space = write_table(space, out / "tables/search_space", caption="Search space removed and oracle gain kept")[1]
    figs = [figure(_k_curve(summary, out), "Best of top-k against k, with the oracle (k = N) and the baseline.")]
    scored = A.score_candidates(ranking, runs)
    points = A.correlation_points(scored)
    stats = A.correlations(points)
    t_corr = write_table(
        stats, out / "tables/correlation", caption="Similarity vs relative error reduction", float_fmt="{:.3f}"
    )[1]
    for method in points["method"].unique():
        p, s = points[points["method"] == method], stats[stats["method"] == method].set_index("target")
        figs.append(
            figure(
                correlation_scatter(
                    p,
                    s,
                    out / f"figures/correlation_{method}",
                    title=f"Similarity ({METHOD_NAMES[method]}) vs relative error reduction",
                ),
                f"One point per source run; Pearson r and p per target ({METHOD_NAMES[method]}).",
            )
        )
    quality = A.ranking_quality(scored)
    quality_mean = quality.groupby(["method", "k"], sort=False)[["ndcg", "regret"]].mean().reset_index()
    t_quality = write_table(
        quality_mean,
        out / "tables/ranking_quality",
        caption="NDCG@k and regret@k of the similarity rankings (mean over targets)",
        float_fmt="{:.3f}",
    )[1]
    write_table(
        quality, out / "tables/ranking_quality_per_target", caption="NDCG@k and regret@k per target", float_fmt="{:.3f}"
    )
    write_table(ranking, out / "tables/rankings", caption="Source runs ranked per target", float_fmt="{:.4f}")
    text = _retrieval_text(space, n)
    windows = A.neuron_window_scores(runs, neurons(results), list(dict.fromkeys(ranking["target"])))
    return [
        Section("Retrieval against the oracle", text, figs, [t3, t_space, t_corr, t_quality]),
        indicator_section(
            pd.concat([stats, windows[0]], ignore_index=True), pd.concat([quality, windows[1]], ignore_index=True), out
        ),
    ]


def _table3_display(table: pd.DataFrame) -> pd.DataFrame:
    def pm(mu: float, sd: float) -> str | None:
        return None if np.isnan(mu) else f"{mu:.1f}" + ("" if np.isnan(sd) else f" ± {sd:.1f}")

    return pd.DataFrame(
        {
            "method": [METHOD_NAMES.get(m, "") for m in table["method"]],
            "": table["row"].to_list(),
            "k": table["k"].to_list(),
            "score": [pm(a, b) for a, b in zip(table["score"], table["score_std"], strict=True)],
            "Abs.": [pm(a, b) for a, b in zip(table["abs"], table["abs_std"], strict=True)],
            "Rel. (%)": [pm(a, b) for a, b in zip(table["rel"], table["rel_std"], strict=True)],
            "targets": table["n_targets"].to_list(),
            "cells": table["n_cells"].to_list(),
            "left out": table["n_left_out"].to_list(),
        }
    )


def _k_curve(summary: pd.DataFrame, out: Path) -> list[Path]:
    rows = summary[summary["strategy"] == "best_of_top_k"]
    curves = rows.rename(columns={"score": "mean", "score_std": "std"})[["k", "method", "mean", "std"]]
    strategies = summary.set_index("strategy")["score"]
    value = {s: float(strategies.get(s, np.nan)) for s in ("oracle", "baseline")}
    return k_curve(
        curves,
        out / "figures/k_curve",
        oracle=value["oracle"],
        baseline=value["baseline"],
        title="Best of top-k retrieved source prompts",
    )


def _retrieval_text(space: pd.DataFrame, n: int) -> str:
    if space.empty:
        return f"{n} candidate source runs; no target has every candidate's transfer yet."
    lines = [f"{n} candidate source runs per target. Search space removed and oracle gain kept:"]
    for method, group in space.groupby("method", sort=False):
        parts = [
            f"k={k}: {r:.0f} % removed, {g:.0f} % kept"
            for k, r, g in zip(group["k"], group["reduction"], group["gain_kept"], strict=True)
            if k < n and not np.isnan(g)
        ]
        lines.append(f"- {METHOD_NAMES.get(method, method)}: " + ("; ".join(parts) or "the oracle gains nothing"))
    return "\n".join(lines)
