"""The export pipeline: a prompt file -> a PEFT adapter that PEFT loads with the file's prompt."""

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from safetensors.torch import save_file

from pipelines.export import default_out_dir, run
from spot_core.backbones import load_backbone
from spot_core.builtin_models import BackboneError
from spot_core.errors import ConfigError
from spot_core.prompt_files import PromptFileError, load_prompt, save_prompt
from spot_core.prompts import PromptShapeError

# tiny_llama and tiny_t5 in spot_core.backbones: 2 layers, 4 heads, width 32
DIMS = {"tiny-llama": ("CAUSAL_LM", 2, 4, 32), "tiny-t5": ("SEQ_2_SEQ_LM", 2, 4, 32)}


def compose_export(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("export", overrides=list(overrides))


def random_prompt(path: Path, shape=(6, 32), **metadata) -> Path:
    return save_prompt(path, torch.randn(*shape, generator=torch.Generator().manual_seed(0)), **metadata)


def test_exported_adapter_loads_in_peft_with_the_files_prompt(tiny_name, tmp_path):
    from peft import PeftModel

    path = random_prompt(tmp_path / "best_prompt.safetensors", model=tiny_name, task="sst2_v1", seed=0)
    result = run(compose_export(f"model={tiny_name}", f"prompt.files=[{path}]", f"out_dir={tmp_path}/adapter"))
    assert result["out_dir"] == str(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    dims = (config["task_type"], config["num_layers"], config["num_attention_heads"], config["token_dim"])
    assert dims == DIMS[tiny_name] and config["num_virtual_tokens"] == 6
    assert config["base_model_name_or_path"] == tiny_name and config["num_transformer_submodules"] == 1

    peft_model = PeftModel.from_pretrained(load_backbone(tiny_name).model, str(tmp_path / "adapter"))
    assert peft_model.peft_config["default"].task_type == DIMS[tiny_name][0]
    assert torch.equal(peft_model.get_prompt_embedding_to_save("default"), load_prompt(path)[0])


def test_default_out_dir_names_the_run_the_file_came_from():
    meta = {"model": "tiny-llama", "task": "sst2_v1", "seed": 2}
    assert default_out_dir("tiny-llama", "a/b/best_prompt.safetensors", meta) == Path(
        "outputs/export/tiny-llama/sst2_v1-seed2-best_prompt"
    )
    assert default_out_dir("google/t5-base-lm-adapt", "a/prompt.npy", {}) == Path(
        "outputs/export/t5-base-lm-adapt/prompt.npy"
    )


def bad_prompt(tmp_path: Path, case: str) -> tuple[str, list[str]]:
    """(prompt file, extra overrides) of each bad input."""
    if case == "missing":
        return str(tmp_path / "nope.safetensors"), []
    if case == "width":
        return str(random_prompt(tmp_path / "p.safetensors", (6, 48))), []
    if case == "rank":
        save_file({"prompt_embeddings": torch.zeros(2, 6, 32)}, str(tmp_path / "p.safetensors"))
        return str(tmp_path / "p.safetensors"), []
    if case == "other model":
        return str(random_prompt(tmp_path / "p.safetensors", model="tiny-t5")), []
    if case == "unknown model":
        return str(random_prompt(tmp_path / "p.safetensors")), ["model.name=nosuchmodel"]
    return str(random_prompt(tmp_path / "p.safetensors")), ["prompt=sampled_vocab"]  # not a file


@pytest.mark.parametrize(
    ("case", "error", "says"),
    [
        ("missing", PromptFileError, "does not exist"),
        ("width", PromptShapeError, r"shape \(6, 48\).*\[L, 32\]"),
        ("rank", PromptShapeError, r"shape \(2, 6, 32\)"),
        ("other model", ConfigError, "made for model 'tiny-t5'.*model=tiny-t5"),
        ("unknown model", BackboneError, "cannot load model 'nosuchmodel'"),
        ("no file", ConfigError, r"prompt=file prompt.files=\[PATH\]"),
    ],
)
def test_bad_inputs_fail_before_writing_anything(tmp_path, case, error, says):
    path, extra = bad_prompt(tmp_path, case)
    cfg = compose_export("model=tiny-llama", f"prompt.files=[{path}]", f"out_dir={tmp_path}/adapter", *extra)
    with pytest.raises(error, match=says):
        run(cfg)
    assert not (tmp_path / "adapter").exists()
