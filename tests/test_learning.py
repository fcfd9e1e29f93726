"""Training learns: a prompt learns a separable synthetic task alone, in a pack, as ATTEMPT's target and as MPT's
shared prompt and factors, and model tuning learns it in the backbone's weights; and the checks fail when training
breaks (the gradient never reaches the prompt or the weights, the optimizer steps another tensor, a packed run or an
MPT task gets another's gradient): each sabotage is a test here.

The task: an input is one class token four times ("xxxx" or "yyyy"), its target one of SST-2's label words; its flip
gives each class the other word. Whether a prompt learned it is rank classification's choice between the two words:
the cross-entropy of their softmax over the examples (`Fit.choice`), log 2 for a prompt that cannot tell the classes
apart.

The thresholds come from the task, not from a run. One prompt cannot learn a task and its flip: on each input their
choice losses are -log p and -log(1 - p), whose sum is at least 2 log 2. So two runs that start from one prompt, one
on the task and one on its flip, start with choice losses summing to at least 2 log 2 (asserted), and so does any
pair of runs that never moved or moved alike (no gradient, the wrong tensor stepped, gradients mixed): one of them
stays at log 2 or above. A pair whose gradients were swapped learns each other's task. A run that learned its task
ends below log(2) / 4 (the right word's geometric-mean probability above 2^(-1/4) = 0.84), classifies every example
right (chance: half) and has lowered its training loss; both runs of a pair must.

The tiny models of conftest draw their weights at std 0.02 (transformers' default): at hidden size 32 each
projection shrinks what it reads about tenfold, and a random tiny Llama's logits stay within +-0.4 (at most +-0.9:
head rows of norm <= 0.16 times the RMSNorm'd state's sqrt(32)), so no prompt moves its loss off log V (measured on
this task: 5.59 -> 5.54 in 40 steps, choice loss 0.72 -> 0.71, accuracy 50 %). `conditioned` rescales every linear
layer to std 1/sqrt(fan_in), the scale at which a layer keeps its input's size, as trained networks do; the weights
keep their directions, and the backbone stays frozen.
"""

import copy
import json
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from conftest import no_dropout, prompted
from torch import nn

import spot_core.methods.mpt as mpt
import spot_core.packing as packing
import spot_core.trainer as trainer_module
from spot_core.encoding import Codec, collate, encode_examples
from spot_core.evaluation import MixtureData, TaskData
from spot_core.methods.attempt import AttentionPrompt, validation_attention
from spot_core.methods.mpt import MultitaskTrainer
from spot_core.packing import Pack
from spot_core.prompted import PromptedLM
from spot_core.prompts import FactoredPrompt, SoftPrompt, random_uniform
from spot_core.run_dir import RunDir
from spot_core.scoring import label_scores
from spot_core.tasks import get, get_task
from spot_core.trainer import ModelTrainer, Trainer, TrainerConfig

CHANCE = math.log(2)  # the choice loss of a prompt that cannot tell the two classes apart
LEARNED = CHANCE / 4  # below this, a run learned its task (see the module)
# SPoT's optimizer (Adafactor, lr 0.3); every step sees the whole training set (8 examples).
SPOT = {"steps": 40, "batch_size": 8, "eval_every": 20, "eval_batch_size": 8}


def rows(flip: bool = False) -> list[dict]:
    words = {"x": "negative", "y": "positive"} if flip else {"x": "positive", "y": "negative"}
    return [{"inputs": c * 4, "targets": words[c]} for c in "xy"] * 4


def conditioned(model: PromptedLM) -> PromptedLM:
    """The model with every linear layer's weight rescaled to std 1/sqrt(fan_in) (see the module)."""
    with torch.no_grad():
        for layer in model.model.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(layer.in_features**-0.5 / layer.weight.std())
    return model


