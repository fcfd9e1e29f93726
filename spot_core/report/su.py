"""The report's sections for Su et al. 2022's questions: zero-shot transfer, which indicator predicts transfer
best, and prompts carried into another model through a projector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spot_core import analysis as A
from spot_core.analysis.frames import StudyResults
from spot_core.report.document import Section, figure
from spot_core.report.heatmap import heatmap
from spot_core.report.tables import write_table
from spot_core.tags import OTHER_MODEL, Stage

INDICATOR_NAMES = {
    "avg_tokens": "average-token cosine",
    "per_token": "per-token cosine",
    "euclidean": "negative Euclidean distance",
    "neuron_overlap": "activated-neuron overlap",
}


def indicator_name(method: str) -> str:
    """A readable name; windowed neuron overlaps are named `neuron_overlap[a-b]` (layers a..b, from 1)."""
    if method.startswith("neuron_overlap["):
        return f"activated-neuron overlap, layers {method[len('neuron_overlap['):-1]}"
    return INDICATOR_NAMES.get(method, method)


def zero_shot_sections(results: StudyResults, runs: pd.DataFrame, out: Path) -> list[Section]:
    """The zero-shot stage's section: relative performance of every source prompt used on every target as it is."""
    if not (runs["stage"] == Stage.ZERO_SHOT).any():
        return []
    z = A.zero_shot(runs, results.sources, results.targets)
    fig = figure(
        heatmap(
            z.relative,
            out / "figures/zero_shot_relative",
            title="Zero-shot transfer: relative performance (%)",
            value_label="zero-shot score / target's own prompt score (%)",
            center=100.0,
            fmt=".0f",
            counts=z.n,
        ),
        "A source prompt scored on the target with no training, over the score of the target's own trained prompt "
        "(Su et al. 2022); 100 = as good as training on the target.",
    )
    scores = pd.concat([z.score, z.own.to_frame().T.rename(index={"own": "target's own prompt"})])
    t_scores = write_table(scores, out / "tables/zero_shot_scores", caption="Zero-shot scores (0-100)")[1]
    write_table(z.relative, out / "tables/zero_shot_relative", caption="Zero-shot relative performance (%)")
    best = A.best_zero_shot_sources(z)
    t_best = write_table(best, out / "tables/zero_shot_best", caption="Best zero-shot source per target")[1]
    lines = [
        f"- {r.target}: {r.best_source} keeps {r.relative:.0f} % of the target's own prompt "
        f"({r.zero_shot:.1f} vs {r.own:.1f})"
        for r in best.itertuples()
    ]
    return [Section("Zero-shot transfer", "\n".join(lines), [fig], [t_scores, t_best])]


def convergence_sections(runs: pd.DataFrame, curves: pd.DataFrame, sources, targets, out: Path) -> list[Section]:
    """Steps a transferred prompt needs to reach the baseline's best score, against the baseline's own."""
    if curves.empty:
        return []
    c = A.convergence(runs, A.check_curves(curves), sources, targets)
    if c.per_run.empty:
        return []
    fig = figure(
        heatmap(
            c.speedup,
            out / "figures/convergence_speedup",
            title="Convergence speed-up (x)",
            value_label="baseline steps / transfer steps",
            center=1.0,
            fmt=".1f",
            counts=c.n_reached,
        ),
        "Steps the baseline needs to reach its best score over the steps a transferred prompt needs to reach it; "
        "n/a where no run of the pair reached it (never).",
    )
    table = c.per_run.assign(reached=c.per_run["reached"].map({True: "yes", False: "never"}))
    t = write_table(
        table.drop(columns=["key", "source_key"]),
        out / "tables/convergence",
        caption="Steps to reach the baseline's best score, per transfer run",
    )[1]
    return [Section("Convergence", "", [fig], [t])]


def indicator_section(stats: pd.DataFrame, quality: pd.DataFrame, out: Path) -> Section:
    """Which transferability indicator correlates best with the relative error reduction of the transfers
    (`stats`, `quality`: every indicator's correlations and ranking quality, windowed neuron overlaps included)."""
    summary = A.indicator_summary(stats, quality)
    named = summary.assign(method=summary["method"].map(indicator_name))
    t = write_table(
        named.set_index("method"),
        out / "tables/indicators",
        caption="Transferability indicators: mean over targets of the correlation with relative error reduction, "
        "and the quality of their top-1 pick",
        float_fmt="{:.3f}",
    )[1]
    ranked = summary.dropna(subset=["pearson_r"])
    if ranked.empty:
        text = "No target has enough source runs (3) for a correlation yet."
    else:
        top = ranked.iloc[0]
        text = (
            f"Best indicator by mean Pearson r over {int(top['targets'])} targets: "
            f"**{indicator_name(top['method'])}** (r = {top['pearson_r']:.2f}, "
            f"Spearman ρ = {top['spearman_rho']:.2f}). "
            + "; ".join(
                f"{indicator_name(r.method)} r = {r.pearson_r:.2f}" for r in ranked.iloc[1:].itertuples()
            )
            + ". Each rests on a handful of points per target: read the p-values in the correlation table."
        )
    return Section("Transferability indicators", text, [], [t])


def cross_model_sections(results: StudyResults, runs: pd.DataFrame, out: Path) -> list[Section]:
    """The cross-model stage's section: the study model's prompts projected into another model, zero-shot and as
    the initial prompt."""
    if not runs["stage"].isin([Stage.CROSS_SOURCE, Stage.CROSS_ZERO_SHOT, Stage.CROSS_TRANSFER]).any():
        return []
    model = results.artifact(OTHER_MODEL, "")
    table = A.cross_model_table(runs, A.check_curves(results.curves))
    shown = table.assign(
        trained_on=table["trained_on"].map({True: "yes", False: "no"}),
        reached=[f"{r}/{n}" for r, n in zip(table["reached"], table["n_init"], strict=True)],
    )
    t = write_table(
        shown.set_index("task"),
        out / "tables/cross_model",
        caption=f"Prompts projected into {model or 'the other model'}: own = its prompt trained from scratch",
    )[1]
    projector = runs[runs["stage"] == Stage.PROJECTOR]
    lines = []
    if len(projector):
        p = projector.iloc[0]
        lines.append(
            f"The projector was trained on {', '.join(p['task'].split('+'))}; its projection of those tasks' "
            f"prompts scores {p['score']:.1f} on {model or 'the other model'} (mean over its training tasks)."
        )
    for r in table[~table["trained_on"]].itertuples():
        speed = "never reaches the own prompt's best" if r.reached == 0 else f"speed-up {r.speedup:.1f}x"
        rel = "n/a" if np.isnan(r.relative) else f"{r.relative:.0f} %"
        lines.append(
            f"- {r.task}: zero-shot {r.zero_shot:.1f} ({rel} of own {r.own:.1f}); as the init {r.init:.1f} "
            f"({r.gain:+.1f}), {speed}"
        )
    return [Section("Cross-model transfer", "\n".join(lines), [], [t])]
