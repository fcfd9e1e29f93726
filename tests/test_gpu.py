"""The same engine on a CUDA device (skipped without one; CI has none)."""

import pytest
import torch
from conftest import prompted

from spot_core.encoding import collate, encode_examples
from spot_core.scoring import label_scores, label_scores_naive

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
EXAMPLES = [
    {"inputs": "sst2 sentence: a fine film", "targets": "positive"},
    {"inputs": "sst2 sentence: dull and long", "targets": "negative"},
]


def test_cuda_loss_gradient_and_scores_match_cpu(tiny_name):
    cpu, codec = prompted(tiny_name, length=4)
    gpu, _ = prompted(tiny_name, length=4)
    gpu.to("cuda")
    cpu.eval(), gpu.eval()
    batch = collate(encode_examples(codec, EXAMPLES), codec)
    lc = cpu.loss(batch)
    lg = gpu.loss({k: v.cuda() for k, v in batch.items()})
    lc.backward(), lg.backward()
    torch.testing.assert_close(lg.cpu(), lc, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gpu.prompt.weight.grad.cpu(), cpu.prompt.weight.grad, rtol=1e-2, atol=1e-4)
    inputs = [e.input_ids for e in encode_examples(codec, EXAMPLES)]
    labels = [codec.encode_target(w) for w in ("positive", "negative")]
    on_cpu = label_scores(cpu, inputs, labels)  # the reference: the same model and prompt, on the CPU
    assert on_cpu.shape == (len(inputs), len(labels))
    for scores in (label_scores(gpu, inputs, labels), label_scores_naive(gpu, inputs, labels)):
        torch.testing.assert_close(scores.cpu(), on_cpu, rtol=1e-3, atol=1e-3)


def test_cuda_prompt_once_equals_the_concatenated_path():
    from conftest import concatenated

    from spot_core.scoring import generate
    from spot_core.trainer import accumulate_gradients

    model, codec = prompted("tiny-llama", length=4)
    model.to("cuda").eval()
    examples = encode_examples(codec, EXAMPLES)
    grads = []
    for m, micro in ((model, 1), (concatenated(model), 2)):
        m.prompt.weight.grad = None
        accumulate_gradients(m, examples, codec, micro)
        grads.append(m.prompt.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-5)
    inputs = [e.input_ids for e in examples]
    labels = [codec.encode_target(w) for w in ("positive", "negative")]
    torch.testing.assert_close(
        label_scores(model, inputs, labels).cpu(),
        label_scores_naive(concatenated(model), inputs, labels).cpu(),
        rtol=1e-3,
        atol=1e-3,
    )
    assert generate(model, inputs, 4) == generate(concatenated(model), inputs, 4)


@pytest.fixture(autouse=True)
def exact_float32_afterwards():
    """A CUDA backbone switches TF32 on for the process (spot_core.backbones.use_tf32); each test here starts and
    ends without it, so that comparisons with float32 references are not at TF32's 1e-3."""
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision("highest")


ROWS = [
    {"inputs": f"sst2 sentence: {w} {'and ' * (i % 4)}film", "targets": "positive" if i % 2 else "negative"}
    for i, w in enumerate(["good", "bad", "fine", "dull", "great", "grim", "warm", "odd", "lovely", "poor"] * 2)
]


def cuda_runs(name: str, dtype: str = "float32", prompt_once=None, runs: int = 3):
    """`runs` models with their own random [4, H] prompts on one backbone loaded on CUDA (dropout off: tiny-t5's
    0.1 would draw other masks packed than alone), their AdamW optimizers, codec and examples."""
    from torch import nn

    from spot_core.backbones import load_backbone
    from spot_core.encoding import Codec
    from spot_core.prompted import PromptedLM
    from spot_core.prompts import SoftPrompt, random_uniform
    from spot_core.trainer import TrainerConfig, make_optimizer

    base = load_backbone(name, dtype=dtype, device="cuda")
    torch.set_float32_matmul_precision("highest")  # the comparisons are with float32 references
    for module in base.model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0
    codec = Codec(base.tokenizer, base.is_encoder_decoder, 64, 8)
    models, optimizers = [], []
    for n in range(runs):
        init = random_uniform(4, base.hidden_size, 0.5, torch.Generator().manual_seed(n))
        models.append(PromptedLM(base, SoftPrompt(init), prompt_once).to("cuda"))
        optimizers.append(make_optimizer(TrainerConfig(optimizer="adamw", lr=0.05), models[-1].prompt.parameters()))
    return models, optimizers, codec, encode_examples(codec, ROWS)


def train(models, optimizers, codec, data, steps: int, packed: bool) -> list[list[float]]:
    """`steps` steps of every run, as one pack (`packed_gradients`) or each alone (`accumulate_gradients`, the
    Trainer's lone step); run n takes 3 + n examples a step. Returns each run's loss curve."""
    from spot_core.packing import packed_gradients
    from spot_core.trainer import accumulate_gradients

    curves: list[list[float]] = [[] for _ in models]
    for step in range(steps):
        batches = [[data[(3 * step + 5 * n + i) % len(data)] for i in range(3 + n)] for n in range(len(models))]
        if packed:
            losses = packed_gradients(models, batches, codec, chunk=sum(len(b) for b in batches))
        else:
            losses = [accumulate_gradients(m, b, codec, len(b)) for m, b in zip(models, batches, strict=True)]
        for curve, loss, opt in zip(curves, losses, optimizers, strict=True):
            curve.append(loss.item())
            opt.step()
            opt.zero_grad(set_to_none=True)
    return curves


@pytest.mark.parametrize(("name", "prompt_once"), [("tiny-llama", None), ("tiny-llama", False), ("tiny-t5", None)])
def test_cuda_packed_training_equals_the_runs_trained_alone(name, prompt_once):
    packed = cuda_runs(name, prompt_once=prompt_once)
    alone = cuda_runs(name, prompt_once=prompt_once)
    curves = [train(*runs, steps=4, packed=p) for runs, p in ((packed, True), (alone, False))]
    for run in range(3):
        assert curves[0][run] == pytest.approx(curves[1][run], rel=1e-4, abs=1e-5)
        torch.testing.assert_close(packed[0][run].prompt.weight, alone[0][run].prompt.weight, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("name", "prompt_once"), [("tiny-llama", None), ("tiny-gemma3", None), ("tiny-t5", None)])
def test_cuda_bf16_packed_training_keeps_the_prompt_and_optimizer_in_float32(name, prompt_once):
    curves = {}
    for dtype in ("float32", "bfloat16"):
        models, optimizers, codec, data = cuda_runs(name, dtype, prompt_once)
        curves[dtype] = train(models, optimizers, codec, data, steps=4, packed=True)
        assert next(models[0].model.parameters()).dtype == getattr(torch, dtype)
        for model, opt in zip(models, optimizers, strict=True):
            assert model.prompt.weight.dtype == torch.float32
            state = opt.state[model.prompt.weight]
            assert state and all(v.dtype == torch.float32 for v in state.values() if torch.is_tensor(v))
    for c16, c32 in zip(curves["bfloat16"], curves["float32"], strict=True):
        assert all(torch.isfinite(torch.tensor(c16)))
        assert c16 == pytest.approx(c32, rel=2e-2)  # bf16's 8 mantissa bits (tests/test_gpu_paths.py on CPU)


def test_a_cuda_backbone_turns_tf32_matmuls_on():
    from spot_core.backbones import load_backbone

    load_backbone("tiny-llama", device="cuda")
    assert torch.get_float32_matmul_precision() == "high"
