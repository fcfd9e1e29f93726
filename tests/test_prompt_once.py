"""Prompt once (decoder-only): the prompt's states computed once per batch give what the concatenated path gives.

Loss, prompt gradient, micro-batches, a whole training run, rank-classification scores, generations, neuron masks
and the projector's gradient, on tiny Llama and tiny Gemma 3 (whose sliding window of 8 tokens the inputs cross).
"""

import pytest
import torch
from conftest import concatenated, prompted
from torch import nn

from spot_core.backbones import PromptOnceError
from spot_core.encoding import collate, encode_examples
from spot_core.neurons import Readout, activated_neurons
from spot_core.projector import ProjectedPrompt, PromptProjector
from spot_core.prompted import PromptedLM
from spot_core.scoring import LabelTrie, generate, label_scores, label_scores_naive, label_scores_repeated
from spot_core.trainer import accumulate_gradients

DECODERS = ["tiny-llama", "tiny-gemma3"]
EXAMPLES = [
    {"inputs": "rte sentence1: the cat sat on the mat sentence2: a cat sat", "targets": "entailment"},
    {"inputs": "sst2 sentence: dull", "targets": "negative"},
    {"inputs": "stsb sentence1: a man plays sentence2: a man is playing a guitar", "targets": "3.8"},
    {"inputs": "cola sentence: him went", "targets": "unacceptable"},
    {"inputs": "mrpc sentence1: x sentence2: y", "targets": "not_equivalent"},
]
STSB = [f"{i / 5:.1f}" for i in range(26)]  # "0.0", "0.2", ..., "5.0": labels that share prefixes