def learner(name: str) -> tuple[PromptedLM, Codec]:
    """A conditioned tiny model without dropout and its random [4, H] prompt (seed 0), and its codec."""
    model, codec = prompted(name, length=4, seed=0)
    no_dropout(model.model)
    return conditioned(model), codec


def task_data(codec: Codec, flip: bool = False, task: str = "sst2_v1") -> TaskData:
    examples = encode_examples(codec, rows(flip))
    return TaskData(get_task(task), codec, examples, examples)


@dataclass
class Fit:
    """How well a prompt fits a task's examples."""

    loss: float  # the training objective: mean target-token cross-entropy
    choice: float  # rank classification's cross-entropy over the label words (log 2: no better than a coin)
    accuracy: float  # rank classification, 0..1


def fit_of(model: PromptedLM, data: TaskData) -> Fit:
    words = data.task.label_words
    examples = data.validation
    model.eval()
    with torch.no_grad():
        scores = label_scores(model, [e.input_ids for e in examples], [data.codec.encode_target(w) for w in words])
        gold = torch.tensor([words.index(e.target) for e in examples])
        loss = model.loss(collate(examples, data.codec)).item()
    return Fit(loss, F.cross_entropy(scores, gold).item(), (scores.argmax(1) == gold).float().mean().item())


def failures(before: Fit, after: Fit, run: RunDir | None = None, accuracy_key: str = "val/accuracy") -> list[str]:
    """What a run that learned its task would not show: empty if it learned."""
    found = []
    if not after.choice < LEARNED:
        found.append(
            f"choice loss {after.choice:.4f} not below log(2)/4 = {LEARNED:.4f} (at start {before.choice:.4f})"
        )
    if after.accuracy != 1.0:
        found.append(f"rank-classification accuracy {after.accuracy:.2f}, not every example (chance 0.5)")
    if not after.loss < before.loss:
        found.append(f"training loss {after.loss:.4f} not below its start {before.loss:.4f}")
    if run is not None:  # the Trainer's own last evaluation says the same
        last = json.loads(run.metrics.read_text())[-1]
        if last[accuracy_key] != 100.0:
            found.append(f"the run's last evaluation: {accuracy_key} {last[accuracy_key]}")
    return found


def assert_cannot_both_pass(starts: list[Fit]) -> None:
    """One prompt for a task and its flip: choice losses summing to at least 2 log 2 (see the module)."""
    assert starts[0].choice + starts[1].choice >= 2 * CHANCE - 1e-5


# --- a lone run and a pack -----------------------------------------------------------------------------------------
def pair(name: str, out) -> list[Trainer]:
    """Two runs on one backbone from one prompt: the task (run0) and its flip (run1)."""
    base, codec = learner(name)
    start = base.prompt.weight.detach()
    trainers = []
    for n, flip in enumerate((False, True)):
        model = PromptedLM(base.backbone, SoftPrompt(start))
        trainers.append(Trainer(TrainerConfig(**SPOT), model, task_data(codec, flip), out / f"run{n}"))
    return trainers


def train_pair(name: str, out, packed: bool) -> list[list[str]]:
    """Trains the pair, alone or as one pack; returns each run's failures."""
    trainers = pair(name, out)
    before = [fit_of(t.model, t.data) for t in trainers]
    assert_cannot_both_pass(before)
    if packed:
        results = Pack(trainers).fit()
        assert not [r for r in results if isinstance(r, Exception)]
    else:
        for t in trainers:
            t.fit()
    return [failures(b, fit_of(t.model, t.data), t.run) for b, t in zip(before, trainers, strict=True)]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
@pytest.mark.parametrize("packed", [False, True], ids=["lone", "packed"])
def test_a_prompt_learns_its_task_and_a_packed_run_its_own(tmp_path, name, packed):
    assert train_pair(name, tmp_path, packed) == [[], []]


