"""Packed training: K runs on one backbone in one forward pass equal the same runs trained alone."""

import json

import pytest
import torch
from conftest import no_dropout, prompted

from spot_core.encoding import encode_examples
from spot_core.evaluation import TaskData
from spot_core.packing import Pack, packed_gradients
from spot_core.prompt_files import load_prompt
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt, random_uniform
from spot_core.tasks import get_task
from spot_core.tracking import MemoryTracker
from spot_core.trainer import NonFiniteLossError, Trainer, TrainerConfig, accumulate_gradients

WORDS = ["good", "great", "fine", "bad", "awful", "dull", "lovely", "poor", "grim", "warm", "odd"]
SST2 = [
    {"inputs": f"sst2 sentence: {w} {'and ' * (i % 4)}{v}", "targets": "positive" if i % 2 else "negative"}
    for i, (w, v) in enumerate(zip(WORDS * 3, reversed(WORDS * 3), strict=True))
]
RTE = [
    {
        "inputs": f"rte sentence1: {w} is {v}. sentence2: {v} {'maybe ' * (i % 3)}",
        "targets": ["entailment", "not_entailment"][i % 2],
    }
    for i, (w, v) in enumerate(zip(WORDS * 2, WORDS[3:] + WORDS[:3] + WORDS, strict=True))
]
# Runs that differ in everything a pack lets differ: task, seed, batch size, steps, schedule, prompt length.
RUNS = [
    {"task": "sst2_v1", "seed": 0, "length": 4, "steps": 8, "batch_size": 4, "eval_every": 4, "embedding_step": 2},
    {"task": "rte_v1", "seed": 1, "length": 4, "steps": 6, "batch_size": 3, "eval_every": 3, "embedding_step": 3},
    {
        "task": "sst2_v1",
        "seed": 2,
        "length": 4,
        "steps": 8,
        "batch_size": 5,
        "eval_every": 8,
        "embedding_step": 4,
        "micro_batch_size": 2,
    },
    {"task": "rte_v1", "seed": 3, "length": 6, "steps": 5, "batch_size": 4, "eval_every": 5, "embedding_step": 1},
]


def build(name, out, runs=RUNS, prompt_once=None, overrides=None):
    """One Trainer per run, all on one backbone (the tiny model, loaded once)."""
    base, codec = prompted(name, length=4, prompt_once=prompt_once)
    no_dropout(base.model)
    trainers = []
    for n, run in enumerate(runs):
        run = {**run, **(overrides or {}).get(n, {})}
        gen = torch.Generator().manual_seed(100 + n)
        prompt = SoftPrompt(random_uniform(run["length"], base.backbone.hidden_size, 0.5, gen))
        model = PromptedLM(base.backbone, prompt, prompt_once)
        rows = SST2 if run["task"] == "sst2_v1" else RTE
        data = TaskData(get_task(run["task"]), codec, encode_examples(codec, rows), encode_examples(codec, rows[:6]))
        settings = {k: v for k, v in run.items() if k not in ("task", "length")}
        config = TrainerConfig(**{"eval_batch_size": 4, "optimizer": "adamw", "lr": 0.05, **settings})
        trainers.append(Trainer(config, model, data, out / f"run{n}", tracker=MemoryTracker()))
    return trainers


def curves(folder):
    return json.loads((folder / "metrics.json").read_text())


