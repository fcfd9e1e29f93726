"""A study's plan, before anything runs: its cells per stage, how many the ledger already has finished, how they
would pack into trials, and (`plan=true`, or `plan=DEVICE` for a stored figure) the cost of the rest
(`spot_core.cost`). Reading the plan writes nothing: no tracking store, run or folder is created.

`make study` prints the counts before it trains; the estimate, which builds and times the model, only with plan.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from transformers import AutoConfig

from pipelines import ledger
from pipelines.paths import REPO
from pipelines.tracking import TrackingError, open_store, sqlite_file
from spot_core import cost
from spot_core.backbones import BUILTIN_MODELS, BackboneError, check_backbone, resolve_prompt_once
from spot_core.errors import ConfigError
from spot_core.stages.base import StageDef
from spot_core.stages.catalogue import stage_of
from spot_core.study import Cell, StudyConfig, data_fields

FIGURES = REPO / "bench" / "figures.json"  # stored figures of named GPUs (bench/packed.py records them)
PackKey = Callable[[Cell], Hashable | None]


def asked(value: Any) -> tuple[bool, str | None]:
    """`plan`: false (train), true (the plan, the estimate from a calibration here) or a GPU's name (the plan, the
    estimate from its stored figure); returns (plan asked, the device named)."""
    if isinstance(value, bool) or value is None:
        return bool(value), None
    if isinstance(value, str) and value.strip():
        return True, value.strip()
    raise ConfigError(f"plan must be true, false or the name of a GPU with a stored figure (plan=h200), got {value!r}")


def lacking_model(name: str, cache_dir: str | None, prompt_once: bool | None) -> str | None:
    """What the study's model check (`check_backbone`) would say about `name` on this machine, from its files alone
    (the hub is not asked: offline it retries for half a minute); None if the model is here. An encoder-decoder
    model asked to run its prompt once still fails (PromptOnceError: the design's error, not this machine's)."""
    if name in BUILTIN_MODELS:
        try:
            check_backbone(name, cache_dir, prompt_once)
        except BackboneError as e:
            return str(e)
        return None
    try:
        resolve_prompt_once(prompt_once, cost.architecture(name, cache_dir).is_encoder_decoder, name)
        AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, BackboneError):
        return f"model {name!r} is not on this machine (a study here would download it, with internet)"
    return None


# --- what there is to run ----------------------------------------------------------------------------------
@dataclass
class StageRow:
    """A stage's cells; `later` of them planned from finished runs (counted here from the design)."""

    stage: StageDef
    cells: list[Cell]
    finished: int
    todo: list[Cell]
    trials: int
    later: int = 0  # how many of `cells` are planned from finished runs


@dataclass
class Plan:
    """A study's stages as planned, with where their finished counts come from and what this machine lacks."""

    study: str
    cells_per_trial: int
    rows: list[StageRow]
    finished_from: str  # where the finished counts come from
    lacking: list[str] = field(default_factory=list)


def read_ledger(uri: str, experiment: str, study: str) -> tuple[set[str], Counter, str]:
    """The keys of the study's finished cells, its current finished runs per cell stage, and where from; nothing
    (and nothing created) when the store, its experiment or the study are not there yet."""
    db = sqlite_file(uri)
    if db is not None and not db.is_file():
        return set(), Counter(), f"no tracking store yet at {db}"
    try:
        client, experiment_id = open_store(uri, experiment, create=False)
    except TrackingError:
        return set(), Counter(), f"no experiment {experiment!r} in {uri} yet"
    keys = ledger.finished_keys(client, experiment_id, study)
    current = Counter(r.data.tags["stage"] for r in ledger.finished_runs(client, experiment_id, study))
    return keys, current, f"the ledger in {uri}"


def beyond(cells: Sequence[Cell], finished: Counter) -> list[Cell]:
    """The cells of each stage kind beyond the `finished` runs of that kind: which ones these are is known only
    once they are planned (from the finished runs' ranking), how many is not."""
    left, todo = Counter(finished), []
    for c in cells:
        if left[str(c.stage)] > 0:
            left[str(c.stage)] -= 1
        else:
            todo.append(c)
    return todo


def trials(todo: Sequence[Cell], stage: StageDef, per_trial: int, pack_key: PackKey) -> int:
    """Trials for these cells: packs of up to `per_trial` with one pack key (backbone), or one per cell."""
    if stage.run_pack is None or per_trial == 1:
        return len(todo)
    groups = Counter(pack_key(c) for c in todo)
    return sum(math.ceil(n / per_trial) for n in groups.values())


