"""The study pipeline end to end on `study=smoke`: Ray Tune trials, MLflow ledger, resume and extension."""

import json
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import (
    SMOKE_DESIGN,
    cell_runs,
    compose_report,
    compose_study,
    copy_study,
    overrides,
    run_main,
)
from mlflow.tracking import MlflowClient
from ray import tune

from pipelines.errors import Terminated
from pipelines.report import run as report_run
from pipelines.scheduler import CellScheduler
from pipelines.study import main as study_main
from pipelines.study import run
from pipelines.tracking import TrackingError
from spot_core.backbones import BackboneError
from spot_core.cross_model import project_file
from spot_core.errors import ConfigError
from spot_core.prompt_files import load_prompt
from spot_core.tasks import TaskDataError, UnknownNameError
from spot_core.tuning import PromptConfig, RunSpec, evaluate_prompt

pytestmark = pytest.mark.usefixtures("ray_runtime")  # the session's Ray (conftest.py)


def test_smoke_study_runs_every_stage_and_an_extension_runs_only_new_cells(smoke_study, tmp_path, data_dir):
    # the session's smoke study (conftest.py): SPoT's stages, seed 0 (Su et al.'s: the next tests)
    first, study = smoke_study.full, smoke_study.tmp
    # 2 sources, 2 targets, 4 transfers; per target, top-2 retrieval: a mixture prompt and 2 target runs.
    assert first["failed"] == {} and first["cells"] == first["finished"] == 8 + 2 * 3
    runs = cell_runs(study)
    stages = Counter(r.data.tags["stage"] for r in runs)
    assert stages == {"source": 2, "target": 2, "transfer": 4, "retrieval_mixture": 2, "retrieval": 4}
    wavg = next(r for r in runs if r.data.tags["source"] == "wavg-top2")
    assert wavg.data.params["prompt.init"] == "weighted_average" and wavg.data.tags["k"] == "2"
    mixture = next(r for r in runs if r.data.tags["stage"] == "retrieval_mixture")
    assert mixture.data.tags["task"] in (
        "sst2_v1+mnli_v1+rte_v1",
        "mnli_v1+sst2_v1+rte_v1",
        "sst2_v1+mnli_v1+cb_v1",
        "mnli_v1+sst2_v1+cb_v1",
    )
    assert all(
        r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == first["parent_run_id"] for r in runs
    )
    transfer = next(r for r in runs if r.data.tags["stage"] == "transfer")
    assert transfer.data.tags["source"] in ("sst2_v1", "mnli_v1") and transfer.data.params["prompt.init"] == "file"
    assert "val/score" in transfer.data.metrics
    artifacts = {a.path for a in MlflowClient(f"sqlite:///{study}/mlflow.db").list_artifacts(transfer.info.run_id)}
    assert {"best_prompt.safetensors", "task_embedding.safetensors", "result.json"} <= artifacts

    # The last stage: the report, from what MLflow holds; `make report` on the same runs writes the same files.
    report = Path(first["report"]).parent
    assert report == study / "out" / "report"
    written = {p.relative_to(report): p.read_bytes() for p in report.rglob("*") if p.is_file()}
    assert {Path("report.md"), Path("report.html"), Path("figures/k_curve.png"), Path("tables/table3.tex")} <= set(
        written
    )
    assert "14 finished runs of 14 planned" in (report / "report.md").read_text()
    uri = f"tracking.uri=sqlite:///{study}/mlflow.db"
    again = report_run(compose_report(uri, f"out_dir={tmp_path}/again"))
    assert again["runs"] == 14
    assert {
        p.relative_to(tmp_path / "again"): p.read_bytes() for p in (tmp_path / "again").rglob("*") if p.is_file()
    } == written
    # Expected findings (make check-demo): each claim measured per seed on the study's runs.
    expected = tmp_path / "expected.json"
    claims = [
        {"kind": "source_score", "task": "sst2_v1", "min": 0, "max": 100},
        {"kind": "transfer_gain", "source": "mnli_v1", "target": "rte_v1", "min": 101},
    ]
    expected.write_text(json.dumps({"claims": claims}))
    checked = report_run(compose_report(uri, f"out_dir={tmp_path}/checked", f"expect={expected}"))["expectations"]
    assert checked["holds"].tolist() == [True, False] and [len(v) for v in checked["values"]] == [1, 1]
    with pytest.raises(FileNotFoundError, match="expect=.*no such file"):
        report_run(compose_report(uri, f"out_dir={tmp_path}/none", f"expect={tmp_path}/nope.json"))

    # A second seed, on a copy: only its cells train
    copy_study(study, tmp_path / "more")
    grid = "stages=[source,target,transfer]"
    more = overrides(tmp_path / "more", data_dir, *SMOKE_DESIGN[1:], "study.seeds=[0,1]", grid, "ray.in_process=true")
    second = run(compose_study(*more))
    assert second["failed"] == {} and second["finished"] == 14 and second["trained_now"] == 2 + 4
    keys = Counter(r.data.tags["cell_key"] for r in cell_runs(tmp_path / "more") if r.info.status == "FINISHED")
    assert len(keys) == 14 + 6 and set(keys.values()) == {1}  # exactly one FINISHED run per cell


