"""Activated neurons: exact masks on a hand-built model, hooks and modes, storage (the overlap of two masks:
test_similarity.py)."""

import pytest
import torch
from conftest import prompted
from safetensors import safe_open
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from spot_core.backbones import Backbone, byte_tokenizer, freeze
from spot_core.neurons import (
    activated_neurons,
    default_input_ids,
    ffn_output_projections,
    load_neurons,
    save_neurons,
)
from spot_core.prompt_files import save_prompt
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt
from spot_core.similarity import neuron_overlap

# Hand-built Llama (hidden 8, intermediate 6): coordinate 7 of every input vector is a positive "bias" 1.
PROMPT = torch.tensor(
    [
        [1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, 1.0],
        [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, -3.0, 1.0],
        [2.0, 1.0, -1.0, -1.0, 0.0, -2.0, 0.0, 1.0],
    ]
)
EOS_EMBEDDING = torch.tensor([-1.0, 2.0, 0.5, -3.0, -1.0, 1.0, 0.0, 1.0])
# Layer 0: neuron j (j < 5) is on iff x_j > 0; neuron 5 has a negative up-projection: on iff x_5 < 0.
# Layer 1: neuron j is on iff x_{(j + 2) mod 6} < 0. A coordinate of exactly 0 gives activation 0: off.
EXPECTED_PROMPT = [
    [[1, 0, 1, 0, 1, 1], [0, 0, 0, 1, 1, 0], [1, 1, 0, 0, 0, 1]],
    [[0, 1, 0, 1, 0, 1], [1, 0, 0, 0, 1, 1], [1, 1, 0, 1, 0, 0]],
]
EXPECTED_EOS = [[[0, 1, 1, 0, 0, 0]], [[0, 1, 1, 0, 1, 0]]]


def hand_built_llama() -> PromptedLM:
    """Attention and MLP outputs are zeroed, so every layer's MLP sees the input embedding itself
    (RMS-normalised: a positive rescaling, signs kept). gate_proj picks one coordinate per neuron; up_proj
    picks the positive bias coordinate, so silu(gate) * up > 0 exactly when the picked coordinate has the
    gate's sign (neuron 5 of layer 0: the opposite sign, as its up-projection is negative)."""
    tok = byte_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=8,
        intermediate_size=6,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    layers = model.model.layers
    with torch.no_grad():
        for layer in layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.post_attention_layernorm.weight.fill_(1.0)
            layer.mlp.gate_proj.weight.zero_()
            layer.mlp.up_proj.weight.zero_()
            layer.mlp.up_proj.weight[:, 7] = 1.0
            layer.mlp.down_proj.weight.zero_()
        layers[0].mlp.up_proj.weight[5, 7] = -1.0
        for j in range(6):
            layers[0].mlp.gate_proj.weight[j, j] = 1.0
            layers[1].mlp.gate_proj.weight[j, (j + 2) % 6] = -1.0
        model.get_input_embeddings().weight[1] = EOS_EMBEDDING
    return PromptedLM(Backbone("hand-built-llama", freeze(model), tok), SoftPrompt(PROMPT))