def make_plan(
    study: StudyConfig,
    stages: Sequence[StageDef],
    cells: Sequence[Cell],
    store: tuple[str, str],
    per_trial: int,
    pack_key: PackKey,
    lacking: Sequence[str] = (),
) -> Plan:
    """The plan of `stages` (`cells`: what they plan from the design; `store`: tracking URI and experiment;
    `lacking`: what this machine lacks to run them)."""
    keys, current, source = read_ledger(*store, study.name) if stages else (set(), Counter(), "")
    rows = []
    for stage in stages:
        mine = [c for c in cells if c.stage in stage.kinds]
        todo = [c for c in mine if c.key not in keys]
        later = stage.designed(study) if stage.plan_later and stage.designed else []
        todo += beyond(later, current - Counter(str(c.stage) for c in mine if c.key in keys))  # counted from the design
        mine += later
        finished = len(mine) - len(todo)
        rows.append(StageRow(stage, mine, finished, todo, trials(todo, stage, per_trial, pack_key), len(later)))
    return Plan(study.name, per_trial, rows, source, list(lacking))


def render(plan: Plan, study: StudyConfig) -> str:
    """The plan as a table, a line per stage, and what this machine lacks."""
    if not plan.rows:
        return f"plan of study {plan.study} ({study.model}): no cell stages asked for, nothing to train"
    packing = (
        f"packs of up to {plan.cells_per_trial} cells with one backbone per trial for "
        + ", ".join(r.stage.name for r in plan.rows if r.stage.run_pack)
        + " (a pack also takes ready cells of those other stages); one cell per trial otherwise"
        if plan.cells_per_trial > 1
        else "one cell per trial (ray.cells_per_trial=1)"
    )
    w = max([12, *(len(r.stage.name) for r in plan.rows)])  # the stage column: its longest name
    lines = [
        f"plan of study {plan.study} ({study.model}); finished: from {plan.finished_from}; {packing}",
        f"  {'stage':<{w}} {'cells':>7} {'finished':>9} {'to run':>7} {'trials':>7}",
    ]
    for r in plan.rows:
        note = ""
        if r.later:
            inputs = " and ".join(f"{kind} runs" for kind in r.stage.waits_for) or "runs it needs"
            some = f"{r.later} of them " if r.later < len(r.cells) else ""
            note = f"  {some}planned once the {inputs} have finished; counted from the design"
        lines.append(f"  {r.stage.name:<{w}} {len(r.cells):>7} {r.finished:>9} {len(r.todo):>7} {r.trials:>7}{note}")
    total = [sum(len(r.cells) for r in plan.rows), sum(r.finished for r in plan.rows)]
    total += [sum(len(r.todo) for r in plan.rows), sum(r.trials for r in plan.rows)]
    lines.append(f"  {'total':<{w}} {total[0]:>7} {total[1]:>9} {total[2]:>7} {total[3]:>7}")
    if plan.lacking:
        lines.append("this machine lacks (a study run here would stop at the first):")
        lines += [f"  {line}" for line in plan.lacking]
    return "\n".join(lines)


# --- what the rest costs -----------------------------------------------------------------------------------
def hours(seconds: float) -> str:
    """ "45 s", "12.5 min", "3.2 h", "1,234 h (51 days)"."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    h = seconds / 3600
    return f"{h:,.1f} h" if h < 48 else f"{h:,.0f} h ({h / 24:,.0f} days)"


def calibration_device(wanted: str) -> tuple[str, str]:
    """Where to calibrate: the study's model.device when this machine has it, else the CPU (and why)."""
    if torch.device(wanted).type == "cuda" and not torch.cuda.is_available():
        return (
            "cpu",
            f"model.device={wanted}, which this machine lacks: the estimate is for running the study on its CPU",
        )
    return wanted, ""


def shape(study: StudyConfig, name: str) -> cost.Shape:
    """The tokens of a cell's step on model `name` (its prompt once, or once per example)."""
    once = data_fields(study, "" if name == study.model else name)["prompt_once"]
    once = resolve_prompt_once(once, bool(cost.architecture(name, study.cache_dir).is_encoder_decoder), name)
    return cost.Shape(study.prompt.length, study.max_input_tokens, study.max_target_tokens, once)


def cell_shape(cell: Cell, shape: cost.Shape) -> cost.Shape:
    """The tokens of `cell`'s step: the model's `shape`, with the prompt once per example where the cell's stage
    makes its prompt depend on the input."""
    return replace(shape, prompt_once=False) if stage_of(cell.stage).prompt_per_example else shape


