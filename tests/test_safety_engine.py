"""Safety net (issue 13), the engine through its public entry points: prompt tuning on the encoder-decoder family
with real task data, generation order in `evaluation.predict`, and cross-model projectors across families."""

import json
from dataclasses import replace

import pytest
import torch
from conftest import prompted
from test_projector import reference_losses

from spot_core.backbones import load_backbone
from spot_core.cross_model import ProjectorSpec, fit_projector, load_projector, project_file
from spot_core.encoding import Codec, collate, encode_examples
from spot_core.evaluation import TaskData, predict
from spot_core.projector import ProjectedPrompt, ProjectorConfig, PromptProjector, fit_task, project
from spot_core.prompt_files import load_prompt, save_prompt
from spot_core.prompted import PromptedLM
from spot_core.prompts import PromptShapeError, SoftPrompt
from spot_core.tasks import DataSource, get_task
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec, evaluate_prompt, prepare, tune_prompt

SMALL = {"steps": 4, "batch_size": 4, "eval_every": 2, "eval_batch_size": 8, "embedding_step": 2}


def t5_spec(data_dir, task: str, init: str, **extra) -> RunSpec:
    return RunSpec(
        model="tiny-t5",
        task=task,
        prompt=PromptConfig(length=4, init=init),
        trainer=TrainerConfig(**SMALL),
        data_dir=str(data_dir),
        max_train_examples=16,
        max_eval_examples=8,
        max_input_tokens=64,
        **extra,
    )


# --- 1. prompt tuning on the encoder-decoder family (tiny T5, d_model 32) --------------------------------------
# task, init, metrics of the 8 validation examples at every evaluation (steps 0, 2, 4): deterministic values
T5_RUNS = {
    "squad_v1": ("sampled_vocab", ("em", "f1")),  # generation: SQuAD EM/F1 against every gold answer
    "rte_v1": ("class_labels", ("accuracy",)),  # rank classification over "entailment"/"not_entailment"
}


@pytest.mark.parametrize("task", list(T5_RUNS))
def test_tiny_t5_tunes_a_prompt_on_real_task_data(data_dir, tmp_path, task):
    init, metrics = T5_RUNS[task]
    result = tune_prompt(t5_spec(data_dir, task, init), tmp_path)
    assert set(result) == {"best/val_score", "best/step", "final/val_score", "final/step"}
    assert result["final/step"] == 4 and result["best/step"] in (2, 4)
    assert json.loads((tmp_path / "result.json").read_text()) == result
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {
        "initial_prompt.safetensors",
        "task_embedding.safetensors",
        "best_prompt.safetensors",
        "final_prompt.safetensors",
        "checkpoints/step_0000002.safetensors",
        "checkpoints/step_0000004.safetensors",
        "metrics.json",
        "result.json",
        "resume.pt",
    }
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["step"] for h in history] == [0, 2, 4]
    for h in history:  # the score is the mean of the task's own metrics
        assert set(h) - {"step", "train/loss"} == {"val/score", *(f"val/{m}" for m in metrics)}
        assert h["val/score"] == pytest.approx(sum(h[f"val/{m}"] for m in metrics) / len(metrics))
        assert all(0 <= h[f"val/{m}"] <= 100 for m in metrics)
    assert history[-1]["val/score"] == result["final/val_score"]
    assert all(torch.isfinite(torch.tensor(h["train/loss"])) for h in history[1:])
    for name in ("initial", "task_embedding", "best", "final"):
        prompt, meta = load_prompt(
            tmp_path / f"{name}_prompt.safetensors"
            if name != "task_embedding"
            else tmp_path / "task_embedding.safetensors"
        )
        assert prompt.shape == (4, 32) and prompt.dtype == torch.float32, name  # [L, H]: tiny T5's d_model
        assert (meta["model"], meta["task"]) == ("tiny-t5", task)
    best, meta = load_prompt(tmp_path / "best_prompt.safetensors")
    assert int(meta["step"]) == result["best/step"]
    # the best score is what the task's metric gives for that prompt's predictions on the validation split
    model, data = prepare(t5_spec(data_dir, task, init))
    with torch.no_grad():
        model.prompt.weight.copy_(best)
    scores = data.evaluate(model, 8)
    assert scores["score"] == pytest.approx(result["best/val_score"], abs=1e-6)
    preds = predict(model, data.codec, data.task, data.validation, 8)
    assert data.task.score([e.reference for e in data.validation], preds) == pytest.approx(scores)
    if task == "rte_v1":
        assert set(preds) <= {"entailment", "not_entailment"}
    # a finished run is not trained again; scoring the best prompt zero-shot gives the same number
    assert tune_prompt(t5_spec(data_dir, task, init), tmp_path) == result
    spec = t5_spec(data_dir, task, init)
    spec.prompt = PromptConfig(length=4, init="file", files=[str(tmp_path / "best_prompt.safetensors")])
    assert evaluate_prompt(spec, tmp_path / "zero_shot")["best/val_score"] == pytest.approx(result["best/val_score"])


