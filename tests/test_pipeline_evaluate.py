"""The evaluate pipeline: a prompt scored without training, as evaluate_prompt scores it, tracked in MLflow."""

from pathlib import Path

import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from pipelines.evaluate import run
from spot_core.builtin_models import BackboneError
from spot_core.prompt_files import PromptFileError, save_prompt
from spot_core.prompts import PromptShapeError
from spot_core.tasks import TaskDataError, UnknownNameError
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec, evaluate_prompt


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One tracking store for the module's evaluations (creating a sqlite store takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


def compose_evaluate(tmp_path: Path, store: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "evaluate",
            overrides=[
                "model=tiny-llama",
                "max_eval_examples=8",
                f"model.cache_dir={tmp_path}/cache",
                f"tracking.uri={store}",
                *overrides,
            ],
        )


def reference_spec(tmp_path: Path, data_dir: Path, model: str, prompt: PromptConfig) -> RunSpec:
    """The spec the composed config should amount to, written out by hand."""
    return RunSpec(
        model=model,
        task="sst2_v1",
        prompt=prompt,
        trainer=TrainerConfig(eval_batch_size=32, seed=0),
        data_dir=str(data_dir),
        cache_dir=f"{tmp_path}/cache",
        max_input_tokens=128,
        max_target_tokens=16,
        max_eval_examples=8,
        prompt_once=model != "tiny-t5",
    )


def random_prompt(path: Path, shape=(6, 32)) -> Path:
    return save_prompt(path, torch.rand(*shape, generator=torch.Generator().manual_seed(1)) - 0.5)


def test_a_prompt_file_scores_as_evaluate_prompt_scores_it(tiny_name, tmp_path, store, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default out_dir is relative to where the command runs
    path = random_prompt(tmp_path / "prompt.safetensors")
    cfg = compose_evaluate(
        tmp_path, store, f"model={tiny_name}", f"data_dir={data_dir}", "prompt=file", f"prompt.files=[{path}]"
    )
    result = run(cfg)
    expected = evaluate_prompt(
        reference_spec(tmp_path, data_dir, tiny_name, PromptConfig(length=6, init="file", files=[str(path)])),
        tmp_path / "reference",
    )
    assert result["score"] == result["val/score"] == expected["best/val_score"]
    assert Path(result["out_dir"]).parent == tmp_path / "outputs" / "evaluate" / tiny_name / "sst2_v1"
    assert Path(result["out_dir"]).name.startswith("prompt-")

    logged = MlflowClient(store).get_run(result["run_id"])
    assert logged.info.status == "FINISHED"
    assert logged.data.metrics["val/score"] == expected["best/val_score"]
    params = logged.data.params
    assert (params["task"], params["prompt.init"], params["prompt.length"]) == ("sst2_v1", "file", "6")
    assert params["max_eval_examples"] == "8"


def test_an_untrained_init_scores_once_then_returns_its_result(tmp_path, store, data_dir):
    overrides = (f"data_dir={data_dir}", "prompt=sampled_vocab", "prompt.length=4", f"out_dir={tmp_path}/eval")
    result = run(compose_evaluate(tmp_path, store, *overrides))
    prompt = PromptConfig(length=4, init="sampled_vocab")
    expected = evaluate_prompt(reference_spec(tmp_path, data_dir, "tiny-llama", prompt), tmp_path / "reference")
    assert result["score"] == expected["best/val_score"]

    again = run(compose_evaluate(tmp_path, store, *overrides))  # a finished evaluation: no new run
    assert again == result
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("spot-evaluate").experiment_id
    assert len(client.search_runs([experiment], f"tags.out_dir = '{tmp_path}/eval'")) == 1


def bad_input(tmp_path: Path, case: str) -> list[str]:
    """The overrides of each bad input."""
    file = ["prompt=file", f"prompt.files=[{tmp_path / 'p.safetensors'}]"]
    if case == "unknown task":
        return ["task=sst"]
    if case == "unknown model":
        return ["model.name=nosuchmodel"]
    if case == "missing data":
        return [f"data_dir={tmp_path / 'empty'}"]
    if case == "missing file":
        return file
    if case == "width":
        random_prompt(tmp_path / "p.safetensors", (6, 48))
        return file
    if case == "length":
        random_prompt(tmp_path / "p.safetensors")
        return [*file, "prompt.length=7"]
    save_file({"prompt_embeddings": torch.zeros(2, 6, 32)}, str(tmp_path / "p.safetensors"))  # rank
    return file


@pytest.mark.parametrize(
    ("case", "error", "says"),
    [
        ("unknown task", UnknownNameError, "unknown task or mixture 'sst'"),
        ("unknown model", BackboneError, "cannot load model 'nosuchmodel'"),
        ("missing data", TaskDataError, "sst2"),
        ("missing file", PromptFileError, "does not exist"),
        ("width", PromptShapeError, r"shape \(6, 48\)"),
        ("length", PromptShapeError, r"shape \(6, 32\).*\[7, 32\]"),
        ("rank", PromptShapeError, r"shape \(2, 6, 32\)"),
    ],
)
def test_bad_inputs_fail_before_writing_anything(tmp_path, data_dir, case, error, says):
    (tmp_path / "empty").mkdir()
    overrides = (f"data_dir={data_dir}", f"out_dir={tmp_path}/eval", *bad_input(tmp_path, case))
    cfg = compose_evaluate(tmp_path, f"sqlite:///{tmp_path}/mlflow.db", *overrides)
    with pytest.raises(error, match=says):
        run(cfg)
    assert not (tmp_path / "eval").exists() and not (tmp_path / "mlflow.db").exists()
