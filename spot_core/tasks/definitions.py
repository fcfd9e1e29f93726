"""Tasks defined by a small YAML file instead of Python: the data, an input template, the label words (or a target
template) and the metrics, as lm-evaluation-harness defines its tasks.

    name: product_reviews_v1          # versioned, like every task
    data:                             # role -> file (JSONL, CSV or TSV), optionally sliced: `all.jsonl[:90%]`
      train: reviews/train.jsonl      # relative to this file; `{data_dir}/...`: under the data directory
      validation: reviews/test.jsonl
    inputs: "product_reviews review: {text}"   # or input_fields: [text] (T5's "task field: value" style)
    label_field: label                # classification: the field holding the label, and its words:
    label_words: [negative, positive] # a list (integer labels 0..n-1) or a mapping {label value: word}
    # target: "{answer}"              # generation instead: the target template (then no label_words)
    metrics: [accuracy]               # names from spot_core.metrics.METRIC_NAMES (default: accuracy)

`data` may instead name a dataset on the Hugging Face hub, read from the offline mirror like a built-in task's:
`data: {hub: SetFit/SentEval-CR, config: null, splits: {train: train, validation: test}}`.

A definition is checked when it is read (`load_task_file`): its keys, the template's fields, the label words and
metric names (`spot_core.tasks.task_file`), and the first rows of every split it reads, from where its `DataSource`
says they are (fields present, labels in the label set). Every error
names the file and the key. The checked definition is plain data (`definition`, file paths made absolute): it
travels with a study's cells to Ray workers on any node, which register it (`register_definitions`) without ever
reading the YAML file; the data files themselves must be on storage the workers see, like the data directory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spot_core.errors import ConfigError
from spot_core.metrics import named_metric
from spot_core.tasks.base import FieldError, Task, TaskDataError, get_task, register
from spot_core.tasks.formats import fields
from spot_core.tasks.loading import examples, read_rows
from spot_core.tasks.source import DataSource
from spot_core.tasks.task_file import read_task_file, split_spec, template_fields

CHECKED_ROWS = 20  # rows of each split read when the file is read; `check_data` reads them all before training
_DEFINITIONS: dict[str, dict[str, Any]] = {}  # registered file tasks: name -> their checked definition


def definition(name: str) -> dict[str, Any] | None:
    """The checked definition of a registered file task (plain data: it pickles, and a worker registers it);
    None for a task defined in Python."""
    return _DEFINITIONS.get(get_task(name).name) if _known(name) else None


def definitions() -> dict[str, dict[str, Any]]:
    """Every file task registered in this process, by name."""
    return dict(_DEFINITIONS)


def fingerprint(name: str) -> str | None:
    """What a file task's results depend on in its definition (template, labels, metrics, split slicing; not where
    its files are): a study's cell key includes it, so that an edited template trains again. None: a Python task."""
    found = definition(name)
    return None if found is None else fingerprint_of(found)


def fingerprint_of(found: dict[str, Any]) -> str:
    """A definition's fingerprint (`fingerprint`)."""
    kept = {k: v for k, v in found.items() if k not in ("source", "notes", "data")}
    kept["splits"] = found["data"].get("splits") or {r: split_spec(v)[1] for r, v in found["data"].items()}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def load_task_file(path: str | Path, data_dir: str | Path | None = None) -> Task:
    """Reads, checks and registers the task a YAML file defines (again for the same definition: the same task).

    Args:
        path: the YAML file.
        data_dir: what `{data_dir}` in its data paths stands for.

    Raises:
        ConfigError: a malformed definition, naming the file and the key.
        TaskDataError: a data file that is missing or whose first rows the task cannot read (file, line, field).
    """
    return register_definition(read_task_file(Path(path), data_dir), check_rows=True, data_dir=data_dir)


def register_definitions(found: Mapping[str, Mapping[str, Any]]) -> None:
    """Registers checked definitions carried from another process (a Ray worker's cells), unless already known."""
    for item in found.values():
        register_definition(dict(item), check_rows=False)


