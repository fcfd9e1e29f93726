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
bound may be left out) and there is at least one value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from spot_core.analysis.frames import check_curves, check_runs, stage


class Kind(StrEnum):
    SOURCE_SCORE = "source_score"  # each source run's best validation score on its own task
    TARGET_GAIN = "target_gain"  # each target (baseline) run: final validation score - its initial prompt's
    TRANSFER_GAIN = "transfer_gain"  # per source run: its transfers' mean best score - the target's baseline mean
    ZERO_SHOT_RELATIVE = "zero_shot_relative"  # per source run: zero-shot score / the target's baseline mean, %


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


KINDS: dict[Kind, tuple[tuple[str, ...], Callable[..., list[float]]]] = {
    Kind.SOURCE_SCORE: (("task",), source_values),
    Kind.TARGET_GAIN: (("task",), target_gain_values),
    Kind.TRANSFER_GAIN: (("source", "target"), transfer_gain_values),
    Kind.ZERO_SHOT_RELATIVE: (("source", "target"), zero_shot_values),
}


def check_expectations(
    expected: Mapping[str, Any], runs: pd.DataFrame, curves: pd.DataFrame, origin: str = "expectations"
) -> pd.DataFrame:
    """Measures every claim on a study's runs.

    Args:
        expected: the parsed expectations file ({"claims": [...]}).
        runs, curves: the study's tables (see `spot_core.analysis.frames`).
        origin: the file's name, for error messages.

    Returns:
        One row per claim: kind, subject, values (one per seed, rounded to 0.1), min, max, holds.

    Raises:
        ValueError: a claim has an unknown kind or lacks a field it needs.
    """
    runs, curves = check_runs(runs), check_curves(curves)
    rows = []
    for i, claim in enumerate(expected.get("claims", [])):
        try:
            kind = Kind(claim.get("kind"))
        except ValueError:
            allowed = ", ".join(k.value for k in Kind)
            raise ValueError(f"{origin}: claim {i} has kind {claim.get('kind')!r}; use one of {allowed}") from None
        fields, measure = KINDS[kind]
        missing = [f for f in fields if f not in claim]
        if missing or (claim.get("min") is None and claim.get("max") is None):
            raise ValueError(f"{origin}: claim {i} ({kind}) needs {', '.join(fields)} and min and/or max")
        values = measure(runs, curves, claim)
        low = -np.inf if claim.get("min") is None else claim["min"]
        high = np.inf if claim.get("max") is None else claim["max"]
        rows.append(
            {
                "kind": kind.value,
                "subject": " -> ".join(str(claim[f]) for f in fields),
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
    for _, row in checked.iterrows():
        low, high = ("" if pd.isna(row[b]) else f"{row[b]:g}" for b in ("min", "max"))
        bounds = f"[{low}, {high}]"
        lines.append(f"{row['kind']:<19} {row['subject']:<24} {str(row['values']):<28} in {bounds:<14} "
                     f"{'holds' if row['holds'] else 'FAILS'}")  # fmt: skip
    return "\n".join(lines)