def test_tunes_trial_workers_train_what_in_process_cells_train(smoke_study, tmp_path, data_dir):
    # ray.in_process=true runs the same scheduler's trials in this process: the session study's source and target
    # cells (trained so) come out the same on Tune's trial workers (a thread each), curve and scores
    args = overrides(tmp_path, data_dir, *SMOKE_DESIGN, "stages=[source,target]")
    result = run(compose_study(*args))
    assert result["failed"] == {} and result["finished"] == result["trained_now"] == 4

    def curves(folder: Path) -> dict[str, dict[str, list[float]]]:
        client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
        return {
            r.data.tags["cell_key"]: {
                name: [m.value for m in client.get_metric_history(r.info.run_id, name)]
                for name in r.data.metrics if not name.startswith(("time/", "system/"))
            }
            for r in cell_runs(folder) if r.data.tags["stage"] in ("source", "target")
        }  # fmt: skip

    on_tune, here = curves(tmp_path), curves(smoke_study.tmp)
    assert len(on_tune) == 4 and set(on_tune) <= set(here)
    for key, metrics in on_tune.items():
        assert {"train/loss", "best/val_score"} <= set(metrics) and set(metrics) == set(here[key])
        for name, values in metrics.items():
            assert values == pytest.approx(here[key][name], rel=1e-5, abs=1e-6), (key, name)


