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
metric names, and the first rows of every split it reads (fields present, labels in the label set). Every error
names the file and the key. The checked definition is plain data (`definition`, file paths made absolute): it
travels with a study's cells to Ray workers on any node, which register it (`register_definitions`) without ever
reading the YAML file; the data files themselves must be on storage the workers see, like the data directory.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from spot_core.errors import ConfigError
from spot_core.metrics import METRIC_NAMES, named_metric
from spot_core.tasks.base import FieldError, Task, TaskDataError, get_task, register
from spot_core.tasks.formats import fields
from spot_core.tasks.loading import examples, load_rows

KEYS = {
    "name": "the versioned task name, like my_reviews_v1",
    "data": "role -> data file, or {hub, config, splits}",
    "inputs": "the input template, fields in braces: 'review: {text}'",
    "input_fields": "the fields shown as 'task field: value' (instead of inputs)",
    "label_field": "the field holding the label (classification)",
    "label_words": "the label words: a list (labels 0..n-1) or a mapping {label: word}",
    "target": "the target template (generation, instead of label_field)",
    "metrics": f"metric names: {', '.join(METRIC_NAMES)}",
    "max_target_tokens": "the longest target in tokens",
    "notes": "a note shown in reports",
}
DATA_KEYS = ("hub", "config", "revision", "splits")
ROLES = ("train", "validation", "test")
SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
CHECKED_ROWS = 20  # rows of each split read when the file is read; `check_data` reads them all before training
_SLICE = re.compile(r"^(?P<path>.+?)(?P<slice>\[[^\]]*\])?$")
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
    kept["splits"] = found["data"].get("splits") or {r: _split_spec(v)[1] for r, v in found["data"].items()}
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
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"task file {path}: cannot read it: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise ConfigError(f"task file {path}: not valid YAML{line}: {getattr(e, 'problem', e)}") from None
    return register_definition(normalise(raw, path, data_dir), check_rows=True, data_dir=data_dir)


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


# --- reading and checking a definition --------------------------------------------------------------------------
def _fail(source: Path | str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"task file {source}: {key}: {problem}")


def normalise(raw: Any, source: Path, data_dir: str | Path | None) -> dict[str, Any]:
    """The definition as plain data with absolute file paths, every key checked (not yet the rows)."""
    if not isinstance(raw, dict):
        keys = ", ".join(KEYS)
        raise ConfigError(f"task file {source}: expected a mapping of keys ({keys}), got {type(raw).__name__}")
    for key in raw:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; keys: {', '.join(KEYS)}"
            raise _fail(source, str(key), f"unknown key{hint}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]+_v\d+", name):
        raise _fail(source, "name", f"must be lower_snake_case ending in a version, like 'my_reviews_v1'; got {name!r}")
    item: dict[str, Any] = {"name": name, "source": str(source.resolve())}
    item["data"] = _data(raw.get("data"), source, data_dir)
    item.update(_io(raw, source))
    item["metrics"] = _metrics(raw.get("metrics", ["accuracy"]), item.get("label_words"), source)
    tokens = raw.get("max_target_tokens", 16)
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        raise _fail(source, "max_target_tokens", f"must be an integer >= 1, got {tokens!r}")
    item["max_target_tokens"] = tokens
    item["notes"] = str(raw.get("notes", ""))
    return item


def _split_spec(value: str) -> tuple[str, str]:
    """`all.jsonl[:90%]` -> (`all.jsonl`, `[:90%]`)."""
    match = _SLICE.match(value.strip())
    return match.group("path"), match.group("slice") or ""


def _data(data: Any, source: Path, data_dir: str | Path | None) -> dict[str, Any]:
    if not isinstance(data, dict) or not data:
        raise _fail(source, "data", "must map train and validation to data files (or name a hub dataset: hub, splits)")
    if "hub" in data:
        unknown = [k for k in data if k not in DATA_KEYS]
        if unknown or not isinstance(data.get("splits"), dict):
            raise _fail(source, "data", f"a hub dataset takes {', '.join(DATA_KEYS)} with splits: role -> split")
        _roles(data["splits"], source, "data.splits")
        return {k: data.get(k) for k in DATA_KEYS}
    _roles(data, source, "data")
    out = {}
    for role, value in data.items():
        if not isinstance(value, str):
            raise _fail(source, f"data.{role}", f"must be a file path, got {value!r}")
        file, rows = _split_spec(value)
        if "{data_dir}" in file:
            if data_dir is None:
                raise _fail(source, f"data.{role}", "uses {data_dir}, but no data directory is set (data_dir=...)")
            file = file.replace("{data_dir}", str(data_dir))
        resolved = (source.parent / file).resolve() if not Path(file).is_absolute() else Path(file)
        if resolved.suffix not in SUFFIXES:
            raise _fail(source, f"data.{role}", f"{file} is not a {', '.join(SUFFIXES)} file")
        if not resolved.is_file():
            raise _fail(source, f"data.{role}", f"no file at {resolved}")
        out[role] = f"{resolved}{rows}"
    return out


