"""Tasks and mixtures (seqio-like records) and the registry that names them.

A task's preprocessor turns one row of its Hugging Face dataset into an example:
`{"inputs": str, "targets": str}` plus, where the metric needs more than the target string, `"references"`
(all gold answers of a QA example, a MultiRC answer's question group, ...). Metrics are
`(references, predictions) -> {name: value in 0-100}`; a task's score is the mean of all their values.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from spot_core.errors import ConfigError, SpotError
from spot_core.metrics import task_score

Example = dict[str, Any]
Metric = Callable[[Sequence[Any], Sequence[str]], dict[str, float]]
F = TypeVar("F", bound=Callable)
ROLES = ("train", "validation", "test")
MIXTURE_CAP = 2**19  # SPoT's artificial per-task cap on examples-proportional rates


class TaskDataError(SpotError, FileNotFoundError):
    """Task data is missing or malformed; the message names the task, the path and the remedies."""


class FieldError(ValueError):
    """A preprocessor met a field value it cannot use (a label outside the label set, a hidden test label); the
    loader turns it into a TaskDataError naming the task, file, line and `field`."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


# The kinds of row fields a task reads (`Task.reads`): name -> (what it is, as a message says it; its check).
KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "text": ("a string", lambda v: isinstance(v, str)),
    "integer": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "value": ("a string or a number", lambda v: isinstance(v, str | int | float) and not isinstance(v, bool)),
    "texts": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "integers": (
        "a list of integers",
        lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
    ),
}


def reads(fields: Mapping[str, str]) -> Callable[[F], F]:
    """Declares the row fields a preprocessor reads and their kinds (KINDS), `a.b` for field b of a record a:
    the loader checks every row against them before the preprocessor sees it (`Task.reads`)."""
    unknown = {k for k in fields.values() if k not in KINDS}
    if unknown:
        raise ValueError(f"unknown field kinds {sorted(unknown)}; use {list(KINDS)}")

    def declare(fn: F) -> F:
        fn.reads = dict(fields)
        return fn

    return declare


class UnknownNameError(SpotError, KeyError):
    """An unregistered task or mixture name; the message lists the closest registered names."""

    def __str__(self) -> str:
        return str(self.args[0])


def split_file(spec: str) -> list[str]:
    """The data split names a split spec reads: "train[:90%]+validation" -> ["train", "validation"]."""
    return [part.split("[", 1)[0].strip() for part in spec.split("+")]


