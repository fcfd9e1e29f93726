"""A split's rows, each with the place it came from (a mirror file's line, a hub split's row), and the check of a
row against the fields its task reads.

A mirror file is JSON lines: one JSON object per line. Blank lines (empty, or only whitespace) are skipped, as
`datasets` skips them; line numbers count every line from 1, blank ones included, as an editor shows them. Lines
are parsed when they are read, so a sample of a large file parses only its sample (`check_data` reads them all).
A line that is not a JSON object, a row without a field its task reads, or with a value of another kind, is a
`RowError` naming the place, which the loader turns into a TaskDataError naming the task too.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from spot_core.tasks.base import KINDS


class RowError(Exception):
    """A row that cannot be used, at `place` ("line 3 of <file>"); `field` names the field where one is at fault."""

    def __init__(self, place: str, problem: str, field: str | None = None):
        super().__init__(f"{place}{problem}")
        self.place, self.problem, self.field = place, problem, field


@dataclass(frozen=True)
class Part:
    """Rows of one source: a mirror file's raw lines (`records` bytes) or a hub split (`records` a Dataset)."""

    source: str  # the file's path, or "hub <id> (<config>) split '<name>'"
    records: Sequence  # list[bytes] (a file's non-blank lines) or datasets.Dataset
    numbers: np.ndarray  # the 1-based line (file) or row (hub) number of each record

    @property
    def is_file(self) -> bool:
        return not isinstance(self.records, datasets.Dataset)

    def place(self, number: int) -> str:
        return f"line {number} of {self.source}" if self.is_file else f"row {number} of {self.source}"

    def select(self, positions: np.ndarray) -> Part:
        if self.is_file:
            return Part(self.source, [self.records[i] for i in positions], self.numbers[positions])
        return Part(self.source, self.records.select(positions.tolist()), self.numbers[positions])

    def holds(self, values: Mapping[str, Any]) -> np.ndarray:
        """Whether each record's fields hold `values` (field -> value), [len(records)] bool. A record without one
        of the fields raises RowError."""
        keep = np.ones(len(self.records), dtype=bool)
        if not self.is_file:
            names = self.records.column_names
            for name, value in values.items():
                if name not in names:
                    raise RowError(
                        self.place(int(self.numbers[0])),
                        f" lacks field {name!r} (the row has: {', '.join(names)})",
                        name,
                    )
                column = self.records.with_format("arrow")[name].to_pylist()  # not Column's slow iteration
                keep &= np.fromiter((v == value for v in column), dtype=bool, count=len(column))
            return keep
        for i, (place, row) in enumerate(self.located()):
            for name, value in values.items():
                if name not in row:
                    raise RowError(place, f" lacks field {name!r} (the row has: {', '.join(row) or 'nothing'})", name)
                keep[i] &= row[name] == value
        return keep

    def located(self) -> Iterator[tuple[str, dict]]:
        if not self.is_file:
            yield from zip(map(self.place, self.numbers.tolist()), self.records, strict=True)
            return
        for number, line in zip(self.numbers.tolist(), self.records, strict=True):
            place = self.place(number)
            try:
                row = json.loads(line)
            except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
                raise RowError(place, f" is not valid JSON ({e})") from None
            if not isinstance(row, dict):
                raise RowError(place, f" holds {_kind(row)}, not a JSON object (one row per line)")
            yield place, row