def test_attempt_and_mpt_beside_spot_fill_the_method_comparison(tmp_path, data_dir):
    methods = ("stages=[source,target,transfer,mpt,attempt,report]", "ray.in_process=true")  # the stages' wiring
    result = run(compose_study(*overrides(tmp_path, data_dir, *methods)))
    # 2 sources; 2 targets x 2 seeds: baselines, 8 transfers, MPT's shared prompt and 4 runs, 4 ATTEMPT runs
    assert result["failed"] == {} and result["cells"] == result["finished"] == 2 + 4 + 8 + 5 + 4
    runs = cell_runs(tmp_path)
    assert Counter(r.data.tags["stage"] for r in runs) == {
        "source": 2, "target": 4, "transfer": 8, "mpt_source": 1, "mpt": 4, "attempt": 4
    }  # fmt: skip
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    attempt = next(r for r in runs if r.data.tags["stage"] == "attempt")
    assert attempt.data.tags["source"] == "attempt-all" and attempt.data.params["prompt.init"] == "sampled_vocab"
    assert {"attention.json", "best_module.safetensors"} <= {a.path for a in client.list_artifacts(attempt.info.run_id)}
    shared = next(r for r in runs if r.data.tags["stage"] == "mpt_source")
    assert shared.data.tags["task"] == "sst2_v1+mnli_v1" and "val/sst2_v1/score" in shared.data.metrics
    mpt = next(r for r in runs if r.data.tags["stage"] == "mpt")
    assert mpt.data.tags["source_key"] == shared.data.tags["cell_key"] and mpt.data.params["prompt.rank"] == "1"
    params = {r.data.tags["stage"]: int(r.data.params["trainable_params"]) for r in runs}
    assert params["mpt"] == 4 * 32 + 4 + 32 and params["target"] == 4 * 32  # P* and u, v; a [4, 32] prompt
    assert params["attempt"] > params["target"]  # the target prompt and the attention

    report = Path(result["report"]).parent
    values = pd.read_csv(report / "tables/methods_values.csv")
    assert set(values["method"]) == {"baseline", "oracle", "attempt", "mpt"} and len(values) == 4 * 2
    filled = ["mean", "std", "gain", "trainable_params", "best_step", "seconds_to_best", "source_runs", "target_runs"]
    assert values[filled].notna().all().all() and (values["n"] == 2).all()
    assert values.set_index("method")["source_runs"].to_dict() == {"baseline": 0, "oracle": 2, "attempt": 2, "mpt": 1}
    attention = pd.read_csv(report / "tables/attention_all.csv", index_col=0)
    assert attention.shape == (2, 3) and attention.notna().all().all()
    assert (report / "figures/attention_all.png").is_file()
    again = run(compose_study(*overrides(tmp_path, data_dir, *methods)))
    assert again["trained_now"] == 0 and again["finished"] == 23  # resumed: every cell found by its key
    # MPT's cells in packs of 4 (the shared prompt alone, after the source runs it distils, then the target runs
    # as one pack): the same runs
    mpt_only = ("stages=[source,mpt]", "ray.cells_per_trial=4", "ray.in_process=true")
    packed = run(compose_study(*overrides(tmp_path / "packed", data_dir, *mpt_only)))
    assert packed["failed"] == {} and packed["finished"] == 2 + 5
    mpt_scores = [
        {r.data.tags["cell_key"]: r.data.metrics["best/val_score"] for r in cell_runs(folder) if r.data.tags["stage"]
         in ("mpt_source", "mpt")}
        for folder in (tmp_path, tmp_path / "packed")
    ]  # fmt: skip
    assert len(mpt_scores[0]) == 5 and mpt_scores[1] == pytest.approx(mpt_scores[0], abs=1e-6)


