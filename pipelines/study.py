"""A transfer study: source, target and transfer cells fanned out over Ray Tune, tracked and resumed through MLflow.

python -m pipelines.study                         # study=demo: SmolLM2 on the offline data, 2-core CPU
python -m pipelines.study study=smoke             # a tiny model, seconds
python -m pipelines.study study=spot model=t5-base-lm-adapt ray=cluster tracking=server

Re-running the same command after a crash trains only the cells that have no FINISHED MLflow run with their key;
extending a finished study (more seeds, sources or targets) trains only the new cells.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the driver prints its own progress lines

import hydra  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from ray import tune  # noqa: E402

from pipelines.tracking import MlflowTracker, normalise_uri, open_store  # noqa: E402
from pipelines.train import resolve_data_dir  # noqa: E402
from spot_core.prompt_files import load_prompt  # noqa: E402
from spot_core.similarity import rank_sources  # noqa: E402
from spot_core.study import Cell, Stage, StudyConfig, cell_tags, plan, plan_retrieval, run_spec  # noqa: E402
from spot_core.tasks import check_data  # noqa: E402
from spot_core.tuning import tune_prompt  # noqa: E402

ARTIFACTS = ("best_prompt.safetensors", "task_embedding.safetensors", "result.json")


def build_study(cfg: DictConfig) -> StudyConfig:
    s, m = OmegaConf.to_container(cfg.study, resolve=True), cfg.model
    return StudyConfig(
        **s,
        model=m.name,
        max_input_len=m.max_input_len,
        max_target_len=m.max_target_len,
        data_dir=resolve_data_dir(cfg.data_dir),
        cache_dir=m.cache_dir,
        device=m.device,
        dtype=m.dtype,
    )


# --- the ledger ------------------------------------------------------------------------------------------
def _runs(client: MlflowClient, experiment_id: str, study: str, status: str | None = None) -> list:
    query = f"tags.study = '{study}' and tags.cell_key != ''"
    if status:
        query += f" and attributes.status = '{status}'"
    return client.search_runs([experiment_id], query, max_results=50000)


def finished_keys(client: MlflowClient, experiment_id: str, study: str) -> set[str]:
    return {r.data.tags["cell_key"] for r in _runs(client, experiment_id, study, "FINISHED")}


def parent_run(client: MlflowClient, experiment_id: str, study: StudyConfig, cfg: DictConfig) -> str:
    """The study's parent run (one per study name, reused and set RUNNING again on restarts); the composed
    configuration is its `config` tag."""
    found = client.search_runs([experiment_id], f"tags.study = '{study.name}' and tags.kind = 'study'", max_results=1)
    run_id = (
        found[0].info.run_id
        if found
        else client.create_run(
            experiment_id, run_name=f"study-{study.name}", tags={"study": study.name, "kind": "study", "cell_key": ""}
        ).info.run_id
    )
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "config", OmegaConf.to_yaml(cfg)[:5000])
    return run_id


def abandon_stale(client: MlflowClient, experiment_id: str, study: str) -> int:
    """Child runs left RUNNING by a driver that died: marked KILLED (their cells run again, resuming from
    their own last checkpoint)."""
    stale = _runs(client, experiment_id, study, "RUNNING")
    for r in stale:
        client.set_terminated(r.info.run_id, "KILLED")
    return len(stale)


# --- one cell, in a Ray worker ---------------------------------------------------------------------------
def train_cell(
    config: dict,
    cells: dict[str, Cell],
    study: StudyConfig,
    root: str,
    uri: str,
    experiment_id: str,
    parent_id: str,
    threads: float,
) -> dict:
    cell = cells[config["cell"]]
    client = MlflowClient(uri)
    tags = {**cell_tags(cell, study), "mlflow.parentRunId": parent_id}
    run_id = client.create_run(experiment_id, run_name=cell.label, tags=tags).info.run_id
    out_dir = cell.out_dir(root)
    torch.set_num_threads(max(1, int(threads)))  # the trial's CPU share; more threads would oversubscribe
    try:
        start = time.perf_counter()
        result = tune_prompt(run_spec(study, cell, root), out_dir, MlflowTracker(client, run_id))
        client.log_metric(run_id, "time/cell_seconds", time.perf_counter() - start)
        for name in ARTIFACTS:
            if (out_dir / name).exists():
                client.log_artifact(run_id, str(out_dir / name))
    except BaseException as e:
        client.set_tag(run_id, "error", f"{type(e).__name__}: {e}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return {"best_score": result["best/val_score"]}


class Progress(tune.Callback):
    """Cells done / running / failed / pending for the stages in flight, and an ETA."""

    def __init__(self, cells: list[Cell], concurrency: int):
        self.stage = {c.key: c.stage.value for c in cells}
        self.state = dict.fromkeys(self.stage, "pending")
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.concurrency = concurrency

    def _show(self) -> None:
        counts = Counter((self.stage[k], s) for k, s in self.state.items())
        parts = [
            f"{stage} {counts[stage, 'done']}/{sum(n for (st, _), n in counts.items() if st == stage)} done, "
            f"{counts[stage, 'running']} running, {counts[stage, 'failed']} failed"
            for stage in dict.fromkeys(self.stage.values())
        ]
        left = sum(s in ("pending", "running") for s in self.state.values())
        eta = ""
        if self.durations:
            eta = f"  ETA {left * sum(self.durations) / len(self.durations) / self.concurrency / 60:.1f} min"
        print("  " + " | ".join(parts) + eta, flush=True)

    def _set(self, trial, state: str) -> None:
        key = trial.config["cell"]
        if state == "running":
            self.started[key] = time.monotonic()
        elif key in self.started:
            self.durations.append(time.monotonic() - self.started.pop(key))
        self.state[key] = state
        self._show()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._set(trial, "running")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._set(trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._set(trial, "failed")


def rankings(study: StudyConfig, root: Path, done: set[str]) -> dict[str, list[tuple[Cell, float]]]:
    """Each target's finished source runs, most similar first, from the task embeddings on disk (a target's
    similarity is averaged over its finished runs)."""
    finished = [c for c in plan(study) if c.key in done]
    embedding = lambda c: load_prompt(c.out_dir(root) / "task_embedding.safetensors")[0]  # noqa: E731
    sources = {c.key: (c, embedding(c)) for c in finished if c.stage is Stage.SOURCE}
    out = {}
    for target in study.targets:
        runs = [embedding(c) for c in finished if c.stage is Stage.TARGET and c.task == target]
        if runs and sources:
            ranked = rank_sources(runs, {k: e for k, (_, e) in sources.items()}, study.retrieval_similarity)
            out[target] = [(sources[k][0], sim) for k, sim in ranked]
    return out


def run_group(cells: list[Cell], study: StudyConfig, cfg: DictConfig, ctx: dict, client: MlflowClient) -> dict:
    """Runs the cells not yet finished whose source cells have finished; returns failures (label -> why)."""
    ready = finished_keys(client, ctx["experiment_id"], study.name)
    todo = [c for c in cells if c.key not in ready]
    needs = lambda c: [s for s in [c.source, *(b for b, _ in c.blend)] if s]  # noqa: E731
    blocked = {c.label: f"{s.label} did not finish" for c in todo for s in needs(c) if s.key not in ready}
    return {**blocked, **run_cells([c for c in todo if c.label not in blocked], study, cfg, ctx)}


def run_cells(cells: list[Cell], study: StudyConfig, cfg: DictConfig, ctx: dict) -> dict[str, str]:
    """Runs cells as Ray Tune trials (retries resume from the cell's own checkpoint); returns failures."""
    if not cells:
        return {}
    r = cfg.ray
    trainable = tune.with_resources(
        tune.with_parameters(train_cell, cells={c.key: c for c in cells}, study=study, threads=r.cpus_per_trial, **ctx),
        {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"cell": tune.grid_search([c.key for c in cells])},
        tune_config=tune.TuneConfig(max_concurrent_trials=r.max_concurrent_trials, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{study.name}-{cells[0].stage.value}-{int(time.time())}",
            storage_path=str(Path(ctx["root"]) / "ray"),
            failure_config=tune.FailureConfig(max_failures=r.max_failures),
            callbacks=[Progress(cells, r.max_concurrent_trials or 1)],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    labels = {c.key: c.label for c in cells}
    return {labels[res.config["cell"]]: str(res.error).splitlines()[0] for res in grid if res.error}


def start_ray(cfg: DictConfig) -> None:
    r = cfg.ray
    if r.address:
        ray.init(address=r.address, include_dashboard=False, log_to_driver=r.log_to_driver)
    else:
        ray.init(num_cpus=r.num_cpus, num_gpus=r.num_gpus, include_dashboard=False, log_to_driver=r.log_to_driver)
    gpus = ray.cluster_resources().get("GPU", 0)
    if r.gpus_per_trial > gpus:
        ray.shutdown()
        raise RuntimeError(
            f"ray.gpus_per_trial={r.gpus_per_trial} but the Ray cluster has {gpus:g} GPUs: lower it (0 for CPU "
            "trials, a fraction to share a GPU) or start the workers on GPU nodes."
        )


def run(cfg: DictConfig) -> dict[str, Any]:
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    study = build_study(cfg)  # unknown tasks, bad values: fail here
    for name in [*study.sources, *study.targets]:
        check_data(name, study.data_dir)  # missing data: fail here, before the store, Ray or a model
    stages = [Stage(s) for s in cfg.stages]  # `retrieval` includes its mixture prompts
    uri = normalise_uri(cfg.tracking.uri)
    client, experiment_id = open_store(uri, cfg.tracking.experiment)  # unreachable server: fail here
    root = Path(cfg.out_dir).resolve()
    cells = [c for c in plan(study) if c.stage in stages]
    start_ray(cfg)  # too few GPUs: fail here
    parent_id = parent_run(client, experiment_id, study, cfg)
    abandon_stale(client, experiment_id, study.name)
    before = finished_keys(client, experiment_id, study.name)
    ctx = {"root": str(root), "uri": uri, "experiment_id": experiment_id, "parent_id": parent_id}
    skipped = sum(c.key in before for c in cells)
    retrieval = (
        " (retrieval cells are planned once sources and targets have finished)" if Stage.RETRIEVAL in stages else ""
    )
    print(f"study {study.name}: {len(cells)} cells, {skipped} already finished{retrieval}", flush=True)
    failed: dict[str, str] = {}
    try:
        for group in ((Stage.SOURCE, Stage.TARGET), (Stage.TRANSFER,)):  # transfers need their source prompts
            failed.update(run_group([c for c in cells if c.stage in group], study, cfg, ctx, client))
        if Stage.RETRIEVAL in stages:
            ranked = rankings(study, root, finished_keys(client, experiment_id, study.name))
            missing = [t for t in study.targets if t not in ranked]
            failed.update({f"retrieval:{t}": "no finished source and target runs to rank" for t in missing})
            retrieval = plan_retrieval(study, ranked)
            cells += retrieval
            for stage in (Stage.RETRIEVAL_MIXTURE, Stage.RETRIEVAL):
                failed.update(run_group([c for c in retrieval if c.stage is stage], study, cfg, ctx, client))
    finally:
        ray.shutdown()
    done = finished_keys(client, experiment_id, study.name)
    summary = {
        "study": study.name,
        "cells": len(cells),
        "finished": sum(c.key in done for c in cells),
        "trained_now": len({c.key for c in cells} & (done - before)),
        "failed": failed,
        "parent_run_id": parent_id,
        "out_dir": str(root),
    }
    client.set_terminated(parent_id, "FINISHED" if not failed else "FAILED")
    return summary


@hydra.main(config_path="../conf", config_name="study", version_base="1.3")
def main(cfg: DictConfig) -> None:
    summary = run(cfg)
    print(
        f"study {summary['study']}: {summary['finished']}/{summary['cells']} cells finished "
        f"({summary['trained_now']} trained now); MLflow parent run {summary['parent_run_id']}"
    )
    for label, why in summary["failed"].items():
        print(f"  FAILED {label}: {why}")
    if summary["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