def register_definition(item: dict[str, Any], check_rows: bool = False, data_dir: str | Path | None = None) -> Task:
    """The task of a checked definition, registered once; the same name with another definition is an error.
    `check_rows`: read the first rows of its splits first (from `data_dir`, for a hub dataset's mirror)."""
    name = item["name"]
    if name in _DEFINITIONS:
        if _DEFINITIONS[name] != item:
            raise ConfigError(
                f"task file {item['source']}: task {name!r} is already defined by {_DEFINITIONS[name]['source']} "
                "with another definition in this process: give one of them a new version (name: ..._v2)"
            )
        return get_task(name)
    if _known(name):
        raise ConfigError(f"task file {item['source']}: name: {name!r} is a built-in task; choose another name")
    task = build_task(item)
    if check_rows:
        check_first_rows(task, item, data_dir)
    register(task)
    _DEFINITIONS[name] = item
    return task


def _known(name: str) -> bool:
    try:
        get_task(name)
    except KeyError:
        return False
    return True


# --- the Task ------------------------------------------------------------------------------------------------
def build_task(item: dict[str, Any]) -> Task:
    """The Task of a checked definition: its preprocessor fills the templates from a row."""
    data = item["data"]
    words = item.get("label_words")
    label_set = tuple(dict.fromkeys(words.values())) if words else None
    if "hub" in data:
        files, splits = {}, dict(data["splits"])
        hub = {"hub_id": data["hub"], "hub_config": data.get("config"), "revision": data.get("revision")}
    else:
        paths = list(dict.fromkeys(split_spec(v)[0] for v in data.values()))
        files = {f"file{i}": p for i, p in enumerate(paths)}
        named = {p: n for n, p in files.items()}
        splits = {role: named[split_spec(v)[0]] + split_spec(v)[1] for role, v in data.items()}
        hub = {"hub_id": f"file/{item['name']}", "hub_config": None, "on_hub": False}
    reads = {f: "value" for f in _read_fields(item)}
    return Task(
        name=item["name"],
        splits=splits,
        preprocess=_preprocessor(item),
        metrics=tuple(named_metric(m, label_set) for m in item["metrics"]),
        label_words=label_set,
        max_target_tokens=item["max_target_tokens"],
        family="file",
        notes=item["notes"] or f"Defined in {item['source']}.",
        reads=reads,
        files=files,
        **hub,
    )


def _read_fields(item: dict[str, Any]) -> list[str]:
    names = list(item.get("input_fields") or template_fields(item["inputs"]))
    if "target" in item:
        names += template_fields(item["target"])
    else:
        names.append(item["label_field"])
    return list(dict.fromkeys(names))


def _preprocessor(item: dict[str, Any]):
    base = item["name"].rsplit("_v", 1)[0]
    words, field = item.get("label_words"), item.get("label_field")

    def preprocess(row: dict) -> dict[str, str]:
        if "inputs" in item:
            inputs = item["inputs"].format(**row)
        else:
            inputs = fields(base, row, item["input_fields"])
        if words is None:
            return {"inputs": inputs, "targets": item["target"].format(**row)}
        label = str(row[field]).strip()
        if label not in words:
            raise FieldError(field, f"is {row[field]!r}, not one of the label_words' labels {list(words)}")
        return {"inputs": inputs, "targets": words[label]}

    preprocess.definition = fingerprint_of(item)  # the task cache's key: every file task runs this same code
    return preprocess


def check_first_rows(task: Task, item: dict[str, Any], data_dir: str | Path | None) -> None:
    """Reads the first rows of every split the task reads: a field the templates name that the data lacks, or a
    label outside label_words, is an error naming the task file, the key, the data file and its line."""
    source = DataSource.of(task, data_dir)
    for role in task.splits:
        rows = read_rows(source, role)
        if len(rows) == 0:
            raise TaskDataError(f"task file {item['source']}: data.{role}: no rows in {source.describe(role)}")
        first = rows.select(range(min(CHECKED_ROWS, len(rows))))
        place, row = next(first.located())
        missing = [f for f in task.reads if f not in row]
        if missing:
            raise ConfigError(
                f"task file {item['source']}: {_key_reading(item, missing[0])}: field {missing[0]!r} is not in {place} "
                f"(it has: {', '.join(row) or 'nothing'})"
            )
        try:
            for _ in examples(task, first, role):
                pass
        except TaskDataError as e:
            raise TaskDataError(f"task file {item['source']}: {e}") from None


def _key_reading(item: dict[str, Any], name: str) -> str:
    """The definition's key that reads field `name`."""
    for key in ("inputs", "target"):
        if key in item and name in template_fields(item[key]):
            return key
    return "input_fields" if name in item.get("input_fields", []) else "label_field"
