"""Model tuning (SPoT's MODELTUNING baselines, `spot_core.trainer.ModelTrainer`): every backbone weight trains where
prompt tuning leaves them as they were, a run killed mid-way resumes bit-exactly, and the best checkpoint is kept
once in the run folder as a model folder that `from_pretrained` loads; the tracker never gets the weights."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import prompted
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from spot_core.encoding import encode_examples
from spot_core.errors import ConfigError
from spot_core.evaluation import TaskData
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt
from spot_core.tasks import get_task
from spot_core.tracking import MemoryTracker
from spot_core.trainer import Callback, ModelTrainer, Trainer, TrainerConfig
from spot_core.tuning import RunSpec, tune_model

TRAIN = [
    {"inputs": "a fine film", "targets": "positive"},
    {"inputs": "a dull film", "targets": "negative"},
    {"inputs": "good acting", "targets": "positive"},
    {"inputs": "bad acting", "targets": "negative"},
] * 2
# T5's fine-tuning optimizer (Adafactor, constant 1e-3, updates scaled by the parameter's RMS), a short budget
MODEL_TUNING = {"lr": 1e-3, "scale_parameter": True, "weight_decay": 0.0}


def tuned(name: str, out, **cfg) -> tuple[ModelTrainer, PromptedLM]:
    """A model-tuning run on tiny `name` (its own backbone copy: model tuning changes it)."""
    base, codec = prompted(name, length=0, seed=1)
    data = TaskData(get_task("sst2_v1"), codec, encode_examples(codec, TRAIN), encode_examples(codec, TRAIN[:4]))
    config = TrainerConfig(
        **{"steps": 12, "batch_size": 4, "eval_every": 4, "eval_batch_size": 4, **MODEL_TUNING, **cfg}
    )
    return ModelTrainer(config, base, data, out, tracker=MemoryTracker()), base


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_model_tuning_changes_every_weight_and_prompt_tuning_none(tmp_path, name):
    prompt_run, _ = prompted(name, length=4, seed=1)
    codec = prompted(name, length=0)[1]
    data = TaskData(get_task("sst2_v1"), codec, encode_examples(codec, TRAIN), encode_examples(codec, TRAIN[:4]))
    before = weights(prompt_run.model)
    Trainer(
        TrainerConfig(steps=4, batch_size=4, eval_every=4, eval_batch_size=4), prompt_run, data, tmp_path / "p"
    ).fit()
    assert all(torch.equal(v, before[k]) for k, v in weights(prompt_run.model).items())

    trainer, model = tuned(name, tmp_path / "m")
    before = weights(model.model)
    trainer.fit()
    after = weights(model.model)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == set(before), set(before) - moved  # every weight (tied embeddings under each of their names)
    assert all(p.requires_grad for p in model.model.parameters())


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_a_killed_model_tuning_run_resumes_bit_exactly(tmp_path, monkeypatch, name):
    full, reference_model = tuned(name, tmp_path / "full")
    reference = full.fit()
    crashing, _ = tuned(name, tmp_path / "crash")
    real_step = ModelTrainer._train_step

    def step_then_die(self, state):
        real_step(self, state)
        if state.step == 6:  # after the step-4 checkpoint, before the step-8 one
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(ModelTrainer, "_train_step", step_then_die)
    with pytest.raises(KeyboardInterrupt):
        crashing.fit()
    monkeypatch.setattr(ModelTrainer, "_train_step", real_step)
    resumed, resumed_model = tuned(name, tmp_path / "crash")  # a fresh process would start from the same init
    assert resumed.fit() == reference
    assert all(torch.equal(v, weights(reference_model.model)[k]) for k, v in weights(resumed_model.model).items())
    assert (tmp_path / "crash/metrics.json").read_text() == (tmp_path / "full/metrics.json").read_text()


class Snapshot(Callback):
    """The backbone's weights at each evaluation."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.at = model, {}

    def on_eval(self, step, metrics):
        self.at[step] = weights(self.model)


@pytest.mark.parametrize(("name", "auto"), [("tiny-llama", AutoModelForCausalLM), ("tiny-t5", AutoModelForSeq2SeqLM)])
def test_the_best_checkpoint_is_kept_once_as_a_model_folder_and_not_tracked(tmp_path, name, auto):
    trainer, model = tuned(name, tmp_path / "run")
    snapshot = Snapshot(model.model)
    trainer.callbacks.append(snapshot)
    scores = iter([50.0, 70.0, 90.0, 60.0])  # steps 0, 4, 8, 12: the best at step 8
    trainer.data.evaluate = lambda model, batch_size: {"score": next(scores)}
    result = trainer.fit()
    assert (result["best/val_score"], result["best/step"]) == (90.0, 8)
    folder = tmp_path / "run" / "best_model"
    saved = auto.from_pretrained(folder)
    assert all(torch.equal(v, snapshot.at[8][k]) for k, v in saved.state_dict().items())
    assert json.loads((folder / "spot.json").read_text())["step"] == 8
    # no prompt files, per-evaluation checkpoints or earlier best folders beside it
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best_model",
        "metrics.json",
        "result.json",
        "resume.pt",
    ]
    assert trainer.tracker.artifacts == []  # the weights stay in the run folder; MLflow gets metrics and result