# model tuning's backward also computes every weight's gradient: about one forward more (its update left out)
RELATIVE = cost.TokenCost(
    "any", 3.0, 1.0, "relative: a backward pass costs about two forwards", train_weights=4.0, update=0.0
)
UNSIZED_EVALUATION = 100  # examples an evaluation of a whole validation split is priced at (its size is not known)


def cell_price(study: StudyConfig) -> Callable[[Cell], float]:
    """A cell's price for the progress ETA: the tokens its stage's work (`StageDef.work`) runs through the model,
    a training token at 3 evaluation tokens, no calibration (the scheduler scales prices by measured times)."""
    shapes: dict[str, cost.Shape] = {}

    def price(cell: Cell) -> float:
        name = cell.model or study.model
        if name not in shapes:
            try:
                shapes[name] = shape(study, name)
            except BackboneError:  # a model this machine cannot describe offline: its prompt once per example
                shapes[name] = cost.Shape(study.prompt.length, study.max_input_tokens, study.max_target_tokens, False)
        work, step = stage_of(cell.stage).work(cell, study), cell_shape(cell, shapes[name])
        train, evaluate = work.seconds(step, RELATIVE)
        if work.eval_examples is None:
            evaluate = work.evaluations * UNSIZED_EVALUATION * work.example_seconds(step, RELATIVE)
        return max(train + evaluate, 1.0)

    return price


def stored_costs(device: str, study: StudyConfig, cells: Sequence[Cell], per_trial: int) -> dict[str, cost.TokenCost]:
    """The stored figures of `device` for each model of `cells` (ConfigError, one line, if one has none): checked
    before anything else is, then used by the estimate (packing stages' models at `per_trial`)."""
    figures, source = cost.load_figures(FIGURES), FIGURES.relative_to(REPO)
    packed = {c.model or study.model for c in cells if stage_of(c.stage).run_pack}
    models = dict.fromkeys([study.model, *(c.model or study.model for c in cells)])
    return {
        name: cost.stored_cost(figures, device, name, study.dtype, per_trial if name in packed else 1, source)
        for name in models
    }