def test_su_stages_zero_shot_neurons_and_a_projector_into_a_wider_model(tmp_path, data_dir):
    su = ("stages=[source,target,zero_shot,neurons,cross_model,report]", "ray.in_process=true")
    result = run(compose_study(*overrides(tmp_path, data_dir, "study.seeds=[0]", *su)))
    assert result["failed"] == {} and result["cells"] == result["finished"] == 19
    runs = cell_runs(tmp_path)
    assert Counter(r.data.tags["stage"] for r in runs) == {
        "source": 2,
        "target": 2,
        "zero_shot": 4,
        "neurons": 4,
        "cross_source": 2,
        "projector": 1,
        "cross_zero_shot": 2,
        "cross_transfer": 2,
    }
    out = tmp_path / "out"
    # A zero-shot cell scores the source's best prompt on the target: the same as evaluating that file.
    shot = next(r for r in runs if r.data.tags["stage"] == "zero_shot" and r.data.tags["target"] == "rte_v1")
    source = next(r for r in runs if r.info.run_id and r.data.tags["cell_key"] == shot.data.tags["source_key"])
    spec = RunSpec(
        model="tiny-llama",
        task="rte_v1",
        prompt=PromptConfig(
            length=4,
            init="file",
            files=[str(next(out.glob(f"source/*{source.data.tags['cell_key']}")) / "best_prompt.safetensors")],
        ),
        data_dir=str(data_dir),
        max_train_examples=32,
        max_eval_examples=16,
        max_input_tokens=128,
    )
    assert evaluate_prompt(spec, tmp_path / "check")["best/val_score"] == shot.data.metrics["best/val_score"]
    # A cross-model cell starts from its source prompt projected by the study's projector, in the wider model.
    cross = next(r for r in runs if r.data.tags["stage"] == "cross_transfer")
    assert cross.data.tags["model"] == "tiny-llama-wide"
    folder = next(out.glob(f"cross_transfer/*{cross.data.tags['cell_key']}"))
    projected, meta = load_prompt(folder / "projected_prompt.safetensors")
    initial = load_prompt(folder / "initial_prompt.safetensors")[0]
    assert projected.shape == (4, 48) and torch.equal(projected, initial) and meta["source_model"] == "tiny-llama"
    (projector_dir,) = out.glob("projector/*")
    source_prompt = next(out.glob(f"source/*{cross.data.tags['source_key']}")) / "best_prompt.safetensors"
    again = project_file(projector_dir / "projector.safetensors", source_prompt, tmp_path / "again.safetensors")
    assert torch.equal(load_prompt(again)[0], projected)
    neurons = [r for r in runs if r.data.tags["stage"] == "neurons"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert all("neurons.safetensors" in {a.path for a in client.list_artifacts(r.info.run_id)} for r in neurons)
    report = out / "report"
    for name in ("figures/zero_shot_relative.png", "figures/similarity_neuron_overlap.png", "tables/cross_model.csv"):
        assert (report / name).is_file(), name
    text = (report / "report.md").read_text()
    assert "## Zero-shot transfer" in text and "## Cross-model transfer" in text
    assert "The projector was trained on sst2_v1" in text
    table = pd.read_csv(report / "tables/cross_model.csv")
    assert table["task"].tolist() == ["sst2_v1", "mnli_v1"] and table["n_init"].tolist() == [1, 1]


def test_a_stage_whose_inputs_are_missing_says_which_stage_to_add(tmp_path, data_dir):
    result = run(compose_study(*overrides(tmp_path, data_dir, "study.seeds=[0]", "stages=[zero_shot]")))
    assert result["finished"] == 0 and len(result["failed"]) == 4
    assert result["failed"]["zero_shot:sst2_v1->rte_v1:s0"] == (
        "needs source:sst2_v1:s0, which has not finished: add stage 'source' to stages"
    )
    with pytest.raises(ValueError, match="stage cross_model needs study.cross_model"):
        run(compose_study(*overrides(tmp_path, data_dir, "stages=[cross_model]", "study.cross_model=null")))
    with pytest.raises(BackboneError, match="cannot load model 'tiny-llama-wider': it is not a built-in name"):
        run(compose_study(*overrides(tmp_path, data_dir, "study.cross_model.model=tiny-llama-wider")))
    assert not (tmp_path / "out" / "source").exists()  # nothing trained


def asleep(trainable, label: str):
    """The study's trainable, with the trial of the cell `label` asleep once its child run is open. Runs in the Ray
    worker (cloudpickled by value)."""

    def cell(config, **kwargs):
        from types import SimpleNamespace

        from pipelines import cells

        if config["label"] == label:
            cells.stage_of = lambda kind: SimpleNamespace(run_cells=lambda *args: time.sleep(600))
        return trainable(config, **kwargs)

    return cell


def test_a_stopped_study_ends_killed_and_leaves_no_cell_running(tmp_path, data_dir, monkeypatch):
    # SIGTERM reaches the driver while mnli's source cell trains (asleep here): its handler raises Terminated in the
    # driver's main thread, as the searcher does here once sst2's cell has finished and mnli's run is open
    original, complete = tune.with_parameters, CellScheduler.on_trial_complete
    monkeypatch.setattr(tune, "with_parameters", lambda f, **kw: original(asleep(f, "source:mnli_v1:s0"), **kw))

    def stop(self, trial_id, result=None, error=False):
        complete(self, trial_id, result, error)
        deadline = time.monotonic() + 120
        while not [r for r in cell_runs(tmp_path) if r.info.status == "RUNNING"]:
            assert time.monotonic() < deadline, "the sleeping cell never opened its run"
            time.sleep(0.2)
        raise Terminated

    monkeypatch.setattr(CellScheduler, "on_trial_complete", stop)
    with pytest.raises(Terminated):
        run(compose_study(*overrides(tmp_path, data_dir, "stages=[source]")))
    statuses = {r.data.tags["task"]: r.info.status for r in cell_runs(tmp_path)}
    assert statuses == {"sst2_v1": "FINISHED", "mnli_v1": "KILLED"}  # its worker went down with the driver
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (parent,) = client.search_runs([client.get_experiment_by_name("spot-study").experiment_id], "tags.kind = 'study'")
    assert parent.info.status == "KILLED"


def test_bad_input_fails_before_any_training(tmp_path, data_dir):
    with pytest.raises(UnknownNameError, match="Did you mean: boolq_v1"):
        run(compose_study(*overrides(tmp_path, data_dir, "study.targets=[boolqq]")))
    with pytest.raises(TaskDataError, match="doc_nli_v1.*make data"):
        run(compose_study(*overrides(tmp_path, data_dir, "study.targets=[doc_nli]")))
    with pytest.raises(ValueError, match=r"stages: unknown \['sources'\]; choose from \['source', 'target'"):
        run(compose_study(*overrides(tmp_path, data_dir, "stages=[sources]")))
    with pytest.raises(TrackingError, match="unreachable"):
        run(compose_study(*overrides(tmp_path, data_dir, "tracking.uri=http://127.0.0.1:9")))
    with pytest.raises(ConfigError, match=r"ray.cells_per_trial must be an integer >= 1, got 0 \(1: a cell per"):
        run(compose_study(*overrides(tmp_path, data_dir, "ray.cells_per_trial=0")))
    with pytest.raises(ConfigError, match=r"ray.in_process='maybe': true \(cells in this process\) or false"):
        run(compose_study(*overrides(tmp_path, data_dir, "ray.in_process=maybe")))
    with pytest.raises(ConfigError, match=r"ray.gpus_per_trial=1 but ray.num_gpus=0: lower it"):
        run(compose_study(*overrides(tmp_path, data_dir, "ray.gpus_per_trial=1", "ray.num_gpus=0")))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match=r"out_dir: cannot create .*/a-file/out, .*/a-file is a file"):
        run(compose_study(*overrides(tmp_path, data_dir, f"out_dir={tmp_path}/a-file/out")))
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()  # all before Ray and the store


