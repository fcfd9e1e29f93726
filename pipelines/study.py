"""A transfer study: its cells (SPoT's grid and retrieval, Su et al.'s zero-shot, neurons and cross-model stages)
fanned out over Ray Tune, tracked and resumed through MLflow; what one cell does is in `pipelines.cells`.

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the driver prints its own progress lines
os.environ.setdefault("MALLOC_ARENA_MAX", "2")  # local trial workers inherit it: fewer heap arenas to bloat

import hydra  # noqa: E402
import ray  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.logger import JsonLoggerCallback  # noqa: E402

from pipelines.cells import (  # noqa: E402
    CROSS_STAGES,
    REPORT,
    TRAINING,
    cell_config,
    parse_stages,
    plan_stages,
    reason,
    retrieval_planner,
    runnable,
    train_cell,
)
from pipelines.report import load_results  # noqa: E402
from pipelines.scheduler import CellScheduler  # noqa: E402
from pipelines.tracking import normalise_uri, open_store  # noqa: E402
from pipelines.train import resolve_data_dir  # noqa: E402
from spot_core.backbones import check_backbone  # noqa: E402
from spot_core.report.study import write_report  # noqa: E402
from spot_core.study import Cell, Stage, StudyConfig  # noqa: E402
from spot_core.tasks import check_data  # noqa: E402


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
        prompt_once=m.get("prompt_once"),
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
    """The study's parent run (one per study name, reused and set RUNNING again on restarts), with the composed
    configuration (`config.yaml`) and the design's order of sources and targets (tags) for the report."""
    found = client.search_runs([experiment_id], f"tags.study = '{study.name}' and tags.kind = 'study'", max_results=1)
    run_id = (
        found[0].info.run_id
        if found
        else client.create_run(
            experiment_id, run_name=f"study-{study.name}", tags={"study": study.name, "kind": "study", "cell_key": ""}
        ).info.run_id
    )
    client.update_run(run_id, status="RUNNING")
    config = OmegaConf.to_yaml(cfg)
    client.set_tag(run_id, "config", config[:5000])
    client.log_text(run_id, config, "config.yaml")
    for name, value in (
        ("sources", ",".join(study.sources)),
        ("targets", ",".join(study.targets)),
        ("retrieval_similarity", str(study.retrieval_similarity)),
        ("task_embedding", study.task_embedding),
    ):
        client.set_tag(run_id, name, value)
    return run_id


def abandon_stale(client: MlflowClient, experiment_id: str, study: str) -> int:
    """Child runs left RUNNING by a driver that died: marked KILLED (their cells run again, resuming from
    their own last checkpoint)."""
    stale = _runs(client, experiment_id, study, "RUNNING")
    for r in stale:
        client.set_terminated(r.info.run_id, "KILLED")
    return len(stale)


# --- running the cells ------------------------------------------------------------------------------------
def run_cells(
    cells: list[Cell],
    stages: list[Stage],
    study: StudyConfig,
    cfg: DictConfig,
    root: Path,
    ctx: dict,
    finished: set[str],
) -> tuple[list[Cell], dict[str, str]]:
    """Runs the cells in one Tuner, each when its inputs are done (retries resume from the cell's own
    checkpoint); returns the retrieval cells it planned (finished ones included) and the failures."""
    r = cfg.ray
    scheduler = CellScheduler(
        cells,
        finished,
        lambda c: cell_config(c, study, root),
        retrieval_planner(study, root) if Stage.RETRIEVAL in stages else None,
        concurrency=r.max_concurrent_trials or 1,
        show=lambda line: print(line, flush=True),
    )
    trainable = tune.with_resources(
        tune.with_parameters(train_cell, threads=r.cpus_per_trial, **ctx),
        {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=scheduler,
            num_samples=-1,
            max_concurrent_trials=r.max_concurrent_trials,
            reuse_actors=True,
            trial_name_creator=lambda t: t.config["label"],
            trial_dirname_creator=lambda t: f"cell-{t.config['cell']}",
        ),
        run_config=tune.RunConfig(
            name=f"{study.name}-{int(time.time())}",
            storage_path=str(root / "ray"),
            failure_config=tune.FailureConfig(max_failures=r.max_failures),
            callbacks=[JsonLoggerCallback()],  # Tune's CSV and TensorBoard loggers cost time per trial
            verbose=0,
        ),
    )
    grid = tuner.fit() if scheduler.cells else []
    failed = dict(scheduler.why)
    failed.update({res.config["label"]: reason(res.error) for res in grid if res.error})
    return scheduler.planned, failed


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
    """Trains the stages asked for (only cells without a FINISHED run), then writes the report if asked."""
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    study = build_study(cfg)  # unknown tasks, bad values: fail here
    stages = parse_stages(cfg.stages)
    for name in [*study.sources, *study.targets]:
        check_data(name, study.data_dir)  # missing data: fail here, before the store, Ray or a model
    for model in [study.model] + ([study.cross_model.model] if study.cross_model and CROSS_STAGES[0] in stages else []):
        # an unknown or uninstalled model, or prompt_once on an encoder-decoder one: fail here too
        check_backbone(model, study.cache_dir, study.prompt_once if model == study.model else None)
    uri, root = normalise_uri(cfg.tracking.uri), Path(cfg.out_dir).resolve()
    summary: dict[str, Any] = {"study": study.name, "out_dir": str(root), "failed": {}}
    if stages:
        summary.update(train(cfg, study, stages, uri, root))
    if REPORT in cfg.stages:  # also for a partial study: missing cells show as missing
        results = load_results(uri, cfg.tracking.experiment, study.name)
        summary["report"] = str(write_report(results, root / "report")[0])
    return summary