def zero_prompt_gradient(monkeypatch):
    """The Trainer's backward pass, then the prompt's gradient zeroed: it never reaches the prompt."""
    real = trainer_module.accumulate_gradients

    def dropped(model, *args, **kwargs):
        loss = real(model, *args, **kwargs)
        for p in model.prompt.parameters():
            p.grad.zero_()
        return loss

    monkeypatch.setattr(trainer_module, "accumulate_gradients", dropped)


def step_a_copy(monkeypatch):
    """The optimizer is given copies of the prompt's parameters: it steps tensors the model does not use."""
    real = trainer_module.make_optimizer
    monkeypatch.setattr(
        trainer_module,
        "make_optimizer",
        lambda config, params: real(config, [nn.Parameter(p.detach().clone()) for p in params]),
    )


def exchange_packed_gradients(mix: bool):
    """A `packed_gradients` that hands run 0 run 1's gradient and back (`mix`: each run the sum of both)."""
    real = packing.packed_gradients

    def wrong(models, *args, **kwargs):
        losses = real(models, *args, **kwargs)
        grads = [m.prompt.weight.grad for m in models]
        new = [grads[0] + grads[1]] * 2 if mix else grads[::-1]
        for m, g in zip(models, new, strict=True):
            m.prompt.weight.grad = g.clone()
        return losses

    return wrong


@pytest.mark.parametrize(
    ("broken", "packed"),
    [("no gradient", False), ("a copy stepped", False), ("gradients swapped", True), ("gradients mixed", True)],
)
def test_the_learning_check_fails_when_training_breaks(tmp_path, monkeypatch, broken, packed):
    """The check of the test above, on training broken on purpose: it must not pass (one failing run suffices; the
    module says why neither run can pass the choice-loss check)."""
    if broken == "no gradient":
        zero_prompt_gradient(monkeypatch)
    elif broken == "a copy stepped":
        step_a_copy(monkeypatch)
    else:
        monkeypatch.setattr(packing, "packed_gradients", exchange_packed_gradients(mix=broken == "gradients mixed"))
    found = train_pair("tiny-llama", tmp_path, packed)
    assert any(any(f.startswith("choice loss") for f in run) for run in found), found


# --- model tuning -----------------------------------------------------------------------------------------------
# T5's fine-tuning optimizer (Adafactor, constant 1e-3, updates scaled by each weight's RMS: T5X's default)
MODEL_TUNING = {**SPOT, "lr": 1e-3, "scale_parameter": True, "weight_decay": 0.0}


def tuned_pair(name: str, out) -> list[list[str]]:
    """The task and its flip, each by model tuning its own copy of one conditioned backbone (no prompt); returns
    each run's failures."""
    base, codec = learner(name)
    found, starts = [], []
    for n, flip in enumerate((False, True)):
        backbone = copy.deepcopy(base.backbone)
        model = PromptedLM(backbone, SoftPrompt(torch.zeros(0, backbone.hidden_size)))
        data = task_data(codec, flip)
        starts.append(fit_of(model, data))
        trainer = ModelTrainer(TrainerConfig(**MODEL_TUNING), model, data, out / f"run{n}")
        trainer.fit()
        found.append(failures(starts[-1], fit_of(model, data), trainer.run))
    assert_cannot_both_pass(starts)
    return found


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_model_tuning_learns_a_task_and_its_flip_from_one_backbone(tmp_path, name):
    assert tuned_pair(name, tmp_path) == [[], []]


def zero_backbone_gradient(monkeypatch):
    """The Trainer's backward pass, then every backbone weight's gradient zeroed."""
    real = trainer_module.accumulate_gradients

    def dropped(model, *args, **kwargs):
        loss = real(model, *args, **kwargs)
        for p in model.model.parameters():
            if p.grad is not None:
                p.grad.zero_()
        return loss

    monkeypatch.setattr(trainer_module, "accumulate_gradients", dropped)


