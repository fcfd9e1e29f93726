"""Activated-neuron overlap ("ON"), the transferability indicator of Su et al. 2022 (NAACL).

A neuron is one unit of a feed-forward (FFN) layer's intermediate activation: the input of the FFN's output
projection, [B, T, I]. It is *activated* when that value is > 0. A prompt's activation pattern is a bool mask
[layers, positions, I]; two prompts are compared by the cosine of their flattened masks. This module records the
masks; the overlap itself is `spot_core.similarity.neuron_overlap` (numpy, beside the other indicators).

Choices, against the reference code (thunlp/Prompt-Transferability):
- Input: the soft prompt followed by one fixed token, nothing else. `formatter/activate_neuronPromptT5Formatter.py`
  builds `prompt_prefix + tokenizer.encode("<extra_id_0>", add_special_tokens=False)` (the RoBERTa formatter
  uses "<s>"). `default_input_ids` takes `<extra_id_0>` when the vocabulary has it, else the EOS token.
- Readout: RoBERTa (`activate_neuron.py`) keeps `outputs[:, :, :1, :]` of that input (`[:, :, :100, :]`, every
  prompt position, is commented out beside it). T5 (`Prompt-Transferability-1.0/activate_neuron_T5.py`) hooks the
  decoder, `decoder.block[n].layer[2].DenseReluDense.wi`, and keeps its first position, `outputs[:, :1, :1, :]`;
  the encoder variant `outputs[:, :, 100:101, :]` (the token after the 100 prompt tokens) is commented out.
  spot prompts the encoder only and reads encoder layers: `Readout.PROMPT` (default) the L prompt positions,
  `Readout.INPUT` the fixed token after the prompt (the encoder variant).
- The reference hooks the output of `wi` (before ReLU): for T5's ReLU FFN, wi(x) > 0 iff relu(wi(x)) > 0, the
  input of `wo`. For gated FFNs (T5 v1.1, Llama SwiGLU) spot reads act(gate) * up, what the output projection sees.
- Overlap (`Prompt-Transferability-1.0/caculate_metric_value_for_correlation.py`, `ActivatedNeurons`): masks as
  0/1 floats, cosine over all layers or over windows of 3 layers (`activated_1[layer:layer+3]`); the report
  compares thirds of the layers (`spot_core.similarity.layer_windows`).

Decoder-only models see the prompt first, so with causal attention the prompt positions' activations do not
depend on the tokens fed after it; only `Readout.INPUT` does. T5's encoder is bidirectional: there both depend on it.
Decoder-only models run through `PromptedLM.hidden`, the engine every stage shares: in prompt-once mode the prompt
and the fixed token are two passes, whose activations are joined per layer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from spot_core.backbones import Backbone, load_backbone
from spot_core.prompt_files import load_prompt
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt, check_shape
from spot_core.run_dir import RunDir, write_atomic
from spot_core.tracking import NullTracker, Tracker

# Suffixes of the FFN output projection's module name, per architecture family.
FFN_OUTPUT_SUFFIXES = (
    "DenseReluDense.wo",  # T5 (encoder blocks' last sub-layer)
    "mlp.down_proj",  # Llama, Gemma, Qwen, Mistral, ...
    "mlp.c_proj",  # GPT-2 style
)
KEY = "activated_neurons"
SENTINEL = "<extra_id_0>"


class Readout(StrEnum):
    PROMPT = "prompt"  # the L prompt positions: [layers, L, I]
    INPUT = "input"  # the tokens fed after the prompt: [layers, T, I]


def ffn_output_projections(model: nn.Module) -> list[nn.Module]:
    """The FFN output projection of every layer that sees the prompt (T5: encoder blocks only), in layer order.

    Raises:
        ValueError: the layout is not recognised, or not every layer has one projection.
    """
    config = getattr(model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    is_enc_dec = bool(getattr(config, "is_encoder_decoder", False))
    root = model.get_encoder() if is_enc_dec else model
    found = [m for name, m in root.named_modules() if any(name.endswith("." + s) for s in FFN_OUTPUT_SUFFIXES)]
    n_layers = getattr(config, "num_layers", None) or getattr(config, "num_hidden_layers", None)
    if not found or (n_layers is not None and len(found) != n_layers):
        where = "its encoder" if is_enc_dec else "the model"
        per = f", {n_layers} layers" if n_layers else ""
        raise ValueError(
            f"cannot find the feed-forward layers of {type(model).__name__}: looked in {where} for modules named "
            f"*.{', *.'.join(FFN_OUTPUT_SUFFIXES)} (one per layer{per}), found {len(found)}. "
            "Mixture-of-experts and other FFN layouts are not supported."
        )
    return found


def default_input_ids(tokenizer) -> list[int]:
    """The fixed token fed after the prompt: T5's `<extra_id_0>` (as the reference), else EOS."""
    vocab = tokenizer.get_vocab()
    return [vocab[SENTINEL]] if SENTINEL in vocab else [tokenizer.eos_token_id]


