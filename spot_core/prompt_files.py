"""Prompt files: spot's safetensors format, PEFT's prompt-tuning format, the SPoT reference numpy files
(`read_prompt` reads any of them).

spot format: one safetensors file with the tensor `prompt_embeddings` [L, H] float32 and string
metadata (model, hidden_size, length, task, step, score, init, seed, ...; values JSON-encoded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from spot_core.prompts import PromptShapeError, check_shape
from spot_core.run_dir import write_atomic

KEY = "prompt_embeddings"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"


class PromptFileError(ValueError):
    """A prompt file is missing or not a prompt file."""


def save_prompt(path: str | Path, prompt: torch.Tensor, **metadata: Any) -> Path:
    """Writes prompt [L, H] as float32 with metadata; atomic (a reader never sees half a file)."""
    if prompt.dim() != 2:
        raise PromptShapeError(f"a prompt is [L, H]; got shape {tuple(prompt.shape)}")
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    meta.update(length=json.dumps(prompt.shape[0]), hidden_size=json.dumps(prompt.shape[1]))
    tensors = {KEY: prompt.detach().to("cpu", torch.float32).contiguous()}
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_prompt(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Reads a spot prompt file -> ([L, H] float32, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"prompt file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            if KEY not in f.keys():
                raise PromptFileError(f"{path} holds no {KEY!r} tensor (has {list(f.keys())}); not a spot prompt file")
            tensor, raw = f.get_tensor(KEY), f.metadata() or {}
    except PromptFileError:
        raise
    except Exception as e:  # safetensors raises its own error types for non-safetensors files
        raise PromptFileError(
            f"{path} is not a safetensors prompt file ({e}). For PEFT adapters use "
            "import_peft(dir); for SPoT reference numpy prompts use load_numpy_prompt(path)."
        ) from e
    return tensor.to(torch.float32), {k: json.loads(v) for k, v in raw.items()}


def export_peft(
    out_dir: str | Path,
    prompt: torch.Tensor,
    base_model: str,
    *,
    is_encoder_decoder: bool,
    num_layers: int,
    num_attention_heads: int,
    tokenizer_name: str | None = None,
) -> Path:
    """Writes PEFT's prompt-tuning adapter (adapter_config.json + adapter_model.safetensors).

    T5 gets task_type SEQ_2_SEQ_LM with num_transformer_submodules=1 (prompt on the encoder only,
    as spot trains it; PEFT's seq2seq default of 2 would also prompt the decoder).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    L, H = prompt.shape
    config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "SEQ_2_SEQ_LM" if is_encoder_decoder else "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "num_virtual_tokens": L,
        "token_dim": H,
        "num_transformer_submodules": 1,
        "num_attention_heads": num_attention_heads,
        "num_layers": num_layers,
        "prompt_tuning_init": "RANDOM",
        "tokenizer_name_or_path": tokenizer_name,
        "inference_mode": True,
    }
    (out / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file(
        {KEY: prompt.detach().to("cpu", torch.float32).contiguous()}, str(out / PEFT_WEIGHTS), metadata={"format": "pt"}
    )
    return out


def import_peft(adapter_dir: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Reads a PEFT prompt-tuning adapter -> ([L, H] float32, its adapter_config)."""
    d = Path(adapter_dir)
    if not (d / PEFT_CONFIG).is_file() or not (d / PEFT_WEIGHTS).is_file():
        raise PromptFileError(f"{d} is not a PEFT adapter directory (needs {PEFT_CONFIG} and {PEFT_WEIGHTS})")
    config = json.loads((d / PEFT_CONFIG).read_text())
    if config.get("peft_type") != "PROMPT_TUNING":
        raise PromptFileError(f"{d} holds a {config.get('peft_type')} adapter; only PROMPT_TUNING adapters are prompts")
    with safe_open(str(d / PEFT_WEIGHTS), framework="pt") as f:
        tensor = f.get_tensor(KEY)
    n = config.get("num_virtual_tokens")
    if config.get("num_transformer_submodules", 1) != 1:
        # PEFT stacks [encoder prompt; decoder prompt]; spot prompts the encoder only.
        tensor = tensor[:n]
    return tensor.to(torch.float32), config


def load_numpy_prompt(path: str | Path, hidden_size: int | None = None) -> torch.Tensor:
    """Reads a SPoT reference-code prompt: an .npy array [L, H] (often saved with no extension),
    or raw float32 bytes, which need `hidden_size` to be reshaped."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"numpy prompt file {path} does not exist")
    with open(path, "rb") as f:
        is_npy = f.read(6) == b"\x93NUMPY"
    if is_npy:
        arr = np.load(path, allow_pickle=False)
    elif hidden_size is None:
        raise PromptFileError(f"{path} is not an .npy file; pass hidden_size to read it as raw float32 [L, H]")
    else:
        arr = np.fromfile(path, dtype=np.float32)
        if arr.size % hidden_size:
            raise PromptShapeError(f"{path} holds {arr.size} floats, not a multiple of hidden size {hidden_size}")
        arr = arr.reshape(-1, hidden_size)
    tensor = torch.from_numpy(np.asarray(arr, dtype=np.float32).copy())
    if hidden_size is not None:
        check_shape(tensor, None, hidden_size, what=f"numpy prompt {path}", model=f"hidden size {hidden_size}")
    return tensor


def read_prompt(path: str | Path, hidden_size: int | None = None) -> torch.Tensor:
    """Any supported prompt file -> [L, H]: spot safetensors, PEFT adapter dir, SPoT numpy."""
    p = Path(path)
    if p.is_dir():
        return import_peft(p)[0]
    if not p.exists():
        raise PromptFileError(f"prompt file {p} does not exist")
    if p.suffix == ".safetensors":
        return load_prompt(p)[0]
    return load_numpy_prompt(p, hidden_size)