def test_a_crashing_cell_is_failed_with_its_reason_and_the_rest_of_the_study_goes_on(tmp_path, data_dir):
    # A source learning rate of 1e30 makes the source prompt's loss NaN after one step: the source cell crashes.
    args = overrides(
        tmp_path,
        data_dir,
        "study.seeds=[0]",
        "study.sources=[sst2]",
        "stages=[source,target,transfer]",
        "study.source_trainer.lr=1e30",
    )
    result = run(compose_study(*args, "ray.max_failures=0", "ray.in_process=true"))  # on Ray: test_safety_study
    assert result["finished"] == 2 and result["cells"] == 5  # the two targets
    assert set(result["failed"]) == {"source:sst2_v1:s0", "transfer:sst2_v1->rte_v1:s0", "transfer:sst2_v1->cb_v1:s0"}
    assert "NonFiniteLossError" in result["failed"]["source:sst2_v1:s0"]
    assert result["failed"]["transfer:sst2_v1->cb_v1:s0"] == "source:sst2_v1:s0 did not finish"
    failed = [r for r in cell_runs(tmp_path) if r.info.status == "FAILED"]
    assert len(failed) == 1 and all("NonFiniteLossError: training loss is nan" in r.data.tags["error"] for r in failed)


def test_a_hydra_multirun_makes_one_study_per_swept_value(tmp_path, data_dir, monkeypatch):
    args = [
        "-m",
        "study=smoke",
        "study.prompt.length=4,6",
        "stages=[source]",
        "study.sources=[sst2]",
        f"data_dir={data_dir}",
        f"out_dir={tmp_path}/out/${{study.name}}",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"hydra.sweep.dir={tmp_path}/sweep",
        "ray.in_process=true",  # Hydra's naming is under test, not Ray's
    ]
    assert run_main(study_main, monkeypatch, *args) == 0  # Hydra's launcher runs the two jobs in this process
    studies = Counter(r.data.tags["study"] for r in cell_runs(tmp_path) if r.info.status == "FINISHED")
    sweep = "smoke-study.prompt.length={},study.sources=[sst2]"  # named by the design values it sets
    assert studies == {sweep.format(4): 1, sweep.format(6): 1}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(studies)