@dataclass(frozen=True)
class Task:
    """One text-to-text task.

    Attributes:
        name: versioned name (`rte_v1`); a format change gets a new version, so results never mix formats.
        hub_id, hub_config, revision: the Hugging Face dataset (revision None = the hub's main branch).
        splits: role (train / validation / test) -> split spec in the data: a split name, optionally sliced and
            joined as in `datasets` (`validation[:50%]`, `train[-1000:]`, `train_r1+train_r2`).
        preprocess: hub row -> example (`inputs`, `targets`, optional `references`), or None for a row the
            task drops by design (SNLI pairs without a gold label). It declares the fields it reads (`reads`).
        metrics: metric functions; the task score is the mean of all their values.
        label_words: the closed label set (rank classification), or None (greedy generation).
        fallback_splits: a documented, deterministic carve-out used in place of `splits` for the roles it names
            when a mirror lacks one of their splits (e.g. no validation file: carve it from train).
        fallback_configs: configurations read, in this order, from a mirror that lacks the folder of `hub_config`
            (WinoGrande: `winogrande_l` where the mirror has no `winogrande_xl`); the first whose folder the mirror
            has is read (`spot_core.tasks.source.DataSource`). The hub always serves `hub_config`. Results on
            another configuration are not comparable: a run records the one it read and a study cell's key
            includes it.
        train_filter: turns one preprocessed training example into zero or more (ReCoRD: one per answer;
            WSC: positives only). Evaluation always sees the plain examples.
        postprocess: applied to each prediction before scoring.
        hub_data_files: split name -> file pattern in the hub repo, for datasets too large to load whole (C4).
        on_hub: False where no Hugging Face copy exists; the task then reads only from a mirror.
        manual_download: where to get data the hub cannot serve without a manual download (Newsroom: a form), in
            one line. Such a task reads only from a data directory (`on_hub` is False), and its notes lead with this,
            so that asking for it from the hub fails at once, before any work, with the remedy
            (`spot_core.tasks.loading.read_split`); docs/tasks.md marks it.
        notes: shown in docs/tasks.md (format choices, carve-outs, caveats).
        reads: the row fields the preprocessor reads and their kinds (KINDS): every row read is checked against
            them (a missing field, null or a value of another kind is a TaskDataError naming the row). Default:
            what the preprocessor declares with `@reads`.
        files: split name -> the data file it reads (JSONL, CSV or TSV), whatever the data directory: a task
            defined by a file of its own (spot_core.tasks.definitions) reads its data from where that file says.
        row_filter: field -> value: the task reads only the rows of each split whose field holds that value, for
            tasks that share one dataset (MRQA's six training sets, told apart by `subset`); split specs slice the
            rows kept. A mirror holds the whole shared split, as the hub does.
    """

    name: str
    hub_id: str
    hub_config: str | None
    splits: Mapping[str, str]
    preprocess: Callable[[dict], Example | None]
    metrics: tuple[Metric, ...]
    label_words: tuple[str, ...] | None = None
    max_target_tokens: int = 16
    fallback_splits: Mapping[str, str] = field(default_factory=dict)
    fallback_configs: tuple[str, ...] = ()
    train_filter: Callable[[Example], list[Example]] | None = None
    postprocess: Callable[[str], str] = str.strip
    revision: str | None = None
    hub_data_files: Mapping[str, str] = field(default_factory=dict)
    on_hub: bool = True
    manual_download: str | None = field(default=None, compare=False)
    family: str = ""
    notes: str = field(default="", compare=False)
    reads: Mapping[str, str] = field(default_factory=dict, compare=False)
    files: Mapping[str, str] = field(default_factory=dict)
    row_filter: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not self.reads:
            object.__setattr__(self, "reads", dict(getattr(self.preprocess, "reads", {})))
        if self.manual_download:
            if "\n" in self.manual_download:
                raise ValueError(f"task {self.name!r}: manual_download must be one line (it ends an error message)")
            object.__setattr__(self, "on_hub", False)
            lead = f"Manual download: {self.manual_download}"
            if not self.notes.startswith(lead):  # dataclasses.replace runs this again
                object.__setattr__(self, "notes", f"{lead} {self.notes}".strip())
        if not re.fullmatch(r"[a-z0-9_]+_v\d+", self.name):
            raise ValueError(f"task name {self.name!r} must be lower_snake_case ending in a version, like 'rte_v1'")
        unknown = set(self.splits) - set(ROLES)
        if unknown or "train" not in self.splits or "validation" not in self.splits:
            raise ValueError(f"task {self.name!r}: splits need train and validation, roles from {ROLES}")
        if isinstance(self.fallback_configs, str) or self.hub_config in self.fallback_configs:
            raise ValueError(
                f"task {self.name!r}: fallback_configs must be a tuple of configuration names other than its "
                f"hub_config {self.hub_config!r}, got {self.fallback_configs!r}"
            )
        picks = self.row_filter
        if not isinstance(picks, Mapping) or not all(isinstance(v, str) for v in (*picks, *picks.values())):
            raise ValueError(f"task {self.name!r}: row_filter must map field names to strings, got {picks!r}")

    @property
    def base_name(self) -> str:
        return self.name.rsplit("_v", 1)[0]

    @property
    def version(self) -> int:
        return int(self.name.rsplit("_v", 1)[1])

    def score(self, references: Sequence[Any], predictions: Sequence[str]) -> dict[str, float]:
        """All metric values plus `score`, their mean (0-100)."""
        predictions = [self.postprocess(p) for p in predictions]
        values: dict[str, float] = {}
        for metric in self.metrics:
            values.update(metric(references, predictions))
        return {**values, "score": task_score(values)}


