"""The report's sections on transfer methods: SPoT, ATTEMPT and MPT against the baseline (score, gain, costs), and
ATTEMPT's attention over the source prompts as a transferability indicator.

Writes tables/methods, methods_values, methods_average, methods_average_values (.csv, .md, .tex); per ATTEMPT
variant (its runs' source without "attempt-": all, top3) figures/attention_<variant> and tables/attention_<variant>;
where the attention ranks source runs with transfers, figures/attention_correlation_<variant>,
tables/attention_correlation and tables/attention_indicator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spot_core import analysis as A
from spot_core.analysis.frames import StudyResults
from spot_core.report.document import Section, figure
from spot_core.report.heatmap import heatmap
from spot_core.report.scatter import correlation_scatter
from spot_core.report.tables import mean_std, write_table
from spot_core.tags import ATTENTION, OWN_PROMPT, Stage

OWN_LABEL = "target's own prompt"
COST_HEADERS = {
    "trainable_params": "trainable params",
    "best_step": "steps to best",
    "seconds_to_best": "seconds to best",
    "source_runs": "source runs",
    "target_runs": "target runs / seed",
}


def method_sections(results: StudyResults, runs: pd.DataFrame, out: Path) -> list[Section]:
    """The transfer methods' section (ATTEMPT's and MPT's stages): "Transfer methods compared" when the study has
    baseline runs and another method's; "ATTEMPT's attention" when it has ATTEMPT runs with their attention."""
    facts, sources, targets = results.facts, results.sources, results.targets
    attention = results.artifact(ATTENTION, pd.DataFrame(columns=list(A.frames.ATTENTION_COLUMNS)))
    comparison = A.method_comparison(runs, facts, attention, [t for t in targets if t in set(runs["target"])])
    methods = set(comparison["method"])
    sections = [_comparison_section(comparison, out)] if "baseline" in methods and len(methods) > 1 else []
    variants = sorted(set(runs.loc[runs["stage"] == Stage.ATTEMPT, "source"]))
    if variants and not attention.empty:
        sections.append(_attention_section(runs, attention, sources, targets, variants, out))
    return sections


def _comparison_section(comparison: pd.DataFrame, out: Path) -> Section:
    average = A.method_average(comparison)
    labels = [A.method_label(m, v) for m, v in zip(comparison["method"], comparison["variant"], strict=True)]
    per_target = pd.DataFrame(
        {
            "method": labels,
            "target": comparison["target"].to_list(),
            "score": [mean_std(*x) for x in zip(comparison["mean"], comparison["std"], comparison["n"], strict=True)],
            "gain": comparison["gain"].to_list(),
            **_costs(comparison),
        }
    )
    t_target = write_table(
        per_target.set_index(["method", "target"]),
        out / "tables/methods",
        caption="Transfer methods per target: score mean ± std over seeds (n), gain over the baseline, and costs",
    )[1]
    values = comparison.drop(columns=["seed_scores"]).assign(
        complete=comparison["complete"].map({True: "yes", False: "no"})
    )
    write_table(values, out / "tables/methods_values", caption="Transfer methods per target", float_fmt="{:.3f}")
    names = [A.method_label(m, v) for m, v in zip(average["method"], average["variant"], strict=True)]
    shown = pd.DataFrame(
        {
            "method": names,
            "score": [mean_std(a, b) for a, b in zip(average["mean"], average["std"], strict=True)],
            "gain": [mean_std(a, b) for a, b in zip(average["gain"], average["gain_std"], strict=True)],
            "Rel. (%)": [mean_std(a, b) for a, b in zip(average["rel"], average["rel_std"], strict=True)],
            **_costs(average),
            "targets": average["n_targets"].to_list(),
            "left out": average["n_left_out"].to_list(),
        }
    )
    t_average = write_table(
        shown.set_index("method"),
        out / "tables/methods_average",
        caption="Transfer methods, average over the targets where the method and the baseline "
        "have every seed (± std over seeds)",
    )[1]
    write_table(
        average,
        out / "tables/methods_average_values",
        caption="Transfer methods, average over targets",
        float_fmt="{:.3f}",
    )
    return Section("Transfer methods compared", _comparison_text(average), [], [t_average, t_target])


