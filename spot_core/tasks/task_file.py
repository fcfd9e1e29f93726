"""A task file read and checked into its definition: plain data with absolute file paths, every key checked (the
format: `spot_core.tasks.definitions`). Every error is one line naming the file and the key."""

from __future__ import annotations

import difflib
import re
import string
from pathlib import Path
from typing import Any

import yaml

from spot_core.errors import ConfigError
from spot_core.metrics import METRIC_NAMES, named_metric

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
_SLICE = re.compile(r"^(?P<path>.+?)(?P<slice>\[[^\]]*\])?$")


def read_task_file(path: Path, data_dir: str | Path | None) -> dict[str, Any]:
    """The checked definition of a YAML task file (not yet its rows); `data_dir`: what `{data_dir}` stands for."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"task file {path}: cannot read it: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(
            f"task file {path}: not valid YAML{_yaml_problem(e)}. Fix it: a value holding ': ' or ' #', or starting "
            "with [, {, * or &, goes in quotes (docs/tasks.md shows a whole task file)"
        ) from None
    return normalise(raw, path, data_dir)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """` (line 5): found unexpected end of stream, while scanning a quoted scalar from line 3`: where PyYAML saw
    the problem, and where what it was reading began (an unclosed quote or bracket: often the line to fix)."""
    where, began = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
    line = f" (line {where.line + 1})" if where else ""
    context = f", {error.context} from line {began.line + 1}" if began and getattr(error, "context", None) else ""
    return f"{line}: {getattr(error, 'problem', None) or error}{context}"


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


def split_spec(value: str) -> tuple[str, str]:
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
        file, rows = split_spec(value)
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
    _distinct(words, source)
    item["label_words"] = {str(k): w for k, w in words.items()}
    return item


def _distinct(words: dict, source: Path) -> None:
    """Refuses a word shared by two labels: rank classification could not tell them apart, and a prediction of
    that word would count as right for both (accuracy 100 %)."""
    seen: dict[str, Any] = {}
    for label, word in words.items():
        if word.strip() in seen:
            raise _fail(
                source,
                "label_words",
                f"{word!r} is the word of labels {seen[word.strip()]} and {label}: give each label its own word",
            )
        seen[word.strip()] = label


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