def activated_neurons(
    model: PromptedLM,
    prompt: torch.Tensor | None = None,
    input_ids: Sequence[int] | None = None,
    readout: Readout | str = Readout.PROMPT,
) -> torch.Tensor:
    """Which FFN neurons a soft prompt activates (> 0), per layer and position.

    Runs the frozen backbone (T5: its encoder only) in eval mode without gradients on [prompt; input_ids].
    Hooks are removed and every module's train/eval mode is restored afterwards, also on error.

    Args:
        model: the prompted model.
        prompt: [L, H] prompt to probe; default the model's own prompt.
        input_ids: the token ids fed after the prompt; default `default_input_ids(tokenizer)`.
        readout: positions to record, `prompt` (default) or `input`.

    Returns:
        bool [layers, L, I] (`prompt`) or [layers, T, I] (`input`), on the CPU.
    """
    if prompt is None:
        with torch.no_grad():
            prompt = model.prompt()
    check_shape(prompt, None, model.backbone.hidden_size, what="the probed prompt", model=model.backbone.name)
    ids = list(default_input_ids(model.backbone.tokenizer) if input_ids is None else input_ids)
    if not ids:
        raise ValueError("activated_neurons needs at least one input token after the prompt")
    modules = ffn_output_projections(model.model)
    L = prompt.shape[0]
    keep = slice(0, L) if Readout(readout) is Readout.PROMPT else slice(L, None)
    seen: dict[nn.Module, list[torch.Tensor]] = {m: [] for m in modules}

    def record(module, args):
        # One call per layer and forward pass: prompt-once runs the prompt and then the input as two passes.
        seen[module].append(args[0][0] > 0)

    probe = PromptedLM(model.backbone, SoftPrompt(prompt.detach().to(model.device)), model.prompt_once)
    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_pre_hook(record) for m in modules]
    try:
        model.eval()
        with torch.no_grad():
            ids_t = torch.tensor([ids], device=model.device)
            mask = torch.ones_like(ids_t)
            if model.is_encoder_decoder:
                embeds, full_mask = probe.embed(ids_t, mask)
                model.model.get_encoder()(inputs_embeds=embeds, attention_mask=full_mask)
            else:
                probe.hidden(ids_t, mask)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    passes = 2 if probe.shares_prompt else 1  # prompt once: the prompt's pass, then the input's
    counts = [len(calls) for calls in seen.values()]
    if set(counts) != {passes}:  # e.g. a layer run twice (activation checkpointing)
        raise RuntimeError(f"expected {passes} activation(s) at every FFN layer, recorded {counts}")
    masks = [torch.cat(calls, 0)[keep].cpu() for calls in seen.values()]  # [L + T, I] per layer
    return torch.stack(masks)


def save_neurons(path: str | Path, mask: torch.Tensor) -> Path:
    """Writes a bool mask as safetensors: bit-packed uint8 bytes (numpy packbits) + its shape in metadata; atomic."""
    if mask.dtype != torch.bool:
        raise ValueError(f"save_neurons expects a bool mask, got dtype {mask.dtype}")
    packed = torch.from_numpy(np.packbits(mask.detach().cpu().numpy().reshape(-1)))
    meta = {"shape": json.dumps(list(mask.shape)), "encoding": "packbits"}
    return write_atomic(path, lambda tmp: save_file({KEY: packed}, str(tmp), metadata=meta))


def load_neurons(path: str | Path) -> torch.Tensor:
    """Reads a mask written by `save_neurons` -> the same bool tensor."""
    try:
        with safe_open(str(path), framework="pt") as f:
            packed, meta = f.get_tensor(KEY), f.metadata() or {}
    except Exception as e:  # a missing file, not safetensors, or no such tensor
        raise ValueError(f"{path} is not an activated-neuron file written by save_neurons ({e})") from e
    if "shape" not in meta:
        raise ValueError(f"{path} has no 'shape' metadata; not written by save_neurons")
    shape = json.loads(meta["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    if packed.numel() != (count + 7) // 8:
        raise ValueError(f"{path} holds {packed.numel()} bytes, but shape {shape} needs {(count + 7) // 8}")
    bits = np.unpackbits(packed.numpy(), count=count)
    return torch.from_numpy(bits.astype(bool).reshape(shape))


def record_neurons(
    model: str,
    prompt_file: str | Path,
    out_dir: str | Path,
    cache_dir: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    tracker: Tracker | None = None,
    prompt_once: bool | None = None,
    backbone: Backbone | None = None,
) -> dict[str, float]:
    """The activated-neuron mask of one prompt file on `model`, written to `out_dir/neurons.safetensors` with a
    result.json (the share of neurons active); a finished record is not repeated. `backbone`: `model` already
    loaded (several prompts on one backbone load it once)."""
    run = RunDir(out_dir)
    if run.finished():
        return run.result()
    prompt = load_prompt(prompt_file)[0]
    backbone = backbone or load_backbone(model, cache_dir, dtype, device)
    mask = activated_neurons(PromptedLM(backbone, SoftPrompt(prompt), prompt_once))
    path = save_neurons(run.neurons, mask)
    result = {"neurons/active_share": float(mask.float().mean()), "neurons/layers": float(mask.shape[0])}
    tracker = tracker or NullTracker()
    tracker.log_params({"model": model, "prompt_file": str(prompt_file), "shape": str(list(mask.shape))})
    tracker.log_metrics(result, 0)
    tracker.log_artifact(path)
    run.finish(result)
    return result