@pytest.mark.parametrize("broken", ["no gradient", "a copy stepped"])
def test_the_model_tuning_check_fails_when_training_breaks(tmp_path, monkeypatch, broken):
    (zero_backbone_gradient if broken == "no gradient" else step_a_copy)(monkeypatch)
    found = tuned_pair("tiny-llama", tmp_path)
    assert any(any(f.startswith("choice loss") for f in run) for run in found), found


# --- ATTEMPT ------------------------------------------------------------------------------------------------------
GOOD = 1  # the good source's place among ATTEMPT's three sources
# ATTEMPT trains an attention module (linear layers, LayerNorm) beside the prompt: AdamW at 0.1 moves the attention
# onto the good source and learns the task on both models (choice losses 0.018 and 0.029 here), where Adafactor at
# SPoT's 0.3 left the tiny Llama's at 0.18 in 40 steps.
ATTEMPT = {**SPOT, "optimizer": "adamw", "lr": 0.1}
# The attention as spot first built it (study.attempt: temperature sqrt(H), bias and train_norm true, target_init
# zeros), not ATTEMPT's defaults: with its temperature H * e and its LayerNorm fixed at gain 1, a score is at most
# |k| / (e sqrt(H)) (tests/test_attempt.py), 0.13 at these prompts' key norms (about 2) and H = 32, and the attention
# stays within a few points of uniform (0.25 -> 0.26 here). ATTEMPT's T5 keys are far larger: at 20 times these
# prompts the defaults moved it onto the good source (0.26 -> 0.62 on the tiny Llama, 0.27 -> 0.50 on the tiny T5).
EARLIER = {"bias": True, "train_norm": True}


def attempt_run(name: str, out) -> tuple[list[str], float, float]:
    """An ATTEMPT target on the task over three sources: a prompt trained on the task (GOOD) between two random
    prompts. Returns the target's failures and the mean attention on the good source before and after training."""
    base, codec = learner(name)
    data = task_data(codec)
    # 80 steps: a source that still solves the task once scaled down to the random prompts' norms (after 40 steps
    # the tiny T5's did not on an AMD EPYC host, where float rounding differs from the Xeon it was tuned on)
    Trainer(TrainerConfig(**{**SPOT, "steps": 80}), base, data, out / "source").fit()
    H = base.backbone.hidden_size
    noise = [random_uniform(4, H, 0.5, torch.Generator().manual_seed(10 + i)) for i in range(2)]
    # ATTEMPT's keys are max-pooled prompts: a source of larger entries (a trained one) would draw the attention for
    # its size alone. At the random prompts' token norms the attention starts near uniform and must move.
    trained = base.prompt.weight.detach()
    good = trained * noise[0].norm(dim=1, keepdim=True) / trained.norm(dim=1, keepdim=True)
    with torch.no_grad():
        base.prompt.weight.copy_(good)
    assert fit_of(base, data).accuracy == 1.0  # it solves the target: every example classified right
    gen = torch.Generator().manual_seed(0)
    module = AttentionPrompt(torch.stack([noise[0], good, noise[1]]), torch.zeros_like(good), 8, H**0.5, gen, **EARLIER)
    model = PromptedLM(base.backbone, module)
    trainer = Trainer(TrainerConfig(**ATTEMPT), model, data, out / "attempt")
    attention = lambda: validation_attention(model, module, data.validation).mean(0)[GOOD].item()  # noqa: E731
    before, start = fit_of(model, data), attention()
    trainer.fit()
    after, end = fit_of(model, data), attention()
    found = failures(before, after, trainer.run)
    if not after.choice < before.choice / 4:
        found.append(f"choice loss {after.choice:.4f} not below a quarter of its start {before.choice:.4f}")
    if not (end > start and end > 0.5):
        found.append(f"attention on the good source {start:.3f} -> {end:.3f}: not onto it (more than all others)")
    return found, start, end


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_attempts_target_learns_and_its_attention_moves_onto_the_source_that_solves_it(tmp_path, name):
    found, start, end = attempt_run(name, tmp_path)
    assert found == [] and start < 0.5  # it had to move