def _costs(table: pd.DataFrame) -> dict[str, list]:
    """The cost columns under readable headers; parameters and run counts as whole numbers when they are."""
    out = {}
    for column, header in COST_HEADERS.items():
        values = table[column].to_list()
        whole = column in ("trainable_params", "source_runs", "target_runs")
        out[header] = [v if np.isnan(v) or not whole or v != int(v) else int(v) for v in values]
    return out


def _comparison_text(average: pd.DataFrame) -> str:
    lines = [
        "Each method on the same targets and seeds. Costs: trainable parameters (median over runs), steps and "
        "seconds from the first evaluation to the best validation score (mean), source runs trained before the "
        "target's (the oracle and retrieval rank every source run; top-k ATTEMPT mixes k but ranked them all too) "
        "and target runs per target and seed. Averages cover the targets where a method and the baseline have "
        "every seed:"
    ]
    for r in average[average["method"] != "baseline"].itertuples():
        gain = "n/a" if np.isnan(r.gain) else f"{r.gain:+.1f}"
        lines.append(f"- {A.method_label(r.method, r.variant)}: gain {gain} over {r.n_targets} targets")
    return "\n".join(lines)


def _attention_section(
    runs: pd.DataFrame, attention: pd.DataFrame, sources, targets, variants: list[str], out: Path
) -> Section:
    """Per variant, the attention heatmap (targets x source prompts, the target's own prompt last) and its
    correlation with the transfers' relative error reduction, computed as for the similarity indicators."""
    figs, tables, stats, quality = [], [], [], []
    prompts = [*sources, OWN_PROMPT]
    for variant in variants:
        name = variant.removeprefix("attempt-")
        matrix = A.attention_matrix(attention, runs, prompts, targets, variant).T.rename(
            columns={OWN_PROMPT: OWN_LABEL}
        )
        caption = f"ATTEMPT ({variant}): mean attention on each prompt over the validation examples and seeds"
        figs.append(
            figure(
                heatmap(
                    matrix,
                    out / f"figures/attention_{name}",
                    title=f"ATTEMPT attention ({variant})",
                    value_label="mean attention weight",
                    center=None,
                    fmt=".2f",
                    xlabel="prompt",
                    ylabel="target task",
                ),
                caption,
            )
        )
        tables.append(write_table(matrix, out / f"tables/attention_{name}", caption=caption, float_fmt="{:.3f}")[1])
        scored = A.score_candidates(A.attention_ranking(attention, runs, targets, variant), runs)
        points = A.correlation_points(scored)
        stats.append(A.correlations(points))
        quality.append(A.ranking_quality(scored))
        if not points.empty:
            figs.append(
                figure(
                    correlation_scatter(
                        points,
                        stats[-1].set_index("target"),
                        out / f"figures/attention_correlation_{name}",
                        title=f"ATTEMPT attention ({variant}) vs relative error reduction",
                    ),
                    "One point per source run: ATTEMPT's attention on its task (x) against its transfer's relative "
                    "error reduction; Pearson r and p per target.",
                )
            )
    stats_all, quality_all = pd.concat(stats, ignore_index=True), pd.concat(quality, ignore_index=True)
    text = "ATTEMPT's attention on a source prompt, read as a transferability indicator like the task similarities."
    if not stats_all.empty:
        tables.append(
            write_table(
                stats_all,
                out / "tables/attention_correlation",
                float_fmt="{:.3f}",
                caption="ATTEMPT attention vs relative error reduction",
            )[1]
        )
        summary = A.indicator_summary(stats_all, quality_all)
        tables.append(
            write_table(
                summary.set_index("method"),
                out / "tables/attention_indicator",
                float_fmt="{:.3f}",
                caption="ATTEMPT attention as an indicator: mean over targets of the correlation, "
                "and the quality of its top-1 pick",
            )[1]
        )
        text += " Set its mean Pearson r beside the task similarities' (Transferability indicators, above)."
    return Section("ATTEMPT's attention", text, figs, tables)
