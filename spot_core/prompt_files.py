"""Prompt files: spot's safetensors format, PEFT's prompt-tuning format, the SPoT reference numpy files
(`read_prompt` reads any of them, recognised by their content, not their names).

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

from spot_core.errors import SpotError
from spot_core.prompts import PromptShapeError, check_shape
from spot_core.run_dir import write_atomic

KEY = "prompt_embeddings"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"


FORMATS = (
    "a spot prompt file (.safetensors, as training writes it), a PEFT prompt-tuning adapter folder "
    "(adapter_config.json + adapter_model.safetensors), or a SPoT numpy prompt (.npy, written by np.save)"
)
USE = f"A prompt file is {FORMATS}"
NPY_MAGIC = b"\x93NUMPY"


class PromptFileError(SpotError, ValueError):
    """A prompt file is missing or not a prompt file; the message says which formats are read."""


def save_prompt(path: str | Path, prompt: torch.Tensor, **metadata: Any) -> Path:
    """Writes prompt [L, H] as float32 with metadata; atomic (a reader never sees half a file), its mode
    following the umask."""
    if prompt.dim() != 2:
        raise PromptShapeError(f"a prompt is [L, H]; got shape {tuple(prompt.shape)}")
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    meta.update(length=json.dumps(prompt.shape[0]), hidden_size=json.dumps(prompt.shape[1]))
    tensors = {KEY: prompt.detach().to("cpu", torch.float32).contiguous()}
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def is_safetensors(path: Path) -> bool:
    """Whether the file starts as a safetensors file does: an 8-byte little-endian header size, then that many
    bytes of JSON header within the file."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def _missing(path: Path, what: str = "prompt file") -> PromptFileError:
    where = "" if path.parent.is_dir() else f" (nor does its folder {path.parent})"
    return PromptFileError(f"{what} {path} does not exist{where}")


