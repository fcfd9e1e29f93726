"""Prompt files: spot format, PEFT export/import, SPoT numpy prompts."""

import json

import numpy as np
import pytest
import torch
from conftest import prompted

from spot_core.prompt_files import (
    PromptFileError,
    export_peft,
    import_peft,
    load_numpy_prompt,
    load_prompt,
    read_prompt,
    save_prompt,
)
from spot_core.prompts import PromptShapeError


def test_save_load_is_bit_exact_with_metadata(tmp_path):
    p = torch.randn(7, 5)
    save_prompt(
        tmp_path / "p.safetensors",
        p,
        model="tiny-llama",
        task="sst2_v1",
        step=500,
        score=91.5,
        init="sampled_vocab",
        seed=2,
    )
    loaded, meta = load_prompt(tmp_path / "p.safetensors")
    assert torch.equal(loaded, p)
    assert meta == {
        "model": "tiny-llama",
        "task": "sst2_v1",
        "step": 500,
        "score": 91.5,
        "init": "sampled_vocab",
        "seed": 2,
        "length": 7,
        "hidden_size": 5,
    }


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(PromptFileError, match="does not exist"):
        load_prompt(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a prompt")
    with pytest.raises(PromptFileError, match="not a safetensors prompt file"):
        load_prompt(tmp_path / "junk.safetensors")


def _peft_logits(model, adapter_dir, ids, mask):
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model.model, str(adapter_dir))
    peft_model.eval()
    with torch.no_grad():
        if model.is_encoder_decoder:
            dec = torch.zeros(ids.shape[0], 1, dtype=torch.long)
            return peft_model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits, dec
        return peft_model(input_ids=ids, attention_mask=mask).logits, None


def test_peft_export_loads_in_peft_with_identical_logits(tiny_name, tmp_path):
    model, codec = prompted(tiny_name, length=6)
    model.eval()
    cfg = model.model.config
    export_peft(
        tmp_path / "adapter",
        model.prompt.weight,
        base_model=tiny_name,
        is_encoder_decoder=model.is_encoder_decoder,
        num_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
    )
    ids = torch.as_tensor([codec.encode_input("sst2 sentence: it works")])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref_prompt = model.prompt.weight.clone()
        theirs, dec = _peft_logits(model, tmp_path / "adapter", ids, mask)
        ours = model.logits(ids, mask, decoder_input_ids=dec)
    if not model.is_encoder_decoder:
        theirs = theirs[:, model.prompt.length :]  # PEFT returns logits over the virtual tokens too
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    back, config = import_peft(tmp_path / "adapter")
    assert torch.equal(back, ref_prompt) and config["num_virtual_tokens"] == 6
    assert torch.equal(read_prompt(tmp_path / "adapter"), ref_prompt)


def test_peft_gives_spot_logits_alone_and_right_padded_not_left_padded(tmp_path):
    # bench/peft_interop.py on tiny Llama: the README's cases. PEFT's prompt tuning ignores position ids, so only
    # a left-padded batch moves the padded examples' tokens to other positions; the longest example has no padding.
    from bench.peft_interop import main

    out = main(["--model", "tiny-llama", "--prompt-len", "4", "--json", str(tmp_path / "peft.json")])
    cases = out["cases"]
    # float32 rounding: the two run the same layers on the same embeddings, summed in other orders
    tolerance = 64 * out["float32_eps"] * max(1.0, out["max_abs_logit"])
    assert cases["one_at_a_time"]["max_abs_diff"] <= tolerance
    assert cases["right_padded"]["max_abs_diff"] <= tolerance
    left = cases["left_padded"]["per_example"]
    assert all((left[i] <= tolerance) == (i in out["longest"]) for i in range(len(left))), (left, tolerance)
    assert json.loads((tmp_path / "peft.json").read_text()) == out


def test_numpy_prompts_from_the_reference_code(tmp_path):
    arr = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    with open(tmp_path / "prompt", "wb") as f:  # np.save to a handle: no .npy extension, as the reference code
        np.save(f, arr)
    assert torch.equal(load_numpy_prompt(tmp_path / "prompt"), torch.from_numpy(arr))
    assert torch.equal(read_prompt(tmp_path / "prompt", 3), torch.from_numpy(arr))
    arr.tofile(tmp_path / "raw")
    assert torch.equal(load_numpy_prompt(tmp_path / "raw", hidden_size=3), torch.from_numpy(arr))
    with pytest.raises(PromptFileError, match="pass hidden_size"):
        load_numpy_prompt(tmp_path / "raw")
    with pytest.raises(PromptShapeError, match=r"shape \(4, 3\).*\[L, 5\]"):
        load_numpy_prompt(tmp_path / "prompt", hidden_size=5)


PEFT_DIMS = {"is_encoder_decoder": False, "num_layers": 2, "num_attention_heads": 2}


@pytest.mark.parametrize("kind", ["npy", "peft"])
def test_a_prompt_of_values_that_are_not_finite_is_refused_in_every_format(tmp_path, kind):
    values = torch.zeros(3, 4)
    values[1, 2], values[2, 0] = float("nan"), float("-inf")
    if kind == "npy":
        path = tmp_path / "prompt.npy"
        np.save(path, values.numpy())
    else:
        path = export_peft(tmp_path / "adapter", values, "tiny-llama", **PEFT_DIMS)
    with pytest.raises(PromptFileError, match=rf"prompt file {path} holds 2 of 12 values that are not finite"):
        read_prompt(path)


def test_an_empty_file_is_called_empty(tmp_path):
    (tmp_path / "p.safetensors").write_bytes(b"")
    with pytest.raises(PromptFileError, match=r"p.safetensors is empty \(0 bytes\), not a prompt: copy or train it"):
        read_prompt(tmp_path / "p.safetensors")