@dataclass(frozen=True)
class Trials:
    """How a study's trials share a local machine: `threads` torch threads each (ray.cpus_per_trial), `at_once` of
    them side by side (the CPUs over that, at most ray.max_concurrent_trials; one with ray.in_process)."""

    threads: int = 1
    at_once: int = 1

    @classmethod
    def of(cls, ray_cfg: Any) -> Trials:
        threads = max(1, int(ray_cfg.cpus_per_trial or 1))
        at_once = max(1, int((ray_cfg.num_cpus or os.cpu_count() or 1) // threads))
        if ray_cfg.get("in_process"):  # one trial at a time, in the study's process
            return cls(threads, 1)
        return cls(threads, min(at_once, ray_cfg.max_concurrent_trials or at_once))


def model_costs(
    plan: Plan, study: StudyConfig, device: str | None, trials: Trials = Trials()
) -> dict[str, cost.TokenCost]:
    """The cost per token of each model with cells to run: from `device`'s stored figure, or measured here (on the
    study's model.device, or the CPU where this machine has none; on a CPU with a trial's threads, as its trials
    run: all of a machine's threads, timed while other work runs on it, made the figures 6-8x too high)."""
    todo = [c for r in plan.rows for c in r.todo]
    if device:
        return stored_costs(device, study, todo, plan.cells_per_trial)
    packed = {c.model or study.model for r in plan.rows if r.stage.run_pack for c in r.todo}
    tuned = {c.model or study.model for c in todo if stage_of(c.stage).work(c, study).weights}  # model tuning
    out = {}
    for name in dict.fromkeys(c.model or study.model for c in todo):
        per_trial = plan.cells_per_trial if name in packed else 1
        batches = Counter(c.trainer.batch_size for c in todo if (c.model or study.model) == name and c.trainer)
        batch = batches.most_common(1)[0][0] if batches else 1
        here = calibration_device(study.device)[0]
        config = cost.architecture(name, study.cache_dir)
        threads = torch.get_num_threads()
        if torch.device(here).type == "cpu":
            torch.set_num_threads(trials.threads)
        try:
            out[name] = cost.measure(
                name, config, shape(study, name), per_trial, batch, study.dtype, here, weights=name in tuned
            )
        finally:
            torch.set_num_threads(threads)
    return out


@dataclass
class KindCost:
    """The cells of one cell stage still to run and their seconds (training, evaluation). `unsized`: their
    evaluations of whole validation splits, not in `evaluate`; `per_1000`: what 1,000 examples in each would add."""

    kind: str
    cells: int
    steps: int  # the most common steps and batch size among them
    batch_size: int
    train: float = 0.0
    evaluate: float = 0.0
    unsized: int = 0
    per_1000: float = 0.0


def cost_by_kind(plan: Plan, study: StudyConfig, costs: dict[str, cost.TokenCost]) -> list[KindCost]:
    """What the cells still to run cost, per cell stage, at `costs` (per model)."""
    shapes = {m: shape(study, m) for m in costs}
    kinds: dict[str, list[Cell]] = defaultdict(list)
    for c in (c for r in plan.rows for c in r.todo):
        kinds[str(c.stage)].append(c)
    out = []
    for kind, members in kinds.items():
        works = [(stage_of(c.stage).work(c, study), c.model or study.model) for c in members]
        steps, batch = Counter((w.steps, w.batch_size) for w, _ in works).most_common(1)[0][0]
        row = KindCost(kind, len(members), steps, batch)
        for c, (w, m) in zip(members, works, strict=True):
            train, evaluate = w.seconds(cell_shape(c, shapes[m]), costs[m])
            row.train, row.evaluate = row.train + train, row.evaluate + evaluate
            if w.evaluations and w.eval_examples is None:
                row.unsized += w.evaluations
                row.per_1000 += w.evaluations * 1000 * w.example_seconds(cell_shape(c, shapes[m]), costs[m])
        out.append(row)
    return out


def estimate(
    plan: Plan, study: StudyConfig, device: str | None, costs: dict | None = None, trials: Trials = Trials()
) -> str:
    """The cost of the cells still to run, a line per cell stage, and the total in device-hours (for a GPU, on 1
    and on 8; on this machine's CPU, also the wall time with `trials` side by side); `costs`: per model, instead of
    measuring them or reading `device`'s stored figure."""
    if not any(r.todo for r in plan.rows):
        return "estimate: nothing left to run"
    costs = costs or model_costs(plan, study, device, trials)
    lines = ["estimate of the cells still to run (each input at its maximum length: an upper bound):"]
    if device is None and (why := calibration_device(study.device)[1]):
        lines.append(f"  {why}")
    lines += [f"  {m}: {c.train:.3g} s per training token, {c.evaluate:.3g} s per evaluation token"
              + ("" if c.train_weights is None else
                 f", {c.train_weights:.3g} s per model-tuning token and {c.update:.3g} s per update of every weight")
              + f"; {c.how}" for m, c in costs.items()]  # fmt: skip
    lines += [f"  {m}: a model-tuning cell holds {c.held.describe()}" for m, c in costs.items() if c.held]
    rows = cost_by_kind(plan, study, costs)
    for r in rows:
        cells = f"{r.cells} cell{'s' if r.cells > 1 else ''}"
        if r.steps:
            what = f"x {r.steps:,} steps x {r.batch_size} examples"
        else:
            what = "scoring a prompt" if r.unsized or r.evaluate else "not counted (one prompt's forward pass)"
        amount = hours(r.train + r.evaluate) + (" + evaluation" if r.unsized else "")
        lines.append(f"  {r.kind:<17} {cells:>9} {what:<39} {amount:>35}")
    total, evaluation = sum(r.train + r.evaluate for r in rows), sum(r.evaluate for r in rows)
    unsized, per_1000 = sum(r.unsized for r in rows), sum(r.per_1000 for r in rows)
    gpu = any(c.gpu for c in costs.values())
    h = total / 3600
    span = f"{h / 24:,.0f} days" if h >= 48 else hours(total)
    of_it = f"; evaluation {hours(evaluation)} of it" if evaluation else ""
    lines.append(f"  total: {h:,.{0 if h >= 100 else 2}f} {'GPU-hours' if gpu else 'device-hours of this machine'} "
                 f"({span}{of_it})")  # fmt: skip
    if not gpu and trials.at_once > 1:
        each = f"{trials.threads} thread{'s' * (trials.threads > 1)} each, ray.*"
        lines.append(f"  with {trials.at_once} trials at once ({each}): about {hours(total / trials.at_once)} if the "
                     "cells spread evenly over them")  # fmt: skip
    if unsized:
        lines.append(
            f"  not counted: {unsized:,} evaluations of whole validation splits (study.max_eval_examples is unset, "
            f"their sizes are known once the data is read): each 1,000 examples per evaluation add {hours(per_1000)}"
        )
    if gpu:
        lines.append(
            f"  on 1 GPU: {hours(total)}; on 8 GPUs: {hours(total / 8)} if the cells spread evenly over them (a lower "
            "bound: transfers wait for their sources)"
        )
    return "\n".join(lines)