def load_prompt(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Reads a spot prompt file -> ([L, H] float32, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            if KEY not in f.keys():
                raise PromptFileError(
                    f"{path} is a safetensors file without a {KEY!r} tensor (it holds {list(f.keys())}): not a "
                    f"prompt. {USE}"
                )
            tensor, raw = f.get_tensor(KEY), f.metadata() or {}
    except PromptFileError:
        raise
    except Exception as e:  # safetensors raises its own error types for non-safetensors files
        raise PromptFileError(f"{path} is not a safetensors prompt file ({e}). {USE}") from e
    return tensor.to(torch.float32), {k: _json_or_text(v) for k, v in raw.items()}


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:  # metadata written by another tool (PEFT's {"format": "pt"})
        return value


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
    """Writes PEFT's prompt-tuning adapter (adapter_config.json + adapter_model.safetensors), each file atomically
    and following the umask.

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
    tensors = {KEY: prompt.detach().to("cpu", torch.float32).contiguous()}
    write_atomic(out / PEFT_WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    write_atomic(out / PEFT_CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
    return out


def import_peft(adapter_dir: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Reads a PEFT prompt-tuning adapter -> ([L, H] float32, its adapter_config)."""
    d = Path(adapter_dir)
    if not d.exists():
        raise _missing(d, "PEFT adapter folder")
    if not (d / PEFT_CONFIG).is_file() or not (d / PEFT_WEIGHTS).is_file():
        needs = f"it needs {PEFT_CONFIG} and {PEFT_WEIGHTS}"
        raise PromptFileError(f"{d} is a folder but not a PEFT adapter ({needs}). {USE}")
    try:
        config = json.loads((d / PEFT_CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PromptFileError(f"{d / PEFT_CONFIG} is not valid JSON ({e})") from e
    if config.get("peft_type") != "PROMPT_TUNING":
        raise PromptFileError(f"{d} holds a {config.get('peft_type')} adapter; only PROMPT_TUNING adapters are prompts")
    tensor = load_prompt(d / PEFT_WEIGHTS)[0]
    n = config.get("num_virtual_tokens")
    if config.get("num_transformer_submodules", 1) != 1:
        # PEFT stacks [encoder prompt; decoder prompt]; spot prompts the encoder only.
        tensor = tensor[:n]
    return tensor, config


def load_numpy_prompt(path: str | Path, hidden_size: int | None = None) -> torch.Tensor:
    """Reads a SPoT reference-code prompt: an .npy array [L, H] (often saved with no extension), or, only when
    `hidden_size` is given, raw float32 bytes reshaped to [-1, hidden_size] (raw bytes cannot be recognised by
    their content: `read_prompt` never reads a file as raw floats)."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, "numpy prompt file")
    with open(path, "rb") as f:
        is_npy = f.read(6) == NPY_MAGIC
    if is_npy:
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:  # an object array, or a damaged file
            raise PromptFileError(f"{path} is an .npy file but not a float array ({e})") from e
    elif hidden_size is None:
        raise PromptFileError(f"{path} is not an .npy file; pass hidden_size to read it as raw float32 [L, H]")
    else:
        arr = np.fromfile(path, dtype=np.float32)
        if arr.size % hidden_size:
            raise PromptShapeError(f"{path} holds {arr.size} floats, not a multiple of hidden size {hidden_size}")
        arr = arr.reshape(-1, hidden_size)
    if not np.issubdtype(arr.dtype, np.number):
        raise PromptFileError(f"{path} holds an array of {arr.dtype}, not numbers: not a prompt")
    tensor = torch.from_numpy(np.asarray(arr, dtype=np.float32).copy())
    if hidden_size is not None:
        check_shape(tensor, None, hidden_size, what=f"numpy prompt {path}", model=None)
    return tensor


def read_prompt_file(path: str | Path) -> tuple[torch.Tensor, str | None]:
    """Any supported prompt file, recognised by its content, not its name -> (the prompt, the model it was trained
    on where the file says: a spot file's `model`, a PEFT adapter's base model).

    Accepted: a spot .safetensors file, a PEFT adapter folder, a SPoT numpy .npy file (also without the
    extension). Anything else is a PromptFileError listing these.
    """
    p = Path(path)
    if p.is_dir():
        tensor, config = import_peft(p)
        return _finite(tensor, p), config.get("base_model_name_or_path")
    if not p.exists():
        raise _missing(p)
    if p.stat().st_size == 0:
        raise PromptFileError(f"prompt file {p} is empty (0 bytes), not a prompt: copy or train it again. {USE}")
    with p.open("rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head == NPY_MAGIC:
        return _finite(load_numpy_prompt(p), p), None
    if is_safetensors(p):
        tensor, meta = load_prompt(p)
        trained_on = meta.get("model") or meta.get("target_model")  # a projected prompt: the model it is for
        return _finite(tensor, p), trained_on if isinstance(trained_on, str) else None
    kind = "a text file" if _is_text(p) else "a binary file of another format"
    raise PromptFileError(f"{p} is not a prompt file ({kind}). {USE}")


def _finite(prompt: torch.Tensor, path: Path) -> torch.Tensor:
    """`prompt`, unless some of its values are NaN or infinite: training from it would fail at its first step,
    after the run has started, and a score of it would mean nothing."""
    bad = int((~torch.isfinite(prompt)).sum())
    if bad:
        raise PromptFileError(
            f"prompt file {path} holds {bad} of {prompt.numel()} values that are not finite (NaN or infinite): "
            "training from it or scoring it gives NaN. Use another prompt file, or train this one again (with a "
            "lower trainer.lr if its training diverged)"
        )
    return prompt


def _is_text(path: Path) -> bool:
    with path.open("rb") as f:
        sample = f.read(4096)
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\0" not in sample


def read_prompt(path: str | Path, hidden_size: int | None = None) -> torch.Tensor:
    """Any supported prompt file -> [L, H] (`read_prompt_file`). With `hidden_size`, a prompt of another width is
    refused here (PromptShapeError naming the model the file was trained on)."""
    tensor, trained_on = read_prompt_file(path)
    if hidden_size is not None:
        check_shape(tensor, None, hidden_size, what=f"prompt file {path}", model=None, trained_on=trained_on)
    return tensor
