"""A study's source prompts as a portable library folder (spot_core.library), and its checks.

python -m pipelines.library study=demo library=outputs/library/demo   # the study's finished source runs
python -m pipelines.library runs=[RUN_ID,RUN_ID] library=PATH          # any finished tuning runs of the store
python -m pipelines.library action=verify library=PATH                 # every file against its sha256
python -m pipelines.library action=merge libraries=[A,B] library=OUT   # the union of libraries

Export reads the tracking store only: the prompt files are the runs' MLflow artifacts (the trainer logs the best,
initial and task-embedding prompts), the neuron masks the artifacts of the study's neurons runs. A file a run did
not log is read from its run folder (its `out_dir` tag, or the cell's folder under out_dir), and the entry's
provenance says so (`files_from`). Everything is checked, and every file fetched, before the library is written;
exporting into a library adds to it, and the same runs again change nothing.
"""

from __future__ import annotations

import json
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipelines.deprecated import upgrade
from pipelines.errors import entry_point
from pipelines.ledger import (
    best_metrics,
    download,
    finished_runs,
    neurons_file,
    parent_config,
    parent_id,
    run_of,
    study_of,
    study_parent,
)
from pipelines.paths import check_writable, resolve_data_dir
from pipelines.tracking import Client, TrackingError, normalise_uri, open_store
from pipelines.user_tasks import definition_finder
from spot_core.config import parse_choice
from spot_core.errors import ConfigError
from spot_core.library import PROMPT_FILES, Change, Definition, Entry, Library, SourceRun, merge, no_definition, write
from spot_core.prompt_files import load_prompt
from spot_core.run_dir import RunDir
from spot_core.tags import Stage

ARTIFACT = "artifact"  # provenance.files_from: the file came from the run's MLflow artifacts
# provenance.data: the data limits every cell's key holds (spot_core.study.data_limits), where the study's
# composed configuration has them
DATA_LIMITS = {
    "max_input_tokens": "model.max_input_tokens",
    "max_target_tokens": "model.max_target_tokens",
    "max_train_examples": "study.max_train_examples",
    "max_eval_examples": "study.max_eval_examples",
}
DATA_PARAMS = ("data_source", "train_split", "validation_split")  # a tuning run's params (tuning.data_record)


class Action(StrEnum):
    EXPORT = "export"
    VERIFY = "verify"
    MERGE = "merge"


def run(cfg: DictConfig) -> dict[str, Any]:
    upgrade(cfg)
    action = parse_choice(Action, cfg.action, "action")
    if action is Action.EXPORT:  # entries of task-file tasks carry the task's definition
        return export(cfg, definition_finder(cfg, resolve_data_dir(cfg.data_dir)))
    return {Action.VERIFY: verify, Action.MERGE: join}[action](cfg)


def export(cfg: DictConfig, definition: Definition = no_definition) -> dict[str, Any]:
    """The study's finished source runs (or `runs`) into the library: the library (if any), the store and the runs
    are checked and every file fetched before anything is written. `definition(task)`: a user-written task's
    definition for its entries (spot_core.library.Entry.task_definition)."""
    uri = normalise_uri(cfg.tracking.uri)
    path = check_writable(cfg.library, "library")
    Library.open(path, create=True)  # an existing library must verify before it is added to
    client, experiment_id = open_store(uri, cfg.tracking.experiment, create=False)
    runs = chosen_runs(client, experiment_id, cfg.study.name, cfg.get("runs"), uri)
    facts: dict[str, dict[str, Any]] = {}  # per parent run: what the study says of its runs
    with tempfile.TemporaryDirectory() as tmp:
        sources = [source_run(client, r, tmp, study_facts(client, r, facts), uri, cfg.out_dir) for r in runs]
        library, changes = write(path, sources, definition)
    fallbacks = [
        f"{s.provenance['run_id']}: {name} not logged as an artifact, read from {origin}"
        for s in sources
        for name, origin in s.provenance["files_from"].items()
        if origin != ARTIFACT
    ]
    return summary(library, changes) | {"study": None if cfg.get("runs") else cfg.study.name, "fallbacks": fallbacks}


def chosen_runs(client: Client, experiment_id: str, study: str, run_ids: Any, uri: str) -> list:
    """The runs to export: the given ones (finished), or the study's finished source runs (at least one)."""
    if run_ids:
        return [finished_run(client, str(run_id), uri) for run_id in run_ids]
    study_parent(client, experiment_id, study)  # no such study: a TrackingError naming those there are
    runs = [r for r in finished_runs(client, experiment_id, study) if r.data.tags["stage"] == Stage.SOURCE]
    if not runs:
        raise TrackingError(
            f"study {study!r} has no finished source runs in {uri}: run its source stage first "
            f"(make study ARGS='study.name={study} stages=[source]'), or name runs=[RUN_ID,...]"
        )
    return runs


def finished_run(client: Client, run_id: str, uri: str):
    found = run_of(client, run_id)
    if found is None:
        raise ConfigError(f"runs: no run {run_id!r} in the tracking store {uri}")
    if found.info.status != "FINISHED":
        raise ConfigError(f"runs: run {run_id} is {found.info.status}, not FINISHED: only finished runs are exported")
    return found


