"""A transfer study: its cells (SPoT's grid and retrieval, Su et al.'s zero-shot, neurons and cross-model stages)
fanned out over Ray Tune, tracked and resumed through MLflow; what one cell does is in `pipelines.cells`.

python -m pipelines.study                         # study=demo: SmolLM2 on the offline data, 2-core CPU
python -m pipelines.study study=smoke             # a tiny model, seconds
python -m pipelines.study study=spot model=t5-base-lm-adapt ray=cluster tracking=server

Re-running the same command after a crash trains only the cells that have no FINISHED MLflow run with their key;
extending a finished study (more seeds, sources or targets) trains only the new cells.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import ray
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.search import Searcher

from pipelines import ledger, plan
from pipelines.cells import TrialJob, cell_config, one_line, reason, train_cell
from pipelines.deprecated import upgrade
from pipelines.errors import entry_point, sigterm_raises
from pipelines.paths import check_writable, resolve_data_dir
from pipelines.scheduler import CellScheduler
from pipelines.tracking import check_store, normalise_uri, open_store
from pipelines.user_tasks import use_stages, use_tasks
from spot_core.backbones import check_backbone
from spot_core.config import check_int
from spot_core.errors import ConfigError
from spot_core.report.study import write_report
from spot_core.stages.base import StageDef
from spot_core.stages.catalogue import CATALOGUE, parse_stages, plan_stages, runnable, stage_of
from spot_core.study import Cell, StudyConfig
from spot_core.tasks import TaskDataError, check_data, check_downloads

REPORT = "report"  # the last of `stages`: pipelines.report on this study's runs


def build_study(cfg: DictConfig) -> StudyConfig:
    upgrade(cfg)  # renamed keys: their values move to the new names
    s, m = OmegaConf.to_container(cfg.study, resolve=True), cfg.model
    data_dir = resolve_data_dir(cfg.data_dir)
    for role in ("sources", "targets"):  # task files: read and checked here, their names from then on
        s[role] = use_tasks(cfg, s.get(role) or [], data_dir)
    return StudyConfig(
        **s,
        model=m.name,
        max_input_tokens=m.max_input_tokens,
        max_target_tokens=m.max_target_tokens,
        data_dir=data_dir,
        cache_dir=m.cache_dir,
        device=m.device,
        dtype=m.dtype,
        prompt_once=m.get("prompt_once"),
    )


# --- running the cells ------------------------------------------------------------------------------------
def late_planner(stages: list[StageDef], study: StudyConfig, root: Path):
    """plan_more for the scheduler, from the stages that plan from finished cells (retrieval), and the cell
    stages it waits for; (None, ()) when no such stage was asked for."""
    late = [s for s in stages if s.plan_later]
    if not late:
        return None, ()

    def plan_more(done: set[str]) -> tuple[list[Cell], dict[str, str]]:
        cells, why = [], {}
        for stage in late:
            more, problems = stage.plan_later(study, root, done)
            cells += more
            why.update(problems)
        return cells, why

    return plan_more, tuple(kind for s in late for kind in s.waits_for)


def pack_key(cell: Cell) -> tuple | None:
    """What cells share to train as one pack: their stage's pack runner and their backbone (None: a stage whose
    cells run alone)."""
    run_pack = stage_of(cell.stage).run_pack
    return None if run_pack is None else (run_pack, cell.model)


def run_cells(
    cells: list[Cell],
    stages: list[StageDef],
    study: StudyConfig,
    cfg: DictConfig,
    root: Path,
    ctx: dict,
    finished: set[str],
    store: dict,
) -> tuple[list[Cell], dict[str, str]]:
    """Runs the cells in one Tuner (or in this process: ray.in_process), each when its inputs are done (retries
    resume from the cell's own checkpoint); returns the cells planned from finished ones (finished ones included)
    and the failures. Once those are planned for every target, earlier ones that are not among them (a ranking an
    extension changed) are marked superseded in the ledger (`store`: its client and experiment)."""
    r = cfg.ray
    plan_more, waits_for = late_planner(stages, study, root)
    scheduler = CellScheduler(
        cells,
        finished,
        lambda c: cell_config(c, study, root),
        plan_more,
        waits_for=waits_for,
        concurrency=(1 if r.in_process else r.max_concurrent_trials or 1) * r.cells_per_trial,
        cells_per_trial=r.cells_per_trial,
        pack_key=pack_key,
        price=plan.cell_price(study),  # the ETA weighs each cell left by what its stage's work costs
    )
    if r.in_process:
        failed = run_here(scheduler, ctx, r.cpus_per_trial, r.max_failures)
    else:
        failed = run_on_tune(scheduler, study, root, ctx, r)
    if scheduler.complete_plan:  # cells planned from an earlier ranking are no longer the study's
        kinds = [kind for s in stages if s.plan_later for kind in s.kinds]
        keep = {c.key for c in scheduler.planned}
        ledger.supersede(store["client"], store["experiment_id"], study.name, kinds, keep)
    return scheduler.planned, failed


def run_on_tune(scheduler: CellScheduler, study: StudyConfig, root: Path, ctx: dict, r: DictConfig) -> dict[str, str]:
    """The scheduler's trials on Ray Tune: each in a reused trial actor, retried from its cells' checkpoints when
    its worker dies; returns label -> why for the cells that failed."""
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
    for res in grid:  # a failed trial's own reason for its cells (a trial that died unreported has no config)
        if res.error and res.config:
            failed.update({c.label: reason(res.error) for c in TrialJob.of(res.config).cells})
    return failed


def run_here(scheduler: CellScheduler, ctx: dict, threads: float, max_failures: int) -> dict[str, str]:
    """ray.in_process=true: the scheduler's trials one after another in this process, without Ray (a breakpoint or
    pdb in a stage's code stops there; nothing pays a worker's start). A trial that raises is retried up to
    max_failures times, resuming from its cells' checkpoints, as on Tune; Ctrl-C stops the study. Returns label ->
    why for the cells that failed."""
    failed, own_threads = {}, torch.get_num_threads()
    try:
        for trial in itertools.count():
            config = scheduler.suggest(str(trial))
            if config is None or config == Searcher.FINISHED:  # None: nothing ready while nothing runs; not reached
                break
            for _ in range(max_failures + 1):
                try:
                    result, error = train_cell(config, threads=threads, in_worker=False, **ctx), None
                    break
                except Exception as e:  # noqa: BLE001 - a cell's own error, reported as Tune reports a trial's
                    result, error = None, e
            if error is not None:
                failed.update({c.label: one_line(error) for c in TrialJob.of(config).cells})
            scheduler.on_trial_complete(str(trial), result, error=error is not None)
    finally:
        torch.set_num_threads(own_threads)  # train_cell set the trial's share
    return {**scheduler.why, **failed}


def too_few_gpus(gpus_per_trial: float, have: str) -> ConfigError:
    return ConfigError(
        f"ray.gpus_per_trial={gpus_per_trial:g} but {have}: lower it (0 for CPU trials, a fraction to share a GPU) "
        "or run on GPU nodes"
    )


def check_gpus(r: DictConfig) -> None:
    """A local Ray gets this machine's GPUs (or ray.num_gpus): too few fail here, before Ray starts. A cluster's
    are known once Ray has joined it (start_ray)."""
    if r.address or not r.gpus_per_trial:
        return
    if r.num_gpus is not None and r.gpus_per_trial > r.num_gpus:
        raise too_few_gpus(r.gpus_per_trial, f"ray.num_gpus={r.num_gpus:g}")
    if r.num_gpus is None and r.gpus_per_trial > (gpus := torch.cuda.device_count()):
        raise too_few_gpus(r.gpus_per_trial, f"this machine has {gpus} GPUs")


def start_ray(cfg: DictConfig) -> bool:
    """Starts a local Ray, or joins the cluster at ray.address; returns True. A process already connected to Ray (a
    notebook, a test session) keeps its own: the study's trials run there, ray.* start settings aside, and False
    says that the study must leave it running."""
    r = cfg.ray
    started = not ray.is_initialized()
    if started and r.address:
        ray.init(address=r.address, include_dashboard=False, log_to_driver=r.log_to_driver)
    elif started:
        ray.init(num_cpus=r.num_cpus, num_gpus=r.num_gpus, include_dashboard=False, log_to_driver=r.log_to_driver)
    gpus = ray.cluster_resources().get("GPU", 0)
    if r.gpus_per_trial > gpus:
        if started:
            ray.shutdown()
        raise too_few_gpus(r.gpus_per_trial, f"the Ray cluster has {gpus:g} GPUs")
    return started


def run(cfg: DictConfig) -> dict[str, Any]:
    """Prints the plan (cells per stage, finished, trials), trains the stages asked for (only cells without a
    FINISHED run), then writes the report if asked. With plan=true (or plan=DEVICE) it prints the plan and the
    estimate of the rest instead, and writes nothing: what this machine lacks (data, models) is listed, not fatal."""
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    planning, device = plan.asked(cfg.get("plan", False))  # a bad value: fail here
    study = build_study(cfg)  # unknown tasks, bad values: fail here
    use_stages(cfg)  # stages added from outside (stage_modules): an unimportable module fails here
    stages = parse_stages([n for n in cfg.stages if n != REPORT], also=[REPORT])
    cells = plan_stages(study, stages)  # a stage the design cannot plan: fail here
    if device:
        plan.stored_costs(device, study, cells, cfg.ray.cells_per_trial)  # a GPU without figures: fail here
    lacking = []
    names = [*study.sources, *study.targets]
    # missing data: fail here, before the store, Ray or a model (a manual download: before any task is read)
    checks = [partial(check_downloads, names, study.data_dir), *(partial(check_data, n, study.data_dir) for n in names)]
    for check in checks:
        try:
            check()
        except TaskDataError as e:
            if not planning:
                raise
            if str(e) not in lacking:
                lacking.append(str(e))
    for model in dict.fromkeys([study.model, *(c.model for c in cells if c.model)]):
        # an unknown or uninstalled model, or prompt_once on an encoder-decoder one: fail here too
        prompt_once = study.prompt_once if model == study.model else None
        if not planning:
            check_backbone(model, study.cache_dir, prompt_once)
        elif why := plan.lacking_model(model, study.cache_dir, prompt_once):  # from this machine's files only
            lacking.append(why)
    uri, root = normalise_uri(cfg.tracking.uri), check_writable(cfg.out_dir, "out_dir")
    if stages:
        check_int(cfg.ray.cells_per_trial, "ray.cells_per_trial", hint=" (1: a cell per trial, no packing)")
        check_store(uri)  # an unreachable server or an unwritable store: fail here, before Ray starts
        if not isinstance(cfg.ray.in_process, bool):
            raise ConfigError(f"ray.in_process={cfg.ray.in_process!r}: true (cells in this process) or false (on Ray)")
        if not cfg.ray.in_process:
            check_gpus(cfg.ray)  # more GPUs per trial than a local Ray would have: fail here too
    summary: dict[str, Any] = {"study": study.name, "out_dir": str(root), "failed": {}}
    if stages or planning:  # the ledger is only read: a store that does not exist yet is not created
        store = (uri, cfg.tracking.experiment)
        the_plan = plan.make_plan(study, stages, cells, store, cfg.ray.cells_per_trial, pack_key, lacking)
        print(plan.render(the_plan, study), flush=True)
    if planning:
        text = plan.estimate(the_plan, study, device, trials=plan.Trials.of(cfg.ray))
        print(text)
        return {**summary, "plan": the_plan, "estimate": text}
    if stages:
        summary.update(train(cfg, study, stages, cells, uri, root))
    if REPORT in cfg.stages:  # also for a partial study: missing cells show as missing
        results = ledger.load_results(uri, cfg.tracking.experiment, study.name)
        summary["report"] = str(write_report(results, root / "report")[0])
    return summary


def train(
    cfg: DictConfig, study: StudyConfig, stages: list[StageDef], cells: list[Cell], uri: str, root: Path
) -> dict[str, Any]:
    """Trains the cells under the study's parent run, which ends FINISHED (FAILED if a cell failed), FAILED on an
    error, KILLED when the study is stopped (Ctrl-C, SIGTERM): then Ray goes down with the driver, and the cells it
    was running end KILLED too, so that the store shows nothing RUNNING once the process has ended."""
    with ThreadPoolExecutor(1) as pool:  # a new sqlite store's migrations (~2 s) run while Ray starts
        store = pool.submit(open_store, uri, cfg.tracking.experiment)
        started = not cfg.ray.in_process and start_ray(cfg)  # too few GPUs on a cluster: fail here
        try:
            client, experiment_id = store.result()  # checked in run(): a server that went away since fails here
        except BaseException:
            if started:
                ray.shutdown()
            raise
    design = {
        "sources": ",".join(study.sources),
        "targets": ",".join(study.targets),
        "retrieval_similarity": study.retrieval_similarity.value,
        "task_embedding": study.task_embedding.value,
    }
    runs = ledger.study_ledger(client, experiment_id, study.name)
    # Ctrl-C raises KeyboardInterrupt in tuner.fit(): Tune's own handler would end it gracefully, as if it were done
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # ray.init replaced the entry point's SIGTERM handler with one that exits without unwinding: ours again
    with sigterm_raises(), runs.open_parent(f"study-{study.name}", OmegaConf.to_yaml(cfg), design) as parent:
        before = runs.finished_keys()
        ctx = {"uri": uri, "experiment_id": experiment_id, "parent_id": parent.run_id, "study": study.name}
        later = [s.name for s in stages if s.plan_later]
        later = f" ({', '.join(later)} cells are planned once the cells they rank have finished)" if later else ""
        print(f"study {study.name}: {len(cells)} cells, {sum(c.key in before for c in cells)} already finished{later}")
        todo, unrunnable = runnable([c for c in cells if c.key not in before], before)
        ledger_ctx = {"client": client, "experiment_id": experiment_id}
        try:
            planned, failed = run_cells(todo, stages, study, cfg, root, ctx, before, ledger_ctx)
        except BaseException:
            # stopped or broken: Ray goes down even if it was the caller's, taking the cells it ran
            started = not cfg.ray.in_process
            raise
        finally:
            if started:
                ray.shutdown()
            runs.abandon_stale()  # cells whose workers went down with a stopped driver: KILLED, not RUNNING
        failed.update(unrunnable)
        cells = cells + planned
        done = runs.finished_keys()
        if all(s in stages for s in CATALOGUE if s.core):
            parent.tag("cells", len(cells))  # the whole design, for the report's coverage line
        parent.close("FINISHED" if not failed else "FAILED")
    return {
        "cells": len(cells),
        "finished": sum(c.key in done for c in cells),
        "trained_now": len({c.key for c in cells} & (done - before)),
        "failed": failed,
        "parent_run_id": parent.run_id,
    }


def name_sweep_job(cfg: DictConfig) -> None:
    """In a Hydra multirun each job is its own study (parent run, ledger scope, out_dir and report), named after
    the values it sweeps: `study.prompt.length=20,100` gives demo-study.prompt.length=20 and ...=100."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is RunMode.MULTIRUN and hydra_cfg.job.override_dirname:
        cfg.study.name = f"{cfg.study.name}-{hydra_cfg.job.override_dirname}"


@entry_point("study")
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
