"""The same engine on a CUDA device (skipped without one; CI has none)."""

import pytest
import torch
from conftest import prompted

from spot_core.data import collate, encode_examples
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
    torch.testing.assert_close(
        label_scores(gpu, inputs, labels).cpu(), label_scores_naive(gpu, inputs, labels).cpu(), rtol=1e-3, atol=1e-3
    )


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
