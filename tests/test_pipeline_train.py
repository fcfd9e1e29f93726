"""The train pipeline composed with Hydra's API, tracked in a temporary MLflow store."""

from pathlib import Path

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from pipelines.tracking import TrackingError
from pipelines.train import run


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


def test_unknown_task_and_unreachable_server_fail_before_training(tmp_path):
    with pytest.raises(KeyError, match="unknown task or mixture 'sst'"):
        run(compose_train(tmp_path, "task=sst"))
    with pytest.raises(TrackingError, match="unreachable.*mlflow server"):
        run(compose_train(tmp_path, "tracking.uri=http://127.0.0.1:9"))
    assert not (tmp_path / "run").exists()


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
    from pipelines.train import build_spec

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
