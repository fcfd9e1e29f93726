"""Frozen pretrained backbones: HF ids or local paths, the offline GGUF models, tiny test models.

A `Backbone` is the frozen model plus its tokenizer. Every parameter has requires_grad=False;
only the soft prompt is trained.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    Gemma3TextConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    T5Config,
)
from transformers.utils import logging as hf_logging

from spot_core.builtin_models import GGUF_MODELS, BackboneError, gguf_config, gguf_parts, load_gguf_model
from spot_core.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Backbone:
    """A frozen LM and its tokenizer.

    Attributes:
        name: the name it was loaded by (a built-in name, hub id or path).
        model: the frozen HF model (eval mode; dropout is switched on by the trainer).
        tokenizer: its tokenizer, with a pad token.
    """

    name: str
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(self.model.config.is_encoder_decoder)

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def embeddings(self) -> torch.Tensor:
        """[V, H] input embeddings as they enter the transformer, the space soft prompts live in.

        The embedding matrix, times the embedding module's scale where it has one: Gemma multiplies by
        sqrt(H) inside its embedding module, and the prompt is prepended after it (PromptedLM.embed), so
        prompts initialised from raw rows would start sqrt(H) too small. Scaled, this is a new [V, H] tensor.
        """
        module = self.model.get_input_embeddings()
        scale = getattr(module, "embed_scale", None)
        if scale is None:
            return module.weight
        return module.weight * torch.as_tensor(scale, device=module.weight.device).to(module.weight.dtype)


class PromptOnceError(ConfigError):
    """prompt_once=True was asked for on a model where the prompt's states depend on the input."""


def resolve_prompt_once(prompt_once: bool | None, is_encoder_decoder: bool, model: str) -> bool:
    """Whether the prompt runs once per batch (spot_core.prompted): None = wherever it applies (decoder-only);
    True on an encoder-decoder model is refused."""
    if prompt_once is None:
        return not is_encoder_decoder
    if prompt_once and is_encoder_decoder:
        raise PromptOnceError(
            f"prompt_once=true cannot apply to {model!r}: it is an encoder-decoder model, whose bidirectional "
            "encoder makes the prompt's states depend on the input. Set model.prompt_once=false."
        )
    return bool(prompt_once)


def default_cache_dir() -> Path:
    """`$SPOT_CACHE`, else `~/.cache/spot`."""
    return Path(os.environ.get("SPOT_CACHE", Path.home() / ".cache" / "spot"))


def freeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def load_backbone(
    name: str, cache_dir: str | Path | None = None, dtype: str = "float32", device: str = "cpu"
) -> Backbone:
    """Loads a frozen backbone.

    Args:
        name: a built-in name (BUILTIN_MODELS: the GGUF models `smollm2-135m`, `gemma3-270m` and the tiny
            test models), a local directory with an HF model, or a hub id (needs the hub or the HF cache).
        cache_dir: where built-in models are cached (default `default_cache_dir()`).
        dtype: backbone weights dtype, one of DTYPES (the prompt itself stays float32).
        device: torch device string.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of: {', '.join(DTYPES)}; got {dtype!r}")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    hf_logging.disable_progress_bar()
    if name in GGUF_MODELS:
        model, tok = load_gguf_model(name, cache)
    elif name in TINY_MODELS:
        model, tok = TINY_MODELS[name]()
    else:
        model, tok = _load_hf(name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = freeze(model.to(device=device, dtype=DTYPES[dtype]))
    if torch.device(device).type == "cuda":
        use_tf32()
    return Backbone(name=name, model=model, tokenizer=tok)


def use_tf32() -> None:
    """Float32 matmuls on a GPU's tensor cores in TF32 (Ampere and later; older GPUs ignore it), for this process.

    A float32 backbone then runs several times faster: TF32 rounds the products' inputs to a 10-bit mantissa and
    accumulates in float32 (about 1e-3 relative error per product, finer than a bfloat16 backbone's 8 bits), in
    the forward pass and in the backward pass that carries the prompt's gradient; the prompt, the loss and the
    optimizer stay float32.
    `set_float32_matmul_precision` keeps torch's precision settings consistent; setting only
    `torch.backends.cuda.matmul.fp32_precision` (the newer per-backend switch) leaves them mixed, and
    `get_float32_matmul_precision()`, which torch.compile reads, then raises. cuDNN convolutions use TF32 by
    default (and these models have none)."""
    torch.set_float32_matmul_precision("high")


def check_backbone(name: str, cache_dir: str | Path | None = None, prompt_once: bool | None = None) -> None:
    """Raises BackboneError, saying what to do, unless `name` can be loaded here; reads no weights (a built-in's
    cache or installed files, else the model's config), so a study can check every model before it starts.
    `prompt_once=True` is refused here too on an encoder-decoder model (PromptOnceError)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if name in GGUF_MODELS:  # all decoder-only
        if not (cache / "models" / name / "model.safetensors").exists():
            gguf_parts(GGUF_MODELS[name])
        return
    config = TINY_MODELS[name]()[0].config if name in TINY_MODELS else _hf_config(name)
    resolve_prompt_once(prompt_once, bool(config.is_encoder_decoder), name)


def _hf_config(name: str):
    try:
        return AutoConfig.from_pretrained(name)
    except OSError as e:
        raise BackboneError(
            f"cannot load model {name!r}: it is not a built-in name ({', '.join(BUILTIN_MODELS)}), "
            f"not a local model directory, and not in the Hugging Face cache ({e.__class__.__name__}). "
            "Use a built-in name, a directory written by save_pretrained, or download it once with internet."
        ) from e


def _load_hf(name: str) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    config = _hf_config(name)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    return auto.from_pretrained(name, dtype=torch.float32), AutoTokenizer.from_pretrained(name)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A 259-token byte-level tokenizer (pad, eos, unk + 256 bytes) for tiny test models; no downloads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _seeded(build, seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def tiny_t5(d_model: int = 32) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A 2-layer T5 (random weights, fixed seed) with the byte tokenizer."""
    tok = byte_tokenizer()
    cfg = T5Config(
        vocab_size=len(tok),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.1,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return _seeded(lambda: AutoModelForSeq2SeqLM.from_config(cfg)), tok


def _tiny_decoder(config_class, hidden_size: int, **extra) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A 2-layer decoder-only model of `config_class` (random weights, fixed seed) with the byte tokenizer."""
    tok = byte_tokenizer()
    cfg = config_class(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        **extra,
    )
    return _seeded(lambda: AutoModelForCausalLM.from_config(cfg)), tok


def tiny_llama(hidden_size: int = 32) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A 2-layer Llama (random weights, fixed seed) with the byte tokenizer."""
    return _tiny_decoder(LlamaConfig, hidden_size, tie_word_embeddings=False)


def tiny_gemma3(hidden_size: int = 64) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A 2-layer Gemma 3 text model (random weights, fixed seed) with the byte tokenizer.

    Like the real one it scales its input embeddings by sqrt(H) and alternates sliding-window and full
    attention; its window of 8 tokens is short enough for test inputs to cross it. Unlike Gemma 3 it
    caps its final logits, so that this path of PromptedLM.head is exercised.
    """
    return _tiny_decoder(
        Gemma3TextConfig,
        hidden_size,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        final_logit_softcapping=30.0,
    )


TINY_MODELS = {
    "tiny-t5": tiny_t5,
    "tiny-llama": tiny_llama,
    "tiny-llama-wide": lambda: tiny_llama(hidden_size=48),
    "tiny-gemma3": tiny_gemma3,
}
BUILTIN_MODELS = (*GGUF_MODELS, *TINY_MODELS)


@dataclass(frozen=True)
class ModelDims:
    """What a PEFT prompt-tuning adapter records of its base model."""

    hidden_size: int  # the prompt's width (PEFT's token_dim)
    num_layers: int
    num_attention_heads: int
    is_encoder_decoder: bool


def model_config(name: str, cache_dir: str | Path | None = None) -> PretrainedConfig:
    """The config of a model `load_backbone` can load, without its weights (a built-in GGUF model's from its cache,
    or from its GGUF file's metadata where the cache has not been built yet)."""
    if name in TINY_MODELS:
        return TINY_MODELS[name]()[0].config  # tiny random models exist only as code: build one (milliseconds)
    if name in GGUF_MODELS:
        cache = (Path(cache_dir) if cache_dir else default_cache_dir()) / "models" / name
        if not (cache / "model.safetensors").exists():
            return gguf_config(GGUF_MODELS[name])
        return AutoConfig.from_pretrained(cache)
    return AutoConfig.from_pretrained(name)


def model_dims(name: str, cache_dir: str | Path | None = None, prompt_once: bool | None = None) -> ModelDims:
    """The dimensions of model `name`; BackboneError (saying what to do) if it cannot be loaded here."""
    check_backbone(name, cache_dir, prompt_once)
    config = model_config(name, cache_dir)
    return ModelDims(
        hidden_size=config.hidden_size,  # T5's d_model, through its attribute map
        num_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        is_encoder_decoder=bool(config.is_encoder_decoder),
    )