@dataclass(frozen=True)
class Mixture:
    """Tasks trained together, sampled examples-proportionally with a per-task cap (SPoT: K = 2^19)."""

    name: str
    tasks: tuple[str, ...]
    cap: int = MIXTURE_CAP
    notes: str = field(default="", compare=False)

    def __post_init__(self):
        if len(self.tasks) < 2 or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"mixture {self.name!r} needs two or more distinct tasks, got {self.tasks}")
        if self.cap < 1:
            raise ConfigError(f"mixture {self.name!r}: cap must be >= 1, got {self.cap}")

    def counts(self, sizes: Mapping[str, int]) -> dict[str, int]:
        """How many examples of each task the mixture trains on: its first min(size, cap)."""
        missing = [t for t in self.tasks if t not in sizes]
        if missing:
            raise ValueError(f"mixture {self.name!r}: no size for {missing}")
        return {t: min(sizes[t], self.cap) for t in self.tasks}

    def rates(self, sizes: Mapping[str, int]) -> dict[str, float]:
        """Sampling rate of each task: min(size, cap) / the sum over the mixture's tasks (training draws uniformly
        from the `counts` examples of every task)."""
        capped = self.counts(sizes)
        total = sum(capped.values())
        if total == 0:
            raise ValueError(f"mixture {self.name!r}: every task is empty")
        return {t: n / total for t, n in capped.items()}


_TASKS: dict[str, Task] = {}
_MIXTURES: dict[str, Mixture] = {}


def register(item: Task | Mixture) -> Task | Mixture:
    """Adds a task or mixture; a name already taken by either is an error."""
    if item.name in _TASKS or item.name in _MIXTURES:
        raise ValueError(f"{item.name!r} is already registered")
    if isinstance(item, Mixture):
        for name in item.tasks:
            get_task(name)  # members must exist, by their full versioned names
        _MIXTURES[item.name] = item
    else:
        _TASKS[item.name] = item
    return item


def _latest(name: str, registry: Mapping[str, Any]) -> str | None:
    """The highest version registered under an unversioned name ("rte" -> "rte_v2")."""
    versions = [n for n in registry if n.rsplit("_v", 1)[0] == name and re.fullmatch(r".+_v\d+", n)]
    return max(versions, key=lambda n: int(n.rsplit("_v", 1)[1])) if versions else None


def _unknown(kind: str, name: str) -> UnknownNameError:
    known = sorted(_TASKS) + sorted(_MIXTURES)
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return UnknownNameError(
        f"unknown {kind} {name!r}.{hint} Registered tasks: {', '.join(sorted(_TASKS))}. "
        f"Mixtures: {', '.join(sorted(_MIXTURES))}."
    )


def get_task(name: str) -> Task:
    """The registered task; an unversioned name means its latest version. Unknown: UnknownNameError."""
    resolved = name if name in _TASKS else _latest(name, _TASKS)
    if resolved is None:
        raise _unknown("task", name)
    return _TASKS[resolved]


def get_mixture(name: str) -> Mixture:
    resolved = name if name in _MIXTURES else _latest(name, _MIXTURES)
    if resolved is None:
        raise _unknown("mixture", name)
    return _MIXTURES[resolved]


def get(name: str) -> Task | Mixture:
    """A task or a mixture by name; `a_v1+b_v1+...` is an ad-hoc mixture of those tasks (the default cap)."""
    if "+" in name:
        return Mixture(name, tuple(get_task(part.strip()).name for part in name.split("+")))
    try:
        return get_task(name)
    except UnknownNameError:
        pass
    try:
        return get_mixture(name)
    except UnknownNameError:
        raise _unknown("task or mixture", name) from None


def members(name: str) -> list[Task]:
    """The tasks a name trains on: the task itself, or a mixture's tasks."""
    item = get(name)
    return [get_task(t) for t in item.tasks] if isinstance(item, Mixture) else [item]


def task_names() -> list[str]:
    return sorted(_TASKS)


def mixture_names() -> list[str]:
    return sorted(_MIXTURES)