def test_model_tuning_refuses_a_prompt_and_a_task_embedding(tmp_path):
    model, codec = prompted("tiny-llama", length=4)
    data = TaskData(get_task("sst2_v1"), codec, encode_examples(codec, TRAIN), encode_examples(codec, TRAIN[:4]))
    with pytest.raises(ConfigError, match="model tuning trains the backbone without a prompt"):
        ModelTrainer(TrainerConfig(steps=2), model, data, tmp_path)
    empty = PromptedLM(model.backbone, SoftPrompt(torch.zeros(0, model.backbone.hidden_size)))
    with pytest.raises(ConfigError, match="trainer.embedding_step: model tuning writes no task embedding"):
        ModelTrainer(TrainerConfig(steps=2, embedding_step=1), empty, data, tmp_path)
    with pytest.raises(ConfigError, match="trainer.scale_parameter must be true or false"):
        TrainerConfig(scale_parameter="yes")


def test_a_multitask_target_starts_from_the_source_tuned_weights(tmp_path, data_dir, monkeypatch):
    source = RunSpec(model="tiny-llama", task="sst2_v1", trainer=TrainerConfig(steps=2, batch_size=4, eval_every=2,
                     **MODEL_TUNING), data_dir=str(data_dir), max_train_examples=8, max_eval_examples=8)  # fmt: skip
    tune_model(source, tmp_path / "source")
    folder = tmp_path / "source" / "best_model"
    tuned = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    models, at_start = [], {}
    real = ModelTrainer.__init__

    def keep(self, config, model, *args, **kwargs):  # the run's model, to read at its step-0 evaluation
        models.append(model.model)
        real(self, config, model, *args, **kwargs)

    class Start(Callback):
        def on_eval(self, step, metrics):
            if step == 0:
                at_start.update(weights(models[0]))

    monkeypatch.setattr(ModelTrainer, "__init__", keep)
    target = RunSpec(**{**source.__dict__, "task": "rte_v1", "weights": str(folder)})
    tune_model(target, tmp_path / "target", callbacks=[Start()])
    assert set(at_start) == set(tuned) and all(torch.equal(at_start[k], tuned[k]) for k in tuned)
    pretrained = prompted("tiny-llama", length=0)[0].model.state_dict()
    assert not all(torch.equal(pretrained[k], tuned[k]) for k in tuned)  # the source run did move them
    with pytest.raises(ConfigError, match="weights: no model folder at"):
        tune_model(RunSpec(**{**target.__dict__, "weights": str(tmp_path / "nowhere")}), tmp_path / "x")