def _roles(mapping: dict, source: Path, key: str) -> None:
    unknown = [r for r in mapping if r not in ROLES]
    if unknown:
        raise _fail(source, f"{key}.{unknown[0]}", f"unknown role; use {', '.join(ROLES)}")
    for role in ("train", "validation"):
        if role not in mapping:
            raise _fail(source, key, f"needs a {role} split")


def template_fields(text: str) -> list[str]:
    """The fields a template names, in order (`"r: {text} ({stars})"` -> text, stars).

    Raises:
        ValueError: a malformed template (an unclosed brace).
    """
    return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]


def _template(value: Any, source: Path, key: str) -> list[str]:
    """The fields a template reads."""
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, key, f"must be a non-empty template string, got {value!r}")
    try:
        names = template_fields(value)
    except ValueError as e:
        problem = f"is not a valid template ({e}); fields go in braces, a literal brace is doubled"
        raise _fail(source, key, problem) from None
    bad = [f for f in names if not re.fullmatch(r"[A-Za-z_][\w]*", f)]
    if bad or not names:
        raise _fail(source, key, f"needs fields in braces such as {{text}}, got {bad or 'none'}")
    return names


def _io(raw: dict, source: Path) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if ("inputs" in raw) == ("input_fields" in raw):
        raise _fail(source, "inputs", "give either inputs (a template) or input_fields (a list of fields)")
    if "inputs" in raw:
        item["inputs"] = raw["inputs"]
        _template(raw["inputs"], source, "inputs")
    else:
        names = raw["input_fields"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise _fail(source, "input_fields", f"must be a list of field names, got {names!r}")
        item["input_fields"] = names
    if ("label_field" in raw) == ("target" in raw):
        raise _fail(source, "label_field", "give either label_field with label_words (classification) or target")
    if "target" in raw:
        if "label_words" in raw:
            raise _fail(source, "label_words", "a generation task (target) has no label words")
        item["target"] = raw["target"]
        _template(raw["target"], source, "target")
        return item
    if not isinstance(raw["label_field"], str):
        raise _fail(source, "label_field", f"must be a field name, got {raw['label_field']!r}")
    item["label_field"] = raw["label_field"]
    words = raw.get("label_words")
    if isinstance(words, list):
        words = {str(i): w for i, w in enumerate(words)}
    if not isinstance(words, dict) or len(words) < 2:
        raise _fail(source, "label_words", "needs two or more words: a list (labels 0..n-1) or {label: word}")
    if not all(isinstance(w, str) and w.strip() for w in words.values()):
        raise _fail(source, "label_words", f"must be non-empty strings, got {list(words.values())}")
    item["label_words"] = {str(k): w for k, w in words.items()}
    return item


def _metrics(names: Any, words: dict | None, source: Path) -> list[str]:
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        raise _fail(source, "metrics", f"must be a list of metric names ({', '.join(METRIC_NAMES)})")
    for name in names:
        try:
            named_metric(name, list(dict.fromkeys(words.values())) if words else None)
        except KeyError as e:
            raise _fail(source, "metrics", e.args[0]) from None
    return list(names)


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
        paths = list(dict.fromkeys(_split_spec(v)[0] for v in data.values()))
        files = {f"file{i}": p for i, p in enumerate(paths)}
        named = {p: n for n, p in files.items()}
        splits = {role: named[_split_spec(v)[0]] + _split_spec(v)[1] for role, v in data.items()}
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
    for role in task.splits:
        rows = load_rows(task, role, data_dir)
        if len(rows) == 0:
            raise TaskDataError(f"task file {item['source']}: data.{role}: no rows in {task.splits[role]}")
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