def as_bool(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def test_hand_built_llama_gives_the_known_masks():
    model = hand_built_llama()
    assert default_input_ids(model.backbone.tokenizer) == [1]  # no <extra_id_0> in the byte vocabulary: EOS
    got = activated_neurons(model)
    assert got.dtype == torch.bool and got.shape == (2, 3, 6)
    assert torch.equal(got, as_bool(EXPECTED_PROMPT))
    assert torch.equal(activated_neurons(model, readout="input"), as_bool(EXPECTED_EOS))
    # An explicit prompt overrides the model's own; here its first two rows.
    assert torch.equal(activated_neurons(model, PROMPT[:2]), as_bool(EXPECTED_PROMPT)[:, :2])


def test_causal_prompt_positions_ignore_later_tokens_but_t5_encoder_prompt_sees_them():
    llama, _ = prompted("tiny-llama", length=5)
    assert torch.equal(activated_neurons(llama, input_ids=[5, 6, 7]), activated_neurons(llama, input_ids=[40]))
    assert not torch.equal(
        activated_neurons(llama, input_ids=[5], readout="input"),
        activated_neurons(llama, input_ids=[40], readout="input"),
    )
    t5, _ = prompted("tiny-t5", length=5)  # bidirectional encoder
    assert not torch.equal(activated_neurons(t5, input_ids=[5, 6, 7]), activated_neurons(t5, input_ids=[40]))


def pre_hooks(model: nn.Module) -> list[int]:
    return [len(m._forward_pre_hooks) for m in model.modules()]


def test_hooks_removed_and_modes_restored_also_on_error(tiny_name):
    model, _ = prompted(tiny_name, length=3)
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    dec = torch.tensor([[0, 5]]) if model.is_encoder_decoder else None
    model.eval()
    with torch.no_grad():
        before = model.logits(ids, mask, dec) if dec is not None else model.logits(ids, mask)
    hooks = pre_hooks(model)
    in_eval = activated_neurons(model)
    model.train()
    model.model.get_input_embeddings().eval()  # mixed modes must come back as they were, module by module
    modes = [m.training for m in model.modules()]

    assert torch.equal(activated_neurons(model), in_eval)  # run in eval mode: no dropout (T5 has 0.1)
    assert pre_hooks(model) == hooks
    assert all(not m._forward_pre_hooks for m in ffn_output_projections(model.model))
    assert [m.training for m in model.modules()] == modes

    boom = ffn_output_projections(model.model)[-1].register_forward_hook(lambda *_: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        activated_neurons(model)
    boom.remove()
    assert pre_hooks(model) == hooks
    assert [m.training for m in model.modules()] == modes

    model.eval()
    with torch.no_grad():
        after = model.logits(ids, mask, dec) if dec is not None else model.logits(ids, mask)
    assert torch.equal(before, after)


def test_layer_counts_and_shapes_on_tiny_models(tiny_name):
    model, _ = prompted(tiny_name, length=4)
    config = model.model.config
    layers = config.num_layers if model.is_encoder_decoder else config.num_hidden_layers
    width = config.d_ff if model.is_encoder_decoder else config.intermediate_size
    mods = ffn_output_projections(model.model)
    assert len(mods) == layers == 2
    if model.is_encoder_decoder:  # encoder blocks only: the decoder never sees the prompt positions
        encoder = set(map(id, model.model.get_encoder().modules()))
        assert all(id(m) in encoder for m in mods)
    got = activated_neurons(model)
    assert got.shape == (layers, 4, width) and got.dtype == torch.bool
    assert 0 < got.float().mean() < 1
    assert activated_neurons(model, readout="input").shape == (layers, 1, width)
    assert neuron_overlap(got.numpy(), activated_neurons(model).numpy()) == pytest.approx(1.0)  # deterministic
    other = activated_neurons(
        model, torch.randn(4, model.backbone.hidden_size, generator=torch.Generator().manual_seed(1))
    )
    assert 0 < neuron_overlap(got.numpy(), other.numpy()) < 1


def test_gpt2_style_mlp_is_found():
    model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=3, n_head=2, vocab_size=259))
    wrapped = PromptedLM(Backbone("tiny-gpt2", freeze(model), byte_tokenizer()), SoftPrompt(torch.randn(2, 16)))
    assert [m for m in ffn_output_projections(model)] == [block.mlp.c_proj for block in model.transformer.h]
    assert activated_neurons(wrapped).shape == (3, 2, 64)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    mask = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0)) > 0.5  # 105 bits, not a multiple of 8
    path = save_neurons(tmp_path / "run" / "neurons.safetensors", mask)
    back = load_neurons(path)
    assert back.dtype == torch.bool and torch.equal(back, mask)
    with safe_open(str(path), framework="pt") as f:
        (key,) = f.keys()
        assert f.get_tensor(key).dtype == torch.uint8 and f.get_tensor(key).numel() == 14
    model = hand_built_llama()
    real = activated_neurons(model)
    assert torch.equal(load_neurons(save_neurons(tmp_path / "real.safetensors", real)), real)


def test_storage_errors(tmp_path):
    with pytest.raises(ValueError, match="bool"):
        save_neurons(tmp_path / "x.safetensors", torch.ones(2, 2))
    with pytest.raises(ValueError, match="not an activated-neuron file"):
        load_neurons(save_prompt(tmp_path / "prompt.safetensors", torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="not an activated-neuron file"):
        load_neurons(tmp_path / "missing.safetensors")


class Opaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)


def test_unrecognised_ffn_layout_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Opaque.*mlp\.down_proj"):
        ffn_output_projections(Opaque())
    neox = GPTNeoXForCausalLM(
        GPTNeoXConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=259)
    )
    wrapped = PromptedLM(Backbone("tiny-neox", freeze(neox), byte_tokenizer()), SoftPrompt(torch.randn(2, 16)))
    with pytest.raises(ValueError, match=r"GPTNeoXForCausalLM.*DenseReluDense\.wo.*2 layers"):
        activated_neurons(wrapped)
    assert pre_hooks(wrapped) == [0] * len(pre_hooks(wrapped))
