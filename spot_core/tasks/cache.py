"""Tokenised task splits cached on disk, so the hundreds of runs of a study tokenise each task once.

The key hashes everything that determines the token ids: the task (versioned name, split spec, the source
of its preprocessor), the data (its `DataSource.identity`: the contents of the mirror files read, so a fallback
configuration read in place of the task's own gets entries of its own; or hub id / config / revision), the row
limit, the tokenizer and the codec's settings. A cache entry is written beside its final place and renamed, so a
concurrent worker never reads half of one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import datasets
from datasets.fingerprint import Hasher
from datasets.utils import are_progress_bars_disabled as progress_bars_disabled
from datasets.utils import disable_progress_bars, enable_progress_bars

from spot_core.encoding import Codec, Encoded, encode_examples
from spot_core.run_dir import follow_umask
from spot_core.tasks.base import Task
from spot_core.tasks.loading import read_examples
from spot_core.tasks.source import DataSource

CACHE_FORMAT = 3  # 2: `limit` samples rows with a fixed seed; 3: decoder-only inputs keep the tokenizer's <bos>


def _source_code(fn) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return repr(fn)


def cache_key(source: DataSource, role: str, codec: Codec, limit: int | None) -> str:
    """The key of one role's tokenised examples: what determines their token ids, hashed."""
    task = source.task
    parts = {
        "format": CACHE_FORMAT,
        "task": task.name,
        "role": role,
        "spec": source.splits[role],
        "code": [_source_code(f) for f in (task.preprocess, task.train_filter) if f is not None],
        "definition": getattr(task.preprocess, "definition", None),  # a file task's: its preprocessor is shared code
        "source": source.identity(role),
        "limit": limit,
        "tokenizer": Hasher.hash(codec.tokenizer),
        "codec": [codec.is_encoder_decoder, codec.max_input_tokens, codec.max_target_tokens],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _to_dataset(rows: list[Encoded]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "input_ids": [r.input_ids for r in rows],
            "target_ids": [r.target_ids for r in rows],
            "target": [r.target for r in rows],
            "reference": [json.dumps(r.reference) for r in rows],
        }
    )


def _from_dataset(ds: datasets.Dataset) -> list[Encoded]:
    cols = ds.to_dict()
    return [
        Encoded(i, t, s, json.loads(r))
        for i, t, s, r in zip(cols["input_ids"], cols["target_ids"], cols["target"], cols["reference"], strict=True)
    ]


def encoded_split(
    task: Task,
    role: str,
    data_dir: str | Path | None,
    codec: Codec,
    limit: int | None = None,
    cache_dir: str | Path | None = None,
) -> list[Encoded]:
    """One role's examples, preprocessed and tokenised; read from `cache_dir` when cached there, else made
    and cached. `cache_dir` None: no cache. `limit`: a fixed-seed sample of that many rows."""
    source = DataSource.of(task, data_dir)
    if cache_dir is None:
        return encode_examples(codec, read_examples(source, role, limit))
    path = Path(cache_dir) / "tokenized" / task.name / cache_key(source, role, codec, limit)
    if (path / "dataset_info.json").is_file():
        return _from_dataset(datasets.load_from_disk(str(path)))
    rows = encode_examples(codec, read_examples(source, role, limit))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
    shown = not progress_bars_disabled()
    disable_progress_bars()  # one bar per cached split would drown a run's output
    try:
        _to_dataset(rows).save_to_disk(str(tmp))
        follow_umask(tmp)  # mkdtemp's folder is owner-only
        os.replace(tmp, path)
    except OSError:
        if not (path / "dataset_info.json").is_file():  # not a concurrent worker that got there first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if shown:
            enable_progress_bars()
    return rows