def test_a_study_plans_runs_and_resumes_the_model_tuning_cells(tmp_path, data_dir):
    from conftest import cell_runs, compose_study, overrides
    from mlflow.tracking import MlflowClient

    from pipelines.study import run

    generic = "stages=[source,target,transfer,model_tuning,multitask_model_tuning,report]"
    stages = (generic, "study.seeds=[0]", "ray.in_process=true")
    result = run(compose_study(*overrides(tmp_path, data_dir, *stages)))
    # prompts: 2 sources, 2 targets, 4 transfers; models: 2 targets tuned alone, 2 sources, each target from each
    assert result["failed"] == {} and result["cells"] == result["finished"] == 8 + 2 + 2 + 2 * 2
    runs = [r for r in cell_runs(tmp_path) if r.data.tags["stage"] in ("model_tuning", "mt_source", "mt_target")]
    kinds = {r.data.tags["stage"] for r in runs}
    assert kinds == {"model_tuning", "mt_source", "mt_target"}
    by_key = {r.data.tags["cell_key"]: r for r in runs}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for r in runs:
        folder = next((tmp_path / "out" / r.data.tags["stage"]).glob(f"*{r.data.tags['cell_key']}"))
        assert (folder / "best_model" / "config.json").is_file()  # the weights stay in the cell's folder ...
        assert {a.path for a in client.list_artifacts(r.info.run_id)} == {"result.json"}  # ... and out of MLflow
        if r.data.tags["stage"] == "mt_target":
            source = by_key[r.data.tags["source_key"]]
            assert source.data.tags["stage"] == "mt_source"
            assert r.data.params["weights.init"].endswith(f"{source.data.tags['cell_key']}/best_model")
        else:
            assert r.data.params["weights.init"] == "pretrained"
        assert int(r.data.params["trainable_params"]) > 10_000  # every weight of the tiny model, no prompt
    again = run(compose_study(*overrides(tmp_path, data_dir, *stages)))
    assert again["trained_now"] == 0 and again["finished"] == 16

    # the report's Table 1: a row per method (and source), both benchmarks, from the runs' scores
    report = tmp_path / "out" / "report"
    values = pd.read_csv(report / "tables/table1_values.csv", index_col=[0, 1], keep_default_na=False)
    assert list(values.index) == [
        ("PromptTuning", ""), ("ModelTuning", ""),
        ("SPoT", "mnli_v1"), ("Multi-task ModelTuning", "mnli_v1"),
        ("SPoT", "sst2_v1"), ("Multi-task ModelTuning", "sst2_v1"),
    ]  # fmt: skip
    score = {(r.data.tags["stage"], r.data.tags["source"], r.data.tags["target"]): r.data.metrics["best/val_score"]
             for r in cell_runs(tmp_path) if r.data.tags["target"]}  # fmt: skip
    # study=smoke's targets: RTE (GLUE and SuperGLUE) and CB (SuperGLUE)
    assert values.loc[("ModelTuning", ""), "GLUE_mean"] == pytest.approx(score["model_tuning", "", "rte_v1"])
    sg = (score["mt_target", "sst2_v1", "rte_v1"] + score["mt_target", "sst2_v1", "cb_v1"]) / 2
    assert values.loc[("Multi-task ModelTuning", "sst2_v1"), "SuperGLUE_mean"] == pytest.approx(sg)
    assert (values["GLUE_tasks"] == "1/8").all() and (values["SuperGLUE_tasks"] == "2/8").all()
    text = (report / "report.md").read_text()
    assert "## Generic transfer (Table 1)" in text and "| Multi-task ModelTuning (sst2_v1) |" in text

    # Figure 1: the same design on a wider model as a second study, then one report across both sizes
    from conftest import compose_report

    from pipelines.report import run as report_run
    from pipelines.tracking import TrackingError

    wide = ("study.name=smoke-wide", "model.name=tiny-llama-wide", "study.cross_model=null", *stages[1:])
    wide = (*wide, "stages=[target,model_tuning]")
    assert run(compose_study(*overrides(tmp_path, data_dir, *wide)))["failed"] == {}
    uri, out = f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", tmp_path / "sizes"
    done = report_run(compose_report(uri, f"out_dir={out}", "sizes=[smoke,smoke-wide]"))
    assert (out / "figures/figure1.png").is_file() and (out / "figures/figure1.pdf").is_file()
    points = pd.read_csv(out / "tables/figure1.csv")
    tuned_runs = [r for r in cell_runs(tmp_path) if r.data.tags["stage"] == "model_tuning"]
    params = {s: {int(r.data.params["trainable_params"]) for r in tuned_runs if r.data.tags["study"] == s}
              for s in ("smoke", "smoke-wide")}  # fmt: skip
    assert all(len(p) == 1 for p in params.values())  # one model per study: every weight of it
    tuned = points[points["label"] == "ModelTuning"].set_index("study")
    assert {s: int(tuned.loc[s, "params"]) for s in tuned.index} == {s: p.pop() for s, p in params.items()}
    assert "## SuperGLUE across model sizes (Figure 1)" in Path(done["document"][0]).read_text()
    # expected findings across the sizes (make check-demo DEMO=generic): a claim names the study it is measured on
    claims = [
        {"kind": "benchmark_score", "method": "ModelTuning", "benchmark": "SuperGLUE", "min": 0, "max": 100},
        {
            "kind": "benchmark_gain",
            "method": "ModelTuning",
            "baseline": "PromptTuning",
            "benchmark": "SuperGLUE",
            "study": "smoke-wide",
            "min": 101,
        },  # fmt: skip
    ]
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({"claims": claims}))
    checked = report_run(compose_report(uri, f"out_dir={out}", "sizes=[smoke,smoke-wide]", f"expect={expected}"))
    wide = {(r.data.tags["stage"], r.data.tags["target"]): r.data.metrics["best/val_score"]
            for r in cell_runs(tmp_path) if r.data.tags["study"] == "smoke-wide"}  # fmt: skip
    wide_gain = sum(wide["model_tuning", t] - wide["target", t] for t in ("rte_v1", "cb_v1")) / 2  # SuperGLUE's two
    assert checked["expectations"]["holds"].tolist() == [True, False]
    assert checked["expectations"]["values"].iloc[1] == [round(wide_gain, 1)]  # one seed
    expected.write_text(json.dumps({"claims": [{**claims[1], "study": "smoke-huge"}]}))
    with pytest.raises(ConfigError, match="claim 0 is on study 'smoke-huge', not among the report's studies"):
        report_run(compose_report(uri, f"out_dir={tmp_path}/none", "sizes=[smoke,smoke-wide]", f"expect={expected}"))
    assert not (tmp_path / "none").exists()  # refused before anything is written
    # SPoT's model-tuning rows on another checkpoint than its prompts (study.model_tuning_model): one study
    other = ("study.name=smoke-other", "study.model_tuning_model=tiny-llama-wide", "stages=[target,model_tuning]")
    done = run(compose_study(*overrides(tmp_path, data_dir, *other, *stages[1:], "study.seeds=[1]")))
    assert done["failed"] == {} and done["trained_now"] == 4  # seed 1: cells no study here has
    ran = [r for r in cell_runs(tmp_path) if r.data.tags["study"] == "smoke-other"]
    assert {(r.data.tags["stage"], r.data.tags["model"]) for r in ran} == {
        ("target", "tiny-llama"),
        ("model_tuning", "tiny-llama-wide"),
    }
    assert {int(r.data.params["trainable_params"]) for r in ran if r.data.tags["stage"] == "model_tuning"} == {
        int(tuned.loc["smoke-wide", "params"])
    }
    with pytest.raises(TrackingError):
        report_run(compose_report(uri, f"out_dir={tmp_path}/none", "sizes=[smoke,nosuch]"))
    prompts_only = ("study.name=smoke-prompts", "stages=[target]", "study.targets=[rte]", *stages[1:])
    assert run(compose_study(*overrides(tmp_path, data_dir, *prompts_only)))["failed"] == {}
    with pytest.raises(ConfigError, match="sizes: study 'smoke-prompts' has no model-tuning run"):
        report_run(compose_report(uri, f"out_dir={tmp_path}/none", "sizes=[smoke,smoke-prompts]"))
    assert not (tmp_path / "none").exists()


