"""The train pipeline composed with Hydra's API, tracked in a temporary MLflow store."""

from pathlib import Path

import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from pipelines.errors import Terminated
from pipelines.tracking import TrackingError, open_store, resumed_run, tracked_run
from pipelines.train import run
from spot_core.errors import SpotError


def compose_train(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "model=tiny-llama",
                "prompt.length=4",
                "trainer.steps=4",
                "trainer.eval_every=2",
                "trainer.embedding_step=2",
                "trainer.batch_size=4",
                "max_train_examples=16",
                "max_eval_examples=8",
                f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                f"out_dir={tmp_path}/run",
                *overrides,
            ],
        )


def test_train_pipeline_logs_params_metrics_and_prompts(tmp_path, data_dir):
    result = run(compose_train(tmp_path, f"data_dir={data_dir}"))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    logged = client.get_run(result["run_id"])
    assert logged.info.status == "FINISHED"
    assert logged.data.params["task"] == "sst2_v1" and logged.data.params["trainer.optimizer"] == "adafactor"
    assert [m.step for m in client.get_metric_history(result["run_id"], "val/score")] == [0, 2, 4]
    artifacts = {a.path for a in client.list_artifacts(result["run_id"])}
    assert {"best_prompt.safetensors", "task_embedding.safetensors", "final_prompt.safetensors"} <= artifacts


def test_a_tracked_run_ends_finished_failed_with_its_error_or_killed(tmp_path):
    client, experiment_id = open_store(f"sqlite:///{tmp_path}/mlflow.db", "spot-train")
    with tracked_run(client, experiment_id, name="fine", tags={"task": "rte_v1"}) as fine:
        fine.tracker.log_metrics({"val/score": 1.0}, 0)
    ended = {"fine": fine.run_id}
    for name, error in [("bug", ValueError("bad value")), ("ctrl-c", KeyboardInterrupt()), ("sigterm", Terminated())]:
        run = tracked_run(client, experiment_id, name=name, tags={}, parent_id=fine.run_id)
        with pytest.raises(type(error)), run:
            raise error  # the exception goes on, once the run has ended
        ended[name] = run.run_id
    runs = {name: client.get_run(run_id) for name, run_id in ended.items()}
    assert {name: r.info.status for name, r in runs.items()} == {
        "fine": "FINISHED",
        "bug": "FAILED",
        "ctrl-c": "KILLED",
        "sigterm": "KILLED",
    }
    assert runs["bug"].data.tags["error"] == "ValueError: bad value" and "error" not in runs["sigterm"].data.tags
    assert runs["fine"].data.tags["task"] == "rte_v1" and runs["fine"].data.metrics["val/score"] == 1.0
    assert runs["bug"].data.tags["mlflow.parentRunId"] == fine.run_id
    # A run ended early (a packed cell that left its pack) stays as it ended; a resumed one is RUNNING again.
    with resumed_run(client, fine.run_id) as again:
        assert client.get_run(fine.run_id).info.status == "RUNNING"
        again.end(RuntimeError("out of memory"))
    assert client.get_run(fine.run_id).info.status == "FAILED"
    assert client.get_run(fine.run_id).data.tags["error"] == "RuntimeError: out of memory"


def test_unknown_task_and_unreachable_server_fail_before_training(tmp_path):
    with pytest.raises(KeyError, match="unknown task or mixture 'sst'"):
        run(compose_train(tmp_path, "task=sst"))
    with pytest.raises(TrackingError, match="unreachable.*mlflow server"):
        run(compose_train(tmp_path, "tracking.uri=http://127.0.0.1:9"))
    assert not (tmp_path / "run").exists()


def write_prompt_like(path: Path, tensor: torch.Tensor) -> str:
    """A safetensors file in spot's layout holding any tensor (save_prompt refuses what is not [L, H])."""
    save_file({"prompt_embeddings": tensor.contiguous()}, str(path))
    return str(path)


def bad_invocations(tmp: Path) -> dict[str, list[str]]:
    """Thirteen ways to get a run wrong (tiny-llama: hidden size 32; compose_train sets prompt.length=4)."""
    (tmp / "a-file").write_text("")
    (tmp / "prompt.txt").write_text("0.1 0.2 0.3\n")
    wide = write_prompt_like(tmp / "wide.safetensors", torch.zeros(4, 16))
    long = write_prompt_like(tmp / "long.safetensors", torch.zeros(7, 32))
    cube = write_prompt_like(tmp / "cube.safetensors", torch.zeros(2, 4, 32))
    prompt_file = lambda path: ["prompt=file", f"prompt.files=[{path}]"]  # noqa: E731
    return {
        "unknown task": ["task=sst"],
        "unknown model": ["model.name=nosuchmodel"],
        "missing data dir": [f"data_dir={tmp}/nodata"],
        "closed tracking port": ["tracking.uri=http://127.0.0.1:9"],
        "out_dir under a file": [f"out_dir={tmp}/a-file/run"],
        "missing prompt file": prompt_file(tmp / "none.safetensors"),
        "prompt of another width": prompt_file(wide),
        "prompt of another length": prompt_file(long),
        "prompt of rank 3": prompt_file(cube),
        "a text file as prompt": prompt_file(tmp / "prompt.txt"),
        "nan learning rate": ["trainer.lr=nan"],
        "negative learning rate": ["trainer.lr=-0.1"],
        "zero prompt length": ["prompt.length=0"],
    }