def test_tiny_t5_refuses_prompt_once(data_dir, tmp_path):
    with pytest.raises(ValueError, match="prompt_once"):
        tune_prompt(t5_spec(data_dir, "rte_v1", "class_labels", prompt_once=True), tmp_path)


# --- 2. generation order: predict sorts by input length, the predictions come back in input order ------------
TEXTS = [  # distinct lengths (bytes), none cut at the codec's 64, not in length order
    "squad question: who? context: a",
    "squad question: what did the committee decide? context: the budget",
    "hi",
    "squad question: where is it? context: far away",
    "squad question: why? context: winter came early",
    "x",
    "squad question: how many? context: three of them",
]


def generation_batch_vs_alone(name: str, prompt_once: bool | None, texts=TEXTS):
    model, codec = prompted(name, length=4, seed=3, prompt_once=prompt_once)
    task = get_task("squad_v1")  # no label words: greedy generation
    examples = encode_examples(codec, [{"inputs": t, "targets": "a"} for t in texts])
    lengths = [len(e.input_ids) for e in examples]
    assert lengths != sorted(lengths) and len(set(lengths)) == len(lengths)  # predict must reorder them
    batched = predict(model, codec, task, examples, batch_size=3)  # batches of mixed lengths: left padding
    alone = [predict(model, codec, task, [e], batch_size=1)[0] for e in examples]
    return batched, alone


@pytest.mark.parametrize("prompt_once", [True, False])
def test_generated_predictions_come_back_in_input_order_and_equal_lone_generation(prompt_once):
    batched, alone = generation_batch_vs_alone("tiny-llama", prompt_once)
    assert len(set(alone)) >= 5  # the examples generate different texts: the order is checked
    assert batched == alone


@pytest.mark.parametrize("prompt_once", [True, False])
def test_generation_with_a_sliding_window_model_equals_lone_generation(prompt_once):
    # Left padding would count as positions of Gemma 3's window (8 in tiny-gemma3): batches hold one length only.
    batched, alone = generation_batch_vs_alone("tiny-gemma3", prompt_once, texts=TEXTS[:4])
    assert batched == alone


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3", "tiny-t5"])
def test_classified_predictions_come_back_in_input_order(name):
    model, codec = prompted(name, length=4, seed=3)
    task = get_task("stsb_v1")  # 26 label words: enough different answers to see the order
    examples = encode_examples(codec, [{"inputs": t, "targets": "1.0"} for t in TEXTS])
    alone = [predict(model, codec, task, [e], batch_size=1)[0] for e in examples]
    assert predict(model, codec, task, examples, batch_size=3) == alone
    assert predict(model, codec, task, examples[::-1], batch_size=4) == alone[::-1]