def train(cfg: DictConfig, study: StudyConfig, stages: list[Stage], uri: str, root: Path) -> dict[str, Any]:
    cells = plan_stages(study, stages)
    with ThreadPoolExecutor(1) as pool:  # a new sqlite store's migrations (~2 s) run while Ray starts
        store = pool.submit(open_store, uri, cfg.tracking.experiment)
        start_ray(cfg)  # too few GPUs: fail here
        try:
            client, experiment_id = store.result()  # unreachable server: fail here
        except BaseException:
            ray.shutdown()
            raise
    parent_id = parent_run(client, experiment_id, study, cfg)
    abandon_stale(client, experiment_id, study.name)
    before = finished_keys(client, experiment_id, study.name)
    ctx = {"uri": uri, "experiment_id": experiment_id, "parent_id": parent_id}
    later = " (retrieval cells are planned once sources and targets have finished)" if Stage.RETRIEVAL in stages else ""
    print(f"study {study.name}: {len(cells)} cells, {sum(c.key in before for c in cells)} already finished{later}")
    todo, unrunnable = runnable([c for c in cells if c.key not in before], before)
    try:
        planned, failed = run_cells(todo, stages, study, cfg, root, ctx, before)
    finally:
        ray.shutdown()
    failed.update(unrunnable)
    cells += planned
    done = finished_keys(client, experiment_id, study.name)
    if set(TRAINING) <= set(stages):
        client.set_tag(parent_id, "cells", str(len(cells)))  # the whole design, for the report's coverage line
    client.set_terminated(parent_id, "FINISHED" if not failed else "FAILED")
    return {
        "cells": len(cells),
        "finished": sum(c.key in done for c in cells),
        "trained_now": len({c.key for c in cells} & (done - before)),
        "failed": failed,
        "parent_run_id": parent_id,
    }


def name_sweep_job(cfg: DictConfig) -> None:
    """In a Hydra multirun each job is its own study (parent run, ledger scope, out_dir and report), named after
    the values it sweeps: `study.prompt_length=20,100` gives demo-study.prompt_length=20 and ...=100."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is RunMode.MULTIRUN and hydra_cfg.job.override_dirname:
        cfg.study.name = f"{cfg.study.name}-{hydra_cfg.job.override_dirname}"


@hydra.main(config_path="../conf", config_name="study", version_base="1.3")
def main(cfg: DictConfig) -> None:
    name_sweep_job(cfg)
    summary = run(cfg)
    if "cells" in summary:
        print(
            f"study {summary['study']}: {summary['finished']}/{summary['cells']} cells finished "
            f"({summary['trained_now']} trained now); MLflow parent run {summary['parent_run_id']}"
        )
    for label, why in summary["failed"].items():
        print(f"  FAILED {label}: {why}")
    if "report" in summary:
        print(f"report: {summary['report']}")
    if summary["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