def test_bad_invocations_leave_no_run_and_no_files(tmp_path, data_dir):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cases = bad_invocations(inputs)
    store = tmp_path / "store"
    store.mkdir()
    open_store(f"sqlite:///{store}/mlflow.db", "spot-train")
    for name, overrides in cases.items():
        with pytest.raises(SpotError) as raised:
            run(compose_train(store, f"data_dir={data_dir}", f"out_dir={tmp_path}/run", *overrides))
        assert "\n" not in str(raised.value), name
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    assert len(cases) == 13 and client.search_runs([client.get_experiment_by_name("spot-train").experiment_id]) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "store"]


def test_the_store_keeps_artifacts_beside_it_and_tags_experiments_as_model_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root, ./mlruns, would be here
    client, experiment_id = open_store("sqlite:///store/mlflow.db", "spot-train")
    experiment = client.get_experiment(experiment_id)
    assert experiment.artifact_location == (tmp_path / "store" / "mlartifacts" / "spot-train").as_uri()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    run_id = client.create_run(experiment_id).info.run_id
    (tmp_path / "note.txt").write_text("hello")
    client.log_artifact(run_id, str(tmp_path / "note.txt"))
    assert (tmp_path / "store" / "mlartifacts" / "spot-train" / run_id / "artifacts" / "note.txt").is_file()
    assert not (tmp_path / "mlruns").exists()
    # An experiment made elsewhere keeps its artifact location, and gets the tag (unless it has a kind of its own).
    old = client.create_experiment("old", artifact_location=(tmp_path / "elsewhere").as_uri())
    client.set_experiment_tag(old, "mlflow.experimentKind", "genai_development_inferred")
    mine = client.create_experiment("mine", tags={"mlflow.experimentKind": "genai_development"})
    for name in ("old", "mine"):
        open_store("sqlite:///store/mlflow.db", name)
    assert client.get_experiment(old).artifact_location == (tmp_path / "elsewhere").as_uri()
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(mine).tags["mlflow.experimentKind"] == "genai_development"


def test_a_store_opened_for_reading_is_never_created(tmp_path):
    with pytest.raises(TrackingError, match="no tracking store at .*/none/mlflow.db"):
        open_store(f"sqlite:///{tmp_path}/none/mlflow.db", "spot-study", create=False)
    assert not (tmp_path / "none").exists()
    open_store(f"sqlite:///{tmp_path}/mlflow.db", "spot-train")
    with pytest.raises(TrackingError, match="no experiment 'spot-study' in the tracking store"):
        open_store(f"sqlite:///{tmp_path}/mlflow.db", "spot-study", create=False)


# What each preset sets (compose_train overrides steps, batch size, evaluation interval, prompt length, data limits).
TRAINERS = {
    "spot": {
        "lr": 0.3,
        "optimizer": "adafactor",
        "micro_batch_size": None,
        "eval_batch_size": 64,
        "eval_at_start": False,
    },
    "cpu": {"lr": 0.03, "optimizer": "adafactor", "micro_batch_size": 4, "eval_batch_size": 32, "eval_at_start": True},
}
MODELS = {  # name, max input length, device, prompt once
    "smollm2-135m": ("smollm2-135m", 128, "cpu", True),
    "t5-base-lm-adapt": ("google/t5-base-lm-adapt", 512, "cuda", False),
    "tiny-t5": ("tiny-t5", 128, "cpu", False),
}


@pytest.mark.parametrize("preset", ["trainer=spot", "trainer=cpu", "prompt=class_labels", "prompt=random_uniform"])
@pytest.mark.parametrize("model", ["smollm2-135m", "t5-base-lm-adapt", "tiny-t5"])
def test_every_preset_composes_into_a_valid_run_spec(tmp_path, preset, model):
    from pipelines.specs import build_spec

    spec = build_spec(compose_train(tmp_path, f"model={model}", preset))
    trainer = TRAINERS["spot" if preset == "trainer=spot" else "cpu"]
    assert {k: getattr(spec.trainer, k) for k in trainer} == trainer
    # compose_train's overrides win over the preset's values
    assert (spec.trainer.steps, spec.trainer.batch_size, spec.trainer.eval_every, spec.trainer.embedding_step) == (
        4,
        4,
        2,
        2,
    )
    init = preset.split("=")[1] if preset.startswith("prompt=") else "sampled_vocab"
    assert (spec.prompt.init.value, spec.prompt.length, spec.prompt.scale, list(spec.prompt.files)) == (
        init,
        4,
        0.5,
        [],
    )
    assert (spec.model, spec.max_input_tokens, spec.device, spec.prompt_once) == MODELS[model]
    limits = (spec.max_train_examples, spec.max_eval_examples, spec.max_target_tokens)
    assert spec.task == "sst2_v1" and limits == (16, 8, 16)