def study_facts(client: Client, run, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the run's study says of it: the task-embedding kind it retrieves with and the data limits of its
    composed configuration (none for a run outside a study). `cache`: per parent run, its runs share it."""
    key = parent_id(run)
    if key not in cache:
        parent = study_of(client, run)
        if parent is None:
            cache[key] = {"task_embedding": "prompt", "data": {}}
        else:
            config = OmegaConf.create(parent_config(client, parent) or "{}")
            data = {
                name: OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
                for name, key in DATA_LIMITS.items()
            }
            cache[key] = {"task_embedding": parent.data.tags.get("task_embedding", "prompt"), "data": data}
    return cache[key]


def source_run(client: Client, run, tmp: str, facts: dict[str, Any], uri: str, out_dir: str) -> SourceRun:
    """A finished tuning run as a library's SourceRun: its prompt files fetched under `tmp`."""
    run_id, tags, params, metrics = run.info.run_id, run.data.tags, run.data.params, run.data.metrics
    label = run.info.run_name or run_id
    if "best/val_score" not in metrics:
        raise TrackingError(f"run {run_id} ({label}) has no best/val_score: not a finished prompt-tuning run")
    files, origins = {}, {}
    for name in PROMPT_FILES:
        fetched = download(client, run, name, tmp)
        if fetched is not None:
            files[name], origins[name] = fetched, ARTIFACT
            continue
        local = run_folder(run, out_dir)
        if local is None or not (local / name).is_file():
            where = f"nor does its run folder {local}" if local else "and its run folder is not found under out_dir"
            hint = " (a run saves it only with trainer.embedding_step set)" if name == RunDir.TASK_EMBEDDING else ""
            raise TrackingError(f"run {run_id} ({label}) logged no {name}{hint}, {where}")
        files[name], origins[name] = local / name, str(local)
    mask = neurons_file(client, run, tmp)
    if mask is not None:
        files[RunDir.NEURONS] = mask
    trainer = {k.removeprefix("trainer."): plain(v) for k, v in params.items() if k.startswith("trainer.")}
    return SourceRun(
        files=files,
        task=params.get("task_version") or tags["task"],
        model=tags.get("model") or params["model"],
        seed=int(params.get("seed", tags.get("seed", 0))),
        init=params.get("prompt.init", ""),
        steps=int(metrics.get("final/step", trainer.get("steps", 0))),
        embedding_step=int(load_prompt(files[RunDir.TASK_EMBEDDING])[1]["step"]),
        score=float(metrics["best/val_score"]),
        metrics=best_metrics(client, run),
        task_embedding=facts["task_embedding"],
        provenance={
            "study": tags.get("study"),
            "cell_key": tags.get("cell_key"),
            "run_id": run_id,
            "experiment_id": run.info.experiment_id,
            "tracking_uri": uri,
            "stage": tags.get("stage"),
            "trainer": trainer,
            "data": facts["data"] | {name: params.get(name) for name in DATA_PARAMS},
            "files_from": origins,
        },
    )


def run_folder(run, out_dir: str) -> Path | None:
    """Where the run wrote its files: its `out_dir` tag (pipelines.train), or its cell's folder under the study's
    out_dir (<stage>/<name>-<cell key>, spot_core.study.Cell.out_dir)."""
    tags = run.data.tags
    if tags.get("out_dir"):
        return Path(tags["out_dir"])
    if tags.get("cell_key") and tags.get("stage"):
        found = sorted((Path(out_dir) / tags["stage"]).glob(f"*-{tags['cell_key']}"))
        return found[0] if found else None
    return None


def plain(value: str) -> Any:
    """An MLflow param (a string) as the value it was: numbers, booleans and None back from their str()."""
    text = {"None": "null", "True": "true", "False": "false"}.get(value, value)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return value


def verify(cfg: DictConfig) -> dict[str, Any]:
    library = Library.open(cfg.library, verify=False)  # verified next, counting the files
    return summary(library, [(e, Change.KEPT) for e in library.entries]) | {"files": library.verify()}


def join(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.libraries:
        raise ConfigError("libraries: name the libraries to merge, e.g. libraries=[outputs/library/a,/mnt/b]")
    library, changes = merge(list(cfg.libraries), check_writable(cfg.library, "library"))
    return summary(library, changes) | {"files": sum(len(e.files) for e in library.entries)}


def summary(library: Library, changes: list[tuple[Entry, Change]]) -> dict[str, Any]:
    counts = {change.value: sum(c is change for _, c in changes) for change in Change}
    return {"library": str(library.root), "entries": len(library.entries), "changes": changes, **counts}


def describe(entry: Entry) -> str:
    neurons = ", neurons" if RunDir.NEURONS in entry.files else ""
    return f"{entry.id}  {entry.task} on {entry.model}, seed {entry.seed}: score {entry.score:.2f}{neurons}"


@entry_point("library")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    action = parse_choice(Action, cfg.action, "action")
    for entry, change in result["changes"]:
        print(f"{'ok' if action is Action.VERIFY else change.value:<9} {describe(entry)}")
    for line in result.get("fallbacks", []):
        print(f"note: {line}")
    if action is Action.VERIFY:
        print(f"library {result['library']}: {result['entries']} entries, all {result['files']} files verified")
    else:
        what = f" from study {result['study']}" if result.get("study") else ""
        print(
            f"library {result['library']}: {result['entries']} entries; {result['added']} added, "
            f"{result['completed']} completed, {result['kept']} already there{what}"
        )


if __name__ == "__main__":
    main()