def assert_same_run(ours, theirs, exact=False):
    """Two run folders hold the same run: loss curve, scores, result and prompts (bit for bit when `exact`)."""
    a, b = curves(ours), curves(theirs)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ra:
            if exact:
                assert ra[key] == rb[key], key
            else:
                assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-5), key
    ra, rb = (json.loads((f / "result.json").read_text()) for f in (ours, theirs))
    assert ra == rb if exact else ra == pytest.approx(rb, rel=1e-4, abs=1e-5)
    for f in ("initial_prompt", "task_embedding", "best_prompt", "final_prompt"):
        pa, pb = (load_prompt(d / f"{f}.safetensors")[0] for d in (ours, theirs))
        if exact:
            assert torch.equal(pa, pb), f
        else:
            torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "prompt_once"),
    [("tiny-llama", None), ("tiny-llama", False), ("tiny-t5", None), ("tiny-gemma3", None), ("tiny-gemma3", False)],
)
def test_packed_gradients_are_each_runs_own(tmp_path, name, prompt_once):
    trainers = build(name, tmp_path, prompt_once=prompt_once)
    models = [t.model.train() for t in trainers]
    batches = [t.data.train[n : n + 3 + n] for n, t in enumerate(trainers)]
    codec = trainers[0].data.codec
    alone = []
    for model, batch in zip(models, batches, strict=True):
        loss = accumulate_gradients(model, batch, codec, len(batch))
        alone.append((loss, model.prompt.weight.grad.clone()))
        model.prompt.weight.grad = None
    for chunk in (100, 3):  # one forward pass per prompt length; several
        losses = packed_gradients(models, batches, codec, chunk)
        for model, loss, (lone_loss, lone_grad) in zip(models, losses, alone, strict=True):
            torch.testing.assert_close(loss, lone_loss, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(model.prompt.weight.grad, lone_grad, rtol=1e-4, atol=1e-6)
            model.prompt.weight.grad = None


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5", "tiny-gemma3"])
def test_a_packed_run_equals_the_same_run_trained_alone(tmp_path, name):
    packed = build(name, tmp_path / "packed")
    results = Pack(packed).fit()
    for n, trainer in enumerate(build(name, tmp_path / "alone")):
        assert trainer.fit() == pytest.approx(results[n], rel=1e-4, abs=1e-5)
        assert_same_run(tmp_path / "packed" / f"run{n}", tmp_path / "alone" / f"run{n}")
    # each run logged its own params and metrics, as alone
    logged = packed[1].tracker
    assert logged.params["task"] == "rte_v1" and logged.params["trainer.batch_size"] == 3
    assert [s for s, m in logged.metrics if "val/score" in m] == [0, 3, 6]


@pytest.mark.parametrize("kill_after", [2, 5, 7])
def test_a_killed_pack_resumes_to_what_it_would_have_been(tmp_path, monkeypatch, kill_after):
    Pack(build("tiny-llama", tmp_path / "full")).fit()
    real_step = Trainer.step

    def step_then_die(self, state, loss):
        checkpointed = real_step(self, state, loss)
        if state.step == kill_after and self.data.name == "sst2_v1":
            raise KeyboardInterrupt("simulated kill")
        return checkpointed

    monkeypatch.setattr(Trainer, "step", step_then_die)
    with pytest.raises(KeyboardInterrupt):
        Pack(build("tiny-llama", tmp_path / "crash")).fit()
    monkeypatch.setattr(Trainer, "step", real_step)
    assert not (tmp_path / "crash/run0/result.json").exists()
    Pack(build("tiny-llama", tmp_path / "crash")).fit()
    for n in range(len(RUNS)):
        assert_same_run(tmp_path / "crash" / f"run{n}", tmp_path / "full" / f"run{n}", exact=True)


def test_one_runs_nan_stops_it_alone(tmp_path):
    diverging = {1: {"lr": 1e30}}  # Adam moves the prompt by ~lr: the next forward pass overflows
    results = Pack(build("tiny-llama", tmp_path / "packed", overrides=diverging)).fit()
    assert isinstance(results[1], NonFiniteLossError) and "task 'rte_v1'" in str(results[1])
    assert not (tmp_path / "packed/run1/result.json").exists()
    for n, trainer in enumerate(build("tiny-llama", tmp_path / "alone")):
        if n != 1:
            assert trainer.fit() == pytest.approx(results[n], rel=1e-4, abs=1e-5)
            assert_same_run(tmp_path / "packed" / f"run{n}", tmp_path / "alone" / f"run{n}")


def test_a_finished_run_in_a_pack_is_not_trained_again(tmp_path):
    first = build("tiny-llama", tmp_path, runs=RUNS[:1])
    result = first[0].fit()
    trainers = build("tiny-llama", tmp_path, runs=RUNS[:2])
    again = Pack(trainers).fit()
    assert again[0] == result and trainers[0].tracker.metrics == []
    assert again[1]["final/step"] == RUNS[1]["steps"]


def test_runs_on_other_backbones_cannot_pack(tmp_path):
    a = build("tiny-llama", tmp_path / "a", runs=RUNS[:1])
    b = build("tiny-llama", tmp_path / "b", runs=RUNS[:1])
    with pytest.raises(ValueError, match="share one backbone"):
        Pack(a + b)


def test_a_pass_that_runs_out_of_gpu_memory_is_taken_again_in_halves(tmp_path, monkeypatch):
    """Passes of more than 5 examples 'do not fit': the pack halves its passes until they do, and trains the same
    runs (to float rounding) as passes that fit from the start."""
    fits = Pack(build("tiny-llama", tmp_path / "fits"), chunk=4).fit()
    real_loss = PromptedLM.loss

    def small_passes_only(self, batch, *args, **kwargs):
        if len(batch["input_ids"]) > 5:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_loss(self, batch, *args, **kwargs)

    monkeypatch.setattr(PromptedLM, "loss", small_passes_only)
    pack = Pack(build("tiny-llama", tmp_path / "halved"), chunk=17)
    halved = pack.fit()
    assert pack.chunk == 5  # 17 -> 9 -> 5
    for n, result in enumerate(halved):
        assert result == pytest.approx(fits[n], rel=1e-4, abs=1e-5)
        assert_same_run(tmp_path / "halved" / f"run{n}", tmp_path / "fits" / f"run{n}")
