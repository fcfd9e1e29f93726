"""The GPU execution paths, checked on CPU with the tiny models: a bfloat16 backbone with the prompt, optimizer and
loss in float32, and an evaluation whose batches shrink when the device runs out of memory."""

import json

import pytest
import torch
from conftest import no_dropout

from spot_core.backbones import load_backbone
from spot_core.encoding import Codec, encode_examples
from spot_core.evaluation import TaskData, predict
from spot_core.packing import Pack, packed_gradients
from spot_core.prompt_files import load_prompt
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt, random_uniform
from spot_core.tasks import get_task
from spot_core.trainer import Trainer, TrainerConfig

ROWS = [
    {"inputs": f"sst2 sentence: {w} {'and ' * (i % 4)}film", "targets": "positive" if i % 2 else "negative"}
    for i, w in enumerate(["good", "bad", "fine", "dull", "great", "grim", "warm", "odd", "lovely", "poor"] * 2)
]
# (model, prompt_once): the prompt-once and the concatenated decoder-only paths, sliding windows, an encoder-decoder
PATHS = [("tiny-llama", None), ("tiny-llama", False), ("tiny-gemma3", None), ("tiny-t5", None)]


def backbone(name: str, dtype: str):
    """The tiny model in `dtype`, without dropout (tiny-t5 has 0.1): the two runs compared draw no masks."""
    loaded = load_backbone(name, dtype=dtype)
    no_dropout(loaded.model)
    return loaded


def with_prompt(base, seed: int, prompt_once=None) -> PromptedLM:
    """`base` with a random [4, H] prompt of its own."""
    init = random_uniform(4, base.hidden_size, 0.5, torch.Generator().manual_seed(seed))
    return PromptedLM(base, SoftPrompt(init), prompt_once)


def pack(name: str, dtype: str, out, prompt_once=None) -> list[Trainer]:
    """Three SPoT-like runs (Adafactor, lr 0.3) on one backbone, each with its own prompt, seed and batch size."""
    base = backbone(name, dtype)
    codec = Codec(base.tokenizer, base.is_encoder_decoder, 64, 8)
    data = TaskData(get_task("sst2_v1"), codec, encode_examples(codec, ROWS), encode_examples(codec, ROWS[:6]))
    trainers = []
    for n in range(3):
        config = TrainerConfig(steps=6, batch_size=3 + n, lr=0.3, eval_every=3, eval_batch_size=4, seed=n)
        trainers.append(Trainer(config, with_prompt(base, n, prompt_once), data, out / f"run{n}"))
    return trainers


@pytest.mark.parametrize(("name", "prompt_once"), PATHS)
def test_a_bf16_backbone_trains_a_pack_in_float32_close_to_float32(tmp_path, name, prompt_once):
    results = {}
    for dtype in ("float32", "bfloat16"):
        trainers = pack(name, dtype, tmp_path / dtype, prompt_once)
        results[dtype] = Pack(trainers).fit()
        assert next(trainers[0].model.model.parameters()).dtype == getattr(torch, dtype)
        for t in trainers:  # what trains is float32 whatever the backbone: the prompt and its optimizer state
            assert t.model.prompt.weight.dtype == torch.float32
            state = t.optimizer.state[t.model.prompt.weight]
            assert state and all(v.dtype == torch.float32 for v in state.values() if torch.is_tensor(v))
    for n, result in enumerate(results["bfloat16"]):
        assert not isinstance(result, Exception), result
        curves = [json.loads((tmp_path / d / f"run{n}" / "metrics.json").read_text()) for d in results]
        losses = [[r["train/loss"] for r in curve if "train/loss" in r] for curve in curves]
        assert len(losses[1]) == 2 and all(torch.isfinite(torch.tensor(losses[1])))
        # bf16 keeps 8 mantissa bits: measured at most 6e-3 apart (tiny T5), 2e-4 (Gemma 3), 2e-5 (Llama)
        assert losses[1] == pytest.approx(losses[0], rel=2e-2)
        prompt, _ = load_prompt(tmp_path / "bfloat16" / f"run{n}" / "final_prompt.safetensors")
        assert prompt.dtype == torch.float32


@pytest.mark.parametrize(("name", "prompt_once"), PATHS)
def test_on_a_bf16_backbone_the_states_logits_loss_and_gradient_are_float32(name, prompt_once):
    grads, losses = {}, {}
    for dtype in ("float32", "bfloat16"):
        base = backbone(name, dtype)
        codec = Codec(base.tokenizer, base.is_encoder_decoder, 64, 8)
        models = [with_prompt(base, n, prompt_once) for n in range(2)]
        if models[0].shares_prompt:
            states = models[0].prompt_states(leaves=True)
            assert {t.dtype for t in states.keys + states.values} == {torch.float32}  # gradients sum in float32
            assert states.dtype == getattr(torch, dtype)  # what the backbone's attention gets
            assert models[0].head(torch.zeros(2, base.hidden_size, dtype=states.dtype)).dtype == torch.float32
        batches = [encode_examples(codec, ROWS[:4]), encode_examples(codec, ROWS[4:9])]
        losses[dtype] = torch.stack(packed_gradients(models, batches, codec, chunk=4))
        grads[dtype] = [m.prompt.weight.grad for m in models]
        assert losses[dtype].dtype == torch.float32 and torch.isfinite(losses[dtype]).all()
        assert all(g.dtype == torch.float32 for g in grads[dtype])
    torch.testing.assert_close(losses["bfloat16"], losses["float32"], rtol=2e-2, atol=0)
    for g16, g32 in zip(grads["bfloat16"], grads["float32"], strict=True):  # measured: 0.6-2.8 % apart
        assert (g16 - g32).norm() / g32.norm() < 0.1


def test_an_evaluation_halves_its_batches_when_the_device_runs_out_of_memory(monkeypatch):
    import spot_core.evaluation as evaluation

    base = backbone("tiny-llama", "float32")
    model = with_prompt(base, 0)
    codec = Codec(base.tokenizer, False, 64, 8)
    task, examples = get_task("sst2_v1"), encode_examples(codec, ROWS)
    expected = predict(model, codec, task, examples, batch_size=16)
    real, sizes = evaluation.label_scores, []

    def fits_three(model, inputs, labels, prompt=None):
        sizes.append(len(inputs))
        if len(inputs) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, inputs, labels, prompt)

    monkeypatch.setattr(evaluation, "label_scores", fits_three)
    assert predict(model, codec, task, examples, batch_size=16) == expected
    # 16 fails, 8 fails, 4 fails; the 20 examples then go 2 at a time (the size it found, kept to the end)
    assert sizes == [16, 8, 4] + [2] * 10

    def fits_none(model, inputs, labels, prompt=None):
        sizes.append(len(inputs))
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    sizes.clear()
    monkeypatch.setattr(evaluation, "label_scores", fits_none)
    with pytest.raises(torch.OutOfMemoryError):  # not even one example fits: the error is the device's
        predict(model, codec, task, examples, batch_size=4)
    assert sizes == [4, 2, 1]


def test_loading_on_cpu_leaves_float32_matmuls_exact():
    before = torch.get_float32_matmul_precision()
    load_backbone("tiny-llama")
    assert torch.get_float32_matmul_precision() == before  # TF32 is switched on for CUDA backbones alone