def test_the_attempt_check_fails_when_the_attention_gets_no_gradient(tmp_path, monkeypatch):
    """Only ATTEMPT's target prompt trains, its attention's gradient dropped (the target's own key still shifts the
    softmax a little): the check must not pass."""
    real = trainer_module.accumulate_gradients

    def dropped(model, *args, **kwargs):
        loss = real(model, *args, **kwargs)
        if isinstance(model.prompt, AttentionPrompt):
            for name, p in model.prompt.named_parameters():
                if name != "target":
                    p.grad.zero_()
        return loss

    monkeypatch.setattr(trainer_module, "accumulate_gradients", dropped)
    found, start, end = attempt_run("tiny-llama", tmp_path)
    assert any(f.startswith("attention on the good source") for f in found), found


# --- MPT -----------------------------------------------------------------------------------------------------------
# MPT's factors must tell the tasks apart (the inputs do not). AdamW at 0.1 learns both tasks on both models with a
# margin in 80 steps (largest choice loss 0.013 here); Adafactor at SPoT's 0.3 left a task unlearned on each model
# (choice losses 1.1 and 0.46), and at 0.1 came within 2x of the threshold.
MPT = {"steps": 80, "batch_size": 16, "eval_every": 40, "eval_batch_size": 8, "optimizer": "adamw", "lr": 0.1,
       "weight_decay": 0.0}  # fmt: skip


def mpt_run(name: str, out, distillation=None) -> tuple[list[list[str]], FactoredPrompt, dict]:
    """MPT's source run on the task (as sst2_v1) and its flip (as cr_v1, SST-2's label words) together, on the same
    inputs: one shared prompt, rank-1 factors per task starting at ones, so both tasks start from one prompt (with
    `distillation`: the paper's loss, else the multitask one). Returns each task's failures, the module and its
    parameters at the start."""
    base, codec = learner(name)
    parts = [task_data(codec), task_data(codec, flip=True, task="cr_v1")]
    module = FactoredPrompt(base.prompt.weight.detach(), tasks=2, rank=1)
    start = {k: v.detach().clone() for k, v in module.named_parameters()}
    model = PromptedLM(base.backbone, module)
    data = MixtureData(get("sst2_v1+cr_v1"), parts)
    trainer = MultitaskTrainer(TrainerConfig(**MPT), model, data, out, distillation=distillation)

    def fits():
        out = []
        for k, part in enumerate(parts):
            module.task = k
            out.append(fit_of(model, part))
        module.task = None
        return out

    before = fits()
    assert_cannot_both_pass(before)
    trainer.fit()
    found = [
        failures(b, a, trainer.run, f"val/{part.name}/accuracy")
        for b, a, part in zip(before, fits(), parts, strict=True)
    ]
    return found, module, start


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_mpts_shared_prompt_and_factors_learn_two_tasks_together(tmp_path, name):
    found, module, start = mpt_run(name, tmp_path)
    assert found == [[], []]
    for key, value in module.named_parameters():  # P* and both tasks' factors learned
        rows_moved = [not torch.equal(a, b) for a, b in zip(value.detach(), start[key], strict=True)]
        assert all(rows_moved) if key in ("u", "v") else not torch.equal(value.detach(), start[key]), key


def test_the_mpt_check_fails_when_a_task_gets_the_other_tasks_gradient(tmp_path, monkeypatch):
    """Each example prompted by the other task's prompt in training: each task learns the other's words."""
    real = mpt.row_gradients
    monkeypatch.setattr(
        mpt,
        "row_gradients",
        lambda engine, prompts, items, *a, **k: real(engine, prompts, [(1 - r, e) for r, e in items], *a, **k),
    )
    found, _, _ = mpt_run("tiny-llama", tmp_path)
    assert all(any(f.startswith("choice loss") for f in task) for task in found), found