# --- 3. cross-model projectors across families -----------------------------------------------------------------
def sst2_projector(other: str, data_dir, a_prompt, method: str, steps: int, b_prompt=None) -> ProjectorSpec:
    """A projector from tiny-llama into `other`, learnt on SST-2 (16 train, 8 validation examples)."""
    target = RunSpec(
        model=other, task="sst2_v1", data_dir=str(data_dir), max_train_examples=16, max_eval_examples=8,
        max_input_tokens=48,
    )  # fmt: skip
    return ProjectorSpec(
        source_model="tiny-llama",
        target=target,
        train_tasks=["sst2_v1"],
        train_prompts=[str(a_prompt)],
        target_prompts=[str(b_prompt)] if b_prompt else [],
        projector={"method": method, "hidden": 16, "steps": steps, "batch_size": 4, "lr": 3e-3},
    )


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# B and its hidden size. A 12-step projector run's losses are compared with a plain loop's on this machine, not
# pinned (exact values do not carry across CPUs); T5 (dropout 0.1) included: the loop seeds B's dropout as the run
# does, and the forward passes are the same ones, so the masks are the same.
OTHER_MODELS = {"tiny-gemma3": 64, "tiny-t5": 32}
# float32 rounding between the run and the loop (prompt once against the prompt on every example on Gemma 3;
# measured: under 1e-7 relatively, T5 and distance exactly equal), carried through 12 AdamW steps
RTOL = 1000 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("method", ["task_tuning", "distance"])
@pytest.mark.parametrize("other", list(OTHER_MODELS))
def test_a_projector_from_tiny_llama_into_another_family(data_dir, tmp_path, other, method):
    hidden = OTHER_MODELS[other]
    for name, h, seed in (("a_sst2", 32, 0), ("a_rte", 32, 1), ("b_sst2", hidden, 2)):
        save_prompt(tmp_path / f"{name}.safetensors", rand(4, h, seed=seed) * 0.1)
    spec = sst2_projector(other, data_dir, tmp_path / "a_sst2.safetensors", method, 12, tmp_path / "b_sst2.safetensors")
    result = fit_projector(spec, tmp_path / "run")
    assert set(result) == {"best/val_score", "best/step", "final/loss", "train_task/sst2_v1/val_score"}
    assert result["best/val_score"] == result["train_task/sst2_v1/val_score"] and result["best/step"] == 12
    losses = [h["train/loss"] for h in json.loads((tmp_path / "run/metrics.json").read_text())]
    assert losses == pytest.approx(reference_losses(spec), rel=RTOL) and result["final/loss"] == losses[-1]
    if method == "distance":  # a regression onto B's prompt: the loss falls every step
        assert all(b < a for a, b in zip(losses, losses[1:], strict=False)) and losses[-1] < 0.6 * losses[0]
    # the run's score is the projected SST-2 prompt's, scored as a prompt file for B
    sst2 = project_file(
        tmp_path / "run/projector.safetensors", tmp_path / "a_sst2.safetensors", tmp_path / "sst2.safetensors"
    )
    files = PromptConfig(length=4, init="file", files=[str(sst2)])
    score = evaluate_prompt(replace(spec.target, prompt=files), tmp_path / "sst2_shot")["best/val_score"]
    assert result["best/val_score"] == pytest.approx(score, abs=1e-6)
    projector, meta = load_projector(tmp_path / "run/projector.safetensors")
    assert (projector.length, projector.source_hidden, projector.target_hidden) == (4, 32, hidden)
    assert (meta["source_model"], meta["target_model"], meta["method"]) == ("tiny-llama", other, method)
    again = project_file(
        tmp_path / "run/projector.safetensors", tmp_path / "a_rte.safetensors", tmp_path / "p.safetensors"
    )
    projected, pmeta = load_prompt(again)
    assert projected.shape == (4, hidden) and (pmeta["source_model"], pmeta["target_model"]) == ("tiny-llama", other)
    with torch.no_grad():
        assert torch.allclose(projected, projector(load_prompt(tmp_path / "a_rte.safetensors")[0]), atol=1e-6)
    # the projected prompt is a prompt file for B: scored zero-shot on RTE
    shot = evaluate_prompt(
        RunSpec(
            model=other,
            task="rte_v1",
            prompt=PromptConfig(length=4, init="file", files=[str(again)]),
            data_dir=str(data_dir),
            max_eval_examples=8,
            max_input_tokens=48,
        ),
        tmp_path / "shot",
    )
    assert set(shot) == {"best/val_score", "best/step", "final/val_score", "final/step"}
    assert 0 <= shot["best/val_score"] <= 100 and shot["best/val_score"] in {100 * i / 8 for i in range(9)}
    if hidden != 32:  # a prompt of B's width is not one of A's
        with pytest.raises(PromptShapeError, match=r"\(4, 64\).*\[4, 32\]"):
            project_file(tmp_path / "run/projector.safetensors", again, tmp_path / "x.safetensors")


STEPS = 12


@pytest.mark.parametrize("other", ["tiny-gemma3", "tiny-t5"])
def test_task_tuning_through_another_family_lowers_its_loss(data_dir, other):
    b = load_backbone(other)
    codec = Codec(b.tokenizer, b.is_encoder_decoder, 48, 8)
    task = get_task("sst2_v1")
    rows = [json.loads(line) for line in DataSource.of(task, data_dir).file("train").read_text().splitlines()[:4]]
    train = encode_examples(codec, [task.preprocess(r) for r in rows])
    data = TaskData(task, codec, train, train)
    proj = PromptProjector.from_config(ProjectorConfig(hidden=16, seed=0), 4, 32, b.hidden_size)
    through_b = PromptedLM(b, ProjectedPrompt(proj, rand(4, 32, seed=1) * 0.1))
    batch = collate(train, codec)

    def loss() -> float:
        with torch.no_grad():
            return through_b.loss(batch).item()

    before = loss()
    frozen = {k: v.clone() for k, v in b.model.state_dict().items()}
    fit_task(proj, [(through_b, data)], ProjectorConfig(hidden=16, steps=STEPS, lr=1e-2, batch_size=4, seed=0))
    assert loss() < before - 0.05  # the whole training set each step: the loss on it falls
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in frozen.items())  # B stays frozen
    assert project(proj, rand(4, 32, seed=1)).shape == (4, b.hidden_size)
    assert PromptedLM(b, SoftPrompt(project(proj, rand(4, 32, seed=1)))).prompt.weight.shape == (4, b.hidden_size)


def test_a_projector_run_through_t5_is_reproducible(data_dir, tmp_path):
    save_prompt(tmp_path / "a.safetensors", rand(4, 32, seed=0) * 0.1)
    spec = sst2_projector("tiny-t5", data_dir, tmp_path / "a.safetensors", "task_tuning", 4)
    torch.manual_seed(1)
    first = fit_projector(spec, tmp_path / "first")
    torch.manual_seed(2)  # another cell ran before in this worker: fit_task seeds B's dropout itself
    assert fit_projector(spec, tmp_path / "second") == first


def test_generation_batches_of_a_windowed_model_hold_one_length():
    from spot_core.evaluation import batches

    lengths = [5, 3, 3, 5, 4, 3]
    order = sorted(range(6), key=lambda i: lengths[i])
    assert batches(order, lengths, 2, one_length=False) == [[1, 2], [5, 4], [0, 3]]
    assert batches(order, lengths, 2, one_length=True) == [[1, 2], [5], [4], [0, 3]]