def test_a_sigkilled_model_tuning_cell_resumes_bit_exactly(tmp_path, data_dir):
    import os
    import signal
    import subprocess
    import sys

    from conftest import cell_runs, compose_study, overrides, paused_at_step
    from safetensors.torch import load_file

    from pipelines.study import run

    design = ("stages=[model_tuning]", "study.seeds=[0]", "study.targets=[rte]", "ray.in_process=true")
    killed = overrides(tmp_path / "killed", data_dir, *design)
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "SPOT_VERBOSE")}
    command = [sys.executable, "-c", paused_at_step(2, "pipelines.study"), *killed]
    study = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        paused = next((line for line in study.stdout if line == "checkpoint 2 written\n"), None)
        study.send_signal(signal.SIGKILL)  # the process this test started: no handler, no clean-up
        study.wait(timeout=60)
    finally:
        if study.poll() is None:
            study.kill()
            study.wait()
    assert paused is not None and study.returncode == -signal.SIGKILL
    (folder,) = (tmp_path / "killed/out/model_tuning").iterdir()
    assert (folder / "resume.pt").is_file() and not (folder / "result.json").exists()

    again = run(compose_study(*killed))  # the same command again
    assert again["failed"] == {} and again["trained_now"] == 1
    reference = run(compose_study(*overrides(tmp_path / "whole", data_dir, *design)))
    assert reference["failed"] == {}
    (whole,) = (tmp_path / "whole/out/model_tuning").iterdir()
    assert folder.name == whole.name  # the same cell, by key
    ours, theirs = (load_file(f / "best_model/model.safetensors") for f in (folder, whole))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert (folder / "metrics.json").read_text() == (whole / "metrics.json").read_text()
    assert (folder / "result.json").read_text() == (whole / "result.json").read_text()
    runs = cell_runs(tmp_path / "killed")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]  # the killed attempt is not left RUNNING
    finished = next(r for r in runs if r.info.status == "FINISHED")
    assert finished.data.metrics["train/resumed_at_step"] == 2


def test_the_model_step_benchmark_times_both_steps_and_names_the_plans_memory(tmp_path):
    from bench.model_step import main
    from spot_core.backbones import load_backbone
    from spot_core.cost import tuning_memory

    out = tmp_path / "figures.json"
    main(["--models", "tiny-llama", "--steps", "1", "--threads", "1", "--no-memory", "--json", str(out)])
    (figures,) = json.loads(out.read_text())
    assert figures["prompt_step_s"] > 0 and figures["model_step_s"] > 0
    assert figures["model_over_prompt"] == pytest.approx(figures["model_step_s"] / figures["prompt_step_s"], rel=0.05)
    held = tuning_memory(load_backbone("tiny-llama").model.config, "float32").total
    assert figures["plan_held_gib"] == round(held / 1024**3, 3)
