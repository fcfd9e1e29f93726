"""A prompt file -> a PEFT prompt-tuning adapter, with the model's dimensions read from the model's config.

python -m pipelines.export prompt.files=[outputs/train/smollm2-135m/sst2_v1/seed0/best_prompt.safetensors]
python -m pipelines.export prompt.files=[PATH] model=tiny-t5 out_dir=/tmp/adapter

The prompt file is named as in `pipelines.train` and `pipelines.evaluate` (`prompt=file`, this command's default,
`prompt.files=[PATH]`): a spot .safetensors file, a PEFT adapter directory or a SPoT numpy prompt
(`spot_core.prompt_files.read_prompt`). Load the adapter with `PeftModel.from_pretrained(base_model, out_dir)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from pipelines.errors import entry_point
from pipelines.paths import check_writable
from spot_core.backbones import ModelDims, model_dims
from spot_core.errors import ConfigError
from spot_core.prompt_files import PromptFileError, export_peft, load_prompt, read_prompt
from spot_core.prompts import PromptInit, check_shape

OUT_ROOT = Path("outputs/export")  # the default out_dir's root, relative to where the command runs


def prompt_metadata(path: str | Path) -> dict[str, Any]:
    """A spot prompt file's metadata; {} for the other formats (a PEFT adapter, a SPoT numpy prompt)."""
    if not Path(path).is_file():
        return {}
    try:
        return load_prompt(path)[1]
    except PromptFileError:  # read_prompt has accepted it: another format
        return {}


def trained_on(meta: dict[str, Any]) -> str | None:
    """The model a spot prompt file was made for: trained on, or projected to."""
    return meta.get("model") or meta.get("target_model")


def default_out_dir(model: str, prompt_path: str | Path, meta: dict[str, Any]) -> Path:
    """outputs/export/<model>/<task>-seed<seed>-<file stem> (task and seed where the file records them: every run's
    best_prompt.safetensors gets a folder of its own)."""
    stem = Path(prompt_path).name.removesuffix(".safetensors")
    if "task" in meta and "seed" in meta:
        stem = f"{meta['task']}-seed{meta['seed']}-{stem}"
    return OUT_ROOT / Path(model).name / stem


def prompt_path(cfg: DictConfig) -> str:
    """The one prompt file of `prompt.files`."""
    files = list(cfg.prompt.files)
    if cfg.prompt.init != PromptInit.FILE or len(files) != 1:
        raise ConfigError(
            f"export takes one prompt file (prompt=file prompt.files=[PATH]), got prompt.init={cfg.prompt.init} "
            f"with {len(files)} file(s) in prompt.files"
        )
    return files[0]


def check(cfg: DictConfig) -> tuple[torch.Tensor, ModelDims, Path]:
    """Everything a user can get wrong, before anything is written: (prompt [L, H], the model's dims, out_dir)."""
    name, path = cfg.model.name, prompt_path(cfg)
    dims = model_dims(name, cfg.model.cache_dir)
    prompt = read_prompt(path, dims.hidden_size)
    meta = prompt_metadata(path)
    made_for = trained_on(meta)
    if made_for is not None and made_for != name:
        raise ConfigError(
            f"prompt file {path} was made for model {made_for!r}, not {name!r}: export it with model={made_for} "
            f"(a conf/model option) or model.name={made_for}"
        )
    check_shape(prompt, None, dims.hidden_size, what=f"prompt file {path}", model=name)
    out_dir = check_writable(cfg.out_dir or default_out_dir(name, path, meta), "out_dir")
    return prompt, dims, out_dir


def run(cfg: DictConfig) -> dict[str, Any]:
    prompt, dims, out_dir = check(cfg)  # nothing is written before this returns
    export_peft(
        out_dir,
        prompt,
        base_model=cfg.base_model or cfg.model.name,
        is_encoder_decoder=dims.is_encoder_decoder,
        num_layers=dims.num_layers,
        num_attention_heads=dims.num_attention_heads,
    )
    return {
        "out_dir": str(out_dir),
        "prompt": str(Path(prompt_path(cfg)).resolve()),
        "model": cfg.model.name,
        "task_type": "SEQ_2_SEQ_LM" if dims.is_encoder_decoder else "CAUSAL_LM",
        "num_virtual_tokens": prompt.shape[0],
        "token_dim": prompt.shape[1],
        "num_layers": dims.num_layers,
        "num_attention_heads": dims.num_attention_heads,
    }


@entry_point("export")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print("\n".join(f"{k}: {v}" for k, v in result.items()))
    print(f"wrote the PEFT adapter to {result['out_dir']}")


if __name__ == "__main__":
    main()