class Rows:
    """The rows of a split spec (`train[:90%]`, `train_r1+train_r2`): len, `select(indices)` and iteration as
    `datasets.Dataset` has them (rows as dicts, `rows["field"]` a column), plus `located()`: (place, row) pairs."""

    def __init__(self, parts: Sequence[Part]):
        self.parts = [p for p in parts if len(p.records)]

    @classmethod
    def from_file(cls, path: Path) -> Rows:
        """A JSON-lines file's rows: its non-blank lines, unparsed; a CSV or TSV file's (`from_table`)."""
        if path.suffix in (".csv", ".tsv"):
            return cls.from_table(path)
        lines = path.read_bytes().split(b"\n")
        keep = [i for i, line in enumerate(lines) if line.strip()]
        return cls([Part(str(path), [lines[i] for i in keep], np.asarray(keep, dtype=np.int64) + 1)])

    @classmethod
    def from_table(cls, path: Path) -> Rows:
        """A CSV (`.csv`) or tab-separated (`.tsv`) file with a header line: each record a row of strings, numbered by
        the line it starts on (a quoted field may span lines). A record with more or fewer fields than the header
        is a RowError naming its line."""
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            header = next(reader, None)
            records, numbers, start = [], [], reader.line_num + 1
            for values in reader:
                if any(v.strip() for v in values):
                    if len(values) != len(header):
                        raise RowError(
                            f"line {start} of {path}", f" has {len(values)} fields, the header {len(header)}"
                        )
                    records.append(json.dumps(dict(zip(header, values, strict=True))).encode())
                    numbers.append(start)
                start = reader.line_num + 1
        return cls([Part(str(path), records, np.asarray(numbers, dtype=np.int64))])

    @classmethod
    def from_dataset(cls, rows: datasets.Dataset, source: str) -> Rows:
        return cls([Part(source, rows, np.arange(1, len(rows) + 1, dtype=np.int64))])

    @classmethod
    def concat(cls, parts: Sequence[Rows]) -> Rows:
        return cls([p for rows in parts for p in rows.parts])

    def __len__(self) -> int:
        return sum(len(p.records) for p in self.parts)

    def select(self, indices: Sequence[int]) -> Rows:
        """The rows at `indices` (in that order), as `Dataset.select`."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            return Rows([])
        bounds = np.cumsum([0, *(len(p.records) for p in self.parts)])
        if idx.min() < 0 or idx.max() >= bounds[-1]:
            raise IndexError(f"row index out of range 0..{bounds[-1] - 1}")
        which = np.searchsorted(bounds, idx, side="right") - 1
        runs = np.flatnonzero(np.diff(which)) + 1  # where the part changes
        out = []
        for start, stop in zip([0, *runs.tolist()], [*runs.tolist(), len(idx)], strict=True):
            k = int(which[start])
            out.append(self.parts[k].select(idx[start:stop] - bounds[k]))
        return Rows(out)

    def where(self, values: Mapping[str, Any]) -> Rows:
        """The rows whose fields hold `values` (field -> value), in order, each keeping its place (its line or row
        number in the whole split). A row without one of the fields, or a line that is not a JSON object, raises
        RowError."""
        return Rows([p.select(np.flatnonzero(p.holds(values))) for p in self.parts])

    def located(self) -> Iterator[tuple[str, dict]]:
        """(place, row) of every row; a line that is not a JSON object raises RowError."""
        for part in self.parts:
            yield from part.located()

    def __iter__(self) -> Iterator[dict]:
        return (row for _, row in self.located())

    def __getitem__(self, key: str) -> list[Any]:
        return [row[key] for row in self]

    def dataset(self) -> datasets.Dataset:
        """The rows as one Dataset (a hub split's keep their features)."""
        if self.parts and not any(p.is_file for p in self.parts):
            return datasets.concatenate_datasets([p.records for p in self.parts])
        return datasets.Dataset.from_list(list(self))


@functools.lru_cache(maxsize=256)
def _compiled(reads: tuple[tuple[str, str], ...]) -> list[tuple[str, tuple[str, ...], str, Any]]:
    return [(name, tuple(name.split(".")), *KINDS[kind]) for name, kind in reads]


def check_row(row: dict, reads: Mapping[str, str], place: str) -> None:
    """Raises RowError unless `row` has every field of `reads` (`a.b`: field b of the record a), not null, of its
    kind (KINDS)."""
    for name, path, what, ok in _compiled(tuple(reads.items())):
        value: Any = row
        for i, key in enumerate(path):
            if not isinstance(value, dict) or key not in value:
                has = ", ".join(value) if isinstance(value, dict) else _kind(value)
                whose = "the row" if i == 0 else f"{'.'.join(path[:i])!r}"
                raise RowError(place, f" lacks field {name!r} ({whose} has: {has or 'nothing'})", name)
            value = value[key]
        if value is None:
            raise RowError(place, f": field {name!r} is null; the task reads it as {what}", name)
        if not ok(value):
            raise RowError(place, f": field {name!r} is {_kind(value)}, but the task reads it as {what}", name)


def _kind(value: Any) -> str:
    """A JSON value as a message shows it: `"1" (a string)`."""
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
    }
    text = json.dumps(value, ensure_ascii=False, default=str)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} ({names.get(type(value), type(value).__name__)})"