def grad_of(model: PromptedLM, examples, codec, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
    model.prompt.weight.grad = None
    loss = accumulate_gradients(model, examples, codec, micro)
    return loss, model.prompt.weight.grad.clone()


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("length", [3, 12])  # 12 > tiny Gemma 3's window: the prompt itself crosses it
def test_loss_and_gradient_equal_the_concatenated_path(name, length):
    model, codec = prompted(name, length=length, prompt_once=True)
    model.eval()
    examples = encode_examples(codec, EXAMPLES)  # lengths differ: right padding inside the batch
    batch = collate(examples, codec)
    torch.testing.assert_close(model.loss(batch), concatenated(model).loss(batch), rtol=1e-5, atol=1e-6)
    loss, grad = grad_of(model, examples, codec, len(examples))
    ref_loss, ref_grad = grad_of(concatenated(model), examples, codec, len(examples))
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grad.abs().sum() > 0
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", DECODERS)
def test_micro_batches_share_one_prompt_computation_and_give_the_same_gradient(name, monkeypatch):
    model, codec = prompted(name, length=6, prompt_once=True)
    model.eval()
    examples = encode_examples(codec, EXAMPLES)
    calls = []
    real = PromptedLM.prompt_states
    monkeypatch.setattr(PromptedLM, "prompt_states", lambda self, **kw: calls.append(1) or real(self, **kw))
    whole, grad = grad_of(model, examples, codec, len(examples))
    parts, part_grad = grad_of(model, examples, codec, 2)  # three chunks
    assert len(calls) == 2  # once per batch, not once per chunk
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(part_grad, grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", DECODERS)
def test_a_training_run_ends_with_the_prompt_of_the_concatenated_path(name, data_dir, tmp_path):
    from spot_core.tuning import PromptConfig, RunSpec, tune_prompt

    def run(prompt_once: bool):
        spec = RunSpec(
            model=name,
            task="rte_v1",
            prompt=PromptConfig(length=10, init="sampled_vocab"),
            trainer={"steps": 6, "batch_size": 4, "micro_batch_size": 2, "eval_every": 3, "eval_batch_size": 8},
            data_dir=str(data_dir),
            max_train_examples=24,
            max_eval_examples=12,
            max_input_tokens=48,
            prompt_once=prompt_once,
        )
        out = tmp_path / str(prompt_once)
        return tune_prompt(spec, out), out

    (fast, a), (ref, b) = run(True), run(False)
    from spot_core.prompt_files import load_prompt

    final, reference = (load_prompt(d / "final_prompt.safetensors")[0] for d in (a, b))
    assert not torch.equal(final, load_prompt(a / "initial_prompt.safetensors")[0])
    torch.testing.assert_close(final, reference, rtol=1e-4, atol=1e-5)
    assert fast == pytest.approx(ref)


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("labels", [STSB, ["entailment", "not_entailment", "neutral"], ["yes", "no"], "one token"])
@pytest.mark.parametrize("n_inputs", [1, len(EXAMPLES)])
def test_label_scores_equal_one_forward_per_label(name, labels, n_inputs):
    model, codec = prompted(name, length=5, prompt_once=True)
    model.eval()
    inputs = [codec.encode_input(e["inputs"]) for e in EXAMPLES[:n_inputs]]
    # "one token": labels of a single token each, so the trie has no node
    label_ids = [[40], [41], [42]] if labels == "one token" else [codec.encode_target(w) for w in labels]
    naive = label_scores_naive(concatenated(model), inputs, label_ids)
    torch.testing.assert_close(label_scores(model, inputs, label_ids), naive, rtol=1e-4, atol=1e-4)
    prompt = model.prompt_states()  # shared over calls, as an evaluation does
    torch.testing.assert_close(label_scores(model, inputs, label_ids, prompt), naive, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(label_scores(concatenated(model), inputs, label_ids), naive, rtol=1e-4, atol=1e-4)


def test_label_scores_equal_the_repeated_rows_method_on_llama():
    model, codec = prompted("tiny-llama", length=5)
    model.eval()
    inputs = [codec.encode_input(e["inputs"]) for e in EXAMPLES]
    labels = [codec.encode_target(w) for w in STSB]
    repeated = label_scores_repeated(concatenated(model), inputs, labels)
    torch.testing.assert_close(label_scores(model, inputs, labels), repeated, rtol=1e-4, atol=1e-4)


def test_the_label_trie_computes_each_shared_prefix_once():
    # token ids of "0.0", "0.2", "1.0", "10" + end token 9, tokenised one character a token
    labels = [[0, 5, 0, 9], [0, 5, 2, 9], [1, 5, 0, 9], [1, 0, 9]]
    trie = LabelTrie(labels)
    assert trie.first == [0, 0, 1, 1]
    # prefixes fed to the model: 0, 0., 0.0, 0.2, 1, 1., 1.0, 10 (the end tokens are predicted, never fed)
    assert len(trie) == 8 and trie.depth == [1, 2, 3, 3, 1, 2, 3, 2]
    assert trie.parent == [-1, 0, 1, 1, -1, 4, 5, 4]
    assert len(trie.steps) == sum(len(lab) - 1 for lab in labels)
    anc = trie.ancestry()
    assert anc[3].nonzero().flatten().tolist() == [0, 1, 3] and anc[7].nonzero().flatten().tolist() == [4, 7]


@pytest.mark.parametrize("name", DECODERS)
def test_generation_equals_transformers_generate_on_the_concatenated_path(name):
    model, codec = prompted(name, length=6, prompt_once=True)
    model.eval()
    inputs = [codec.encode_input(e["inputs"]) for e in EXAMPLES]
    # Raise the end token's logit until rows stop at different steps (and are cut there).
    eos = model.backbone.tokenizer.eos_token_id
    head = model.model.get_output_embeddings()
    biased = nn.Linear(head.in_features, head.out_features, bias=True).requires_grad_(False)
    biased.weight.data, biased.bias.data = head.weight.data, torch.zeros(head.out_features)
    model.model.set_output_embeddings(biased)
    for bias in torch.linspace(0, 3, 61):  # these models' logits span about 1
        biased.bias.data[eos] = bias
        ref = generate(concatenated(model), inputs, max_new_tokens=7)
        if len({len(row) for row in ref}) >= 3:  # rows stopped at different steps
            break
    else:
        pytest.fail("no end-token bias made the rows stop at different steps")
    assert generate(model, inputs, max_new_tokens=7) == ref
    assert generate(model, inputs, max_new_tokens=7, prompt=model.prompt_states()) == ref


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("readout", list(Readout))
def test_neuron_masks_equal_the_concatenated_path(name, readout):
    model, _ = prompted(name, length=5, prompt_once=True)
    ids = [7, 8, 9]
    fast = activated_neurons(model, input_ids=ids, readout=readout)
    assert fast.shape[1] == (5 if readout is Readout.PROMPT else 3)
    assert torch.equal(fast, activated_neurons(concatenated(model), input_ids=ids, readout=readout))


@pytest.mark.parametrize("name", DECODERS)
def test_the_projector_gets_the_concatenated_paths_gradient(name):
    model, codec = prompted(name, length=4)
    source = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    projector = PromptProjector(4, 16, model.backbone.hidden_size, hidden=8)
    examples = encode_examples(codec, EXAMPLES)
    grads = []
    for prompt_once in (True, False):
        projector.zero_grad(set_to_none=True)
        wearing = PromptedLM(model.backbone, ProjectedPrompt(projector, source), prompt_once).eval()
        accumulate_gradients(wearing, examples, codec, 2)
        grads.append([p.grad.clone() for p in projector.parameters()])
    for fast, ref in zip(*grads, strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", DECODERS)
def test_an_empty_prompt_takes_the_plain_path_in_every_use(name):
    model, codec = prompted(name, length=0, prompt_once=True)
    model.eval()
    examples = encode_examples(codec, EXAMPLES)
    inputs = [e.input_ids for e in examples]
    labels = [codec.encode_target(w) for w in ("yes", "no")]
    loss = accumulate_gradients(model, examples, codec, 2)
    torch.testing.assert_close(loss, accumulate_gradients(concatenated(model), examples, codec, 5))
    torch.testing.assert_close(label_scores(model, inputs, labels), label_scores_naive(model, inputs, labels))
    assert generate(model, inputs, 4) == generate(concatenated(model), inputs, 4)


def test_states_of_another_prompt_length_are_refused():
    model, codec = prompted("tiny-llama", length=4)
    other, _ = prompted("tiny-llama", length=6)
    ids = torch.tensor([codec.encode_input("sst2 sentence: fine")])
    with pytest.raises(ValueError, match="prompt states of length 6 given to a model whose prompt has length 4"):
        model.hidden(ids, torch.ones_like(ids), other.prompt_states())


def test_prompt_once_is_refused_on_an_encoder_decoder_model_and_off_there_by_default():
    with pytest.raises(PromptOnceError, match=r"encoder-decoder.*model.prompt_once=false"):
        prompted("tiny-t5", prompt_once=True)
    assert prompted("tiny-t5")[0].prompt_once is False
    assert prompted("tiny-llama")[0].prompt_once is True
    assert prompted("tiny-llama", prompt_once=False)[0].prompt_once is False


def test_a_study_refuses_prompt_once_on_an_encoder_decoder_model_before_starting():
    from spot_core.backbones import check_backbone

    with pytest.raises(PromptOnceError, match="tiny-t5"):
        check_backbone("tiny-t5", prompt_once=True)
    check_backbone("tiny-t5", prompt_once=False)
    check_backbone("tiny-llama", prompt_once=True)
