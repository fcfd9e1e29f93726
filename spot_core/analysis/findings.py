"""A study's findings as checkable claims: what a re-run on another machine should reproduce.

Exact scores do not carry over between CPUs (float rounding, amplified by training), so a finding is a range
that every seed of the study must fall in; whoever writes the file sets each range from the seed spread and the
validation standard error of the run it comes from. An expectations file (JSON) lists claims:

    {"study": "demo", "claims": [
        {"kind": "source_score", "task": "sst2_v1", "min": 75, "max": 95, "why": "..."},
        {"kind": "target_gain", "task": "cr_v1", "min": 4.0},
        {"kind": "transfer_gain", "source": "sst2_v1", "target": "cr_v1", "min": 0.5},
        {"kind": "zero_shot_relative", "source": "sst2_v1", "target": "cr_v1", "min": 90, "max": 130}
    ]}

Each kind measures one value per seed (see KINDS); a claim holds when every value lies in [min, max] (either
bound may be left out) and there is at least one value. SPoT's generic comparison (Table 1) has two kinds of its
own, on a row's benchmark score per seed (`spot_core.analysis.generic.seed_scores`; `source` names a SPoT or
multi-task row's source):

    {"kind": "benchmark_score", "method": "ModelTuning", "benchmark": "GLUE", "min": 60},
    {"kind": "benchmark_gain", "method": "SPoT", "source": "glue_v1", "baseline": "PromptTuning",
     "benchmark": "SuperGLUE", "min": 0}

A claim may name the `study` it is measured on, one of the studies a report compares (Figure 1's sizes); without
one, the reported study.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from spot_core.analysis.frames import check_curves, check_runs, stage
from spot_core.analysis.generic import method_runs, seed_scores


class Kind(StrEnum):
    SOURCE_SCORE = "source_score"  # each source run's best validation score on its own task
    TARGET_GAIN = "target_gain"  # each target (baseline) run: final validation score - its initial prompt's
    TRANSFER_GAIN = "transfer_gain"  # per source run: its transfers' mean best score - the target's baseline mean
    ZERO_SHOT_RELATIVE = "zero_shot_relative"  # per source run: zero-shot score / the target's baseline mean, %
    BENCHMARK_SCORE = "benchmark_score"  # per seed: a Table 1 row's mean over the benchmark's tasks in the study
    BENCHMARK_GAIN = "benchmark_gain"  # per seed: that score minus the baseline row's of the same seed


def source_values(runs: pd.DataFrame, curves: pd.DataFrame, claim: Mapping[str, Any]) -> list[float]:
    rows = stage(runs, "source")
    return rows[rows["task"] == claim["task"]].sort_values("seed")["score"].tolist()


def target_gain_values(runs: pd.DataFrame, curves: pd.DataFrame, claim: Mapping[str, Any]) -> list[float]:
    rows = stage(runs, "target")
    keys = rows[rows["target"] == claim["task"]].sort_values("seed")["key"]
    values = []
    for key in keys:
        curve = curves[curves["key"] == key].sort_values("step")
        if len(curve) >= 2 and curve["step"].iloc[0] == 0:
            values.append(float(curve["score"].iloc[-1] - curve["score"].iloc[0]))
    return values


def _baseline(runs: pd.DataFrame, target: str) -> float:
    base = stage(runs, "target")
    return float(base[base["target"] == target]["score"].mean())


def _per_source_run(runs: pd.DataFrame, name: str, claim: Mapping[str, Any]) -> pd.Series:
    """The stage's mean score per source run (source_key) for the claim's (source, target), source seed order."""
    rows = stage(runs, name)
    rows = rows[(rows["source"] == claim["source"]) & (rows["target"] == claim["target"])]
    seeds = stage(runs, "source").set_index("key")["seed"]
    means = rows.groupby("source_key")["score"].mean()
    return means.loc[sorted(means.index, key=lambda k: (seeds.get(k, np.inf), k))]


def transfer_gain_values(runs: pd.DataFrame, curves: pd.DataFrame, claim: Mapping[str, Any]) -> list[float]:
    return (_per_source_run(runs, "transfer", claim) - _baseline(runs, claim["target"])).dropna().tolist()


def zero_shot_values(runs: pd.DataFrame, curves: pd.DataFrame, claim: Mapping[str, Any]) -> list[float]:
    base = _baseline(runs, claim["target"])
    return (_per_source_run(runs, "zero_shot", claim) / base * 100.0).dropna().tolist() if base else []


def _benchmark_seeds(runs: pd.DataFrame, benchmark: str, method: str, source: str) -> pd.Series:
    """A Table 1 row's benchmark score per seed, over the study's targets (every task its rows were run on)."""
    scores = seed_scores(runs, method_runs(runs)["task"].unique())
    rows = scores[(scores["benchmark"] == benchmark) & (scores["method"] == method) & (scores["source"] == source)]
    return rows.set_index("seed")["score"].sort_index()


def benchmark_values(runs: pd.DataFrame, curves: pd.DataFrame, claim: Mapping[str, Any]) -> list[float]:
    return _benchmark_seeds(runs, claim["benchmark"], claim["method"], claim.get("source", "")).tolist()


def benchmark_gain_values(runs: pd.DataFrame, curves: pd.DataFrame, claim: Mapping[str, Any]) -> list[float]:
    row = _benchmark_seeds(runs, claim["benchmark"], claim["method"], claim.get("source", ""))
    base = _benchmark_seeds(runs, claim["benchmark"], claim["baseline"], claim.get("baseline_source", ""))
    return (row - base).dropna().tolist()


KINDS: dict[Kind, tuple[tuple[str, ...], Callable[..., list[float]]]] = {
    Kind.SOURCE_SCORE: (("task",), source_values),
    Kind.TARGET_GAIN: (("task",), target_gain_values),
    Kind.TRANSFER_GAIN: (("source", "target"), transfer_gain_values),
    Kind.ZERO_SHOT_RELATIVE: (("source", "target"), zero_shot_values),
    Kind.BENCHMARK_SCORE: (("method", "benchmark"), benchmark_values),
    Kind.BENCHMARK_GAIN: (("method", "baseline", "benchmark"), benchmark_gain_values),
}


SOURCE_OF = {"method": "source", "baseline": "baseline_source"}  # a Table 1 row's field -> the field of its source


def subject(claim: Mapping[str, Any], fields: tuple[str, ...]) -> str:
    """What a claim is about: its fields (a row's source after it), then the study it names."""
    named = []
    for field in fields:
        source = claim.get(SOURCE_OF.get(field, ""))
        named.append(f"{claim[field]} ({source})" if source else str(claim[field]))
    return " -> ".join(named) + (f" @ {claim['study']}" if claim.get("study") else "")


def check_claims(expected: Mapping[str, Any], origin: str, studies: list[str]) -> list[Kind]:
    """Each claim's kind, once every claim is known to be well formed (before any study is read or anything written).

    Raises:
        ValueError: a claim has an unknown kind, lacks a field it needs or names a study not among `studies`.
    """
    kinds = []
    for i, claim in enumerate(expected.get("claims", [])):
        try:
            kind = Kind(claim.get("kind"))
        except ValueError:
            allowed = ", ".join(k.value for k in Kind)
            raise ValueError(f"{origin}: claim {i} has kind {claim.get('kind')!r}; use one of {allowed}") from None
        fields = KINDS[kind][0]
        if any(f not in claim for f in fields) or (claim.get("min") is None and claim.get("max") is None):
            raise ValueError(f"{origin}: claim {i} ({kind}) needs {', '.join(fields)} and min and/or max")
        study = claim.get("study")
        if study is not None and study not in studies:
            known = ", ".join(studies) or "none: give the report the studies in sizes=[...]"
            raise ValueError(f"{origin}: claim {i} is on study {study!r}, not among the report's studies ({known})")
        kinds.append(kind)
    return kinds


def check_expectations(
    expected: Mapping[str, Any],
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    origin: str = "expectations",
    others: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]] | None = None,
) -> pd.DataFrame:
    """Measures every claim on a study's runs.

    Args:
        expected: the parsed expectations file ({"claims": [...]}).
        runs, curves: the study's tables (see `spot_core.analysis.frames`).
        origin: the file's name, for error messages.
        others: the other studies a claim may name (its `study`): name -> (runs, curves).

    Returns:
        One row per claim: kind, subject, values (one per seed, rounded to 0.1), min, max, holds.

    Raises:
        ValueError: a claim is not well formed (`check_claims`).
    """
    tables = {name: (check_runs(r), check_curves(c)) for name, (r, c) in (others or {}).items()}
    runs, curves = check_runs(runs), check_curves(curves)
    rows = []
    for claim, kind in zip(expected.get("claims", []), check_claims(expected, origin, list(tables)), strict=True):
        fields, measure = KINDS[kind]
        study = claim.get("study")
        values = measure(*(tables[study] if study is not None else (runs, curves)), claim)
        low = -np.inf if claim.get("min") is None else claim["min"]
        high = np.inf if claim.get("max") is None else claim["max"]
        rows.append(
            {
                "kind": kind.value,
                "subject": subject(claim, fields),
                "values": [round(v, 1) for v in values],
                "min": claim.get("min"),
                "max": claim.get("max"),
                "holds": bool(values) and all(low <= v <= high for v in values),
            }
        )
    return pd.DataFrame(rows, columns=["kind", "subject", "values", "min", "max", "holds"])


def describe(checked: pd.DataFrame) -> str:
    """The checked claims as aligned text lines, each ending in 'holds' or 'FAILS'."""
    lines = []
    width = max([24, *(len(s) + 1 for s in checked["subject"])])
    for _, row in checked.iterrows():
        low, high = ("" if pd.isna(row[b]) else f"{row[b]:g}" for b in ("min", "max"))
        bounds = f"[{low}, {high}]"
        lines.append(f"{row['kind']:<19} {row['subject']:<{width}} {str(row['values']):<28} in {bounds:<14} "
                     f"{'holds' if row['holds'] else 'FAILS'}")  # fmt: skip
    return "\n".join(lines)
