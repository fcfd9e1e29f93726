"""Trainer: checkpoints, exact resume, determinism, failure modes."""

import json

import pytest
import torch
from conftest import prompted
from torch import nn

from spot_core.encoding import encode_examples
from spot_core.evaluation import TaskData
from spot_core.prompt_files import load_prompt
from spot_core.prompted import PromptedLM
from spot_core.prompts import PromptModule
from spot_core.tasks import get_task
from spot_core.tracking import MemoryTracker
from spot_core.trainer import NonFiniteLossError, Trainer, TrainerConfig

WORDS = ["good", "great", "fine", "bad", "awful", "dull", "lovely", "poor"]
TRAIN = [
    {"inputs": f"sst2 sentence: {w} {v}", "targets": "positive" if i % 2 else "negative"}
    for i, (w, v) in enumerate(zip(WORDS * 3, reversed(WORDS * 3), strict=True))
]


class FactorPrompt(PromptModule):
    """A test-only prompt module: the prompt is the product of two trained factors, [L, r] @ [r, H]."""

    def __init__(self, length: int, rank: int, hidden_size: int, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.left = nn.Parameter(torch.randn(length, rank, generator=gen))
        self.right = nn.Parameter(torch.randn(rank, hidden_size, generator=gen) * 0.5)

    def forward(self) -> torch.Tensor:
        return self.left @ self.right


def make(name="tiny-t5", out=None, factors=False, **cfg):
    model, codec = prompted(name, length=4, seed=1)
    if factors:
        model = PromptedLM(model.backbone, FactorPrompt(4, 2, model.backbone.hidden_size))
    task = get_task("sst2_v1")
    data = TaskData(task, codec, encode_examples(codec, TRAIN), encode_examples(codec, TRAIN[:8]))
    config = TrainerConfig(
        **{"steps": 12, "batch_size": 4, "eval_every": 4, "eval_batch_size": 4, "embedding_step": 2, **cfg}
    )
    return Trainer(config, model, data, out, tracker=MemoryTracker()), model


def kill(trainer: Trainer, after: int, monkeypatch) -> None:
    """Runs `trainer` until step `after` and kills it there, as a crash would."""
    real_step = Trainer._train_step

    def step_then_die(self, state):
        real_step(self, state)
        if state.step == after:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(Trainer, "_train_step", step_then_die)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    monkeypatch.setattr(Trainer, "_train_step", real_step)


def assert_same_prompts(ours, theirs) -> None:
    """The two runs wrote bit-identical prompt files, with the same metadata."""
    for f in ("final_prompt", "best_prompt", "task_embedding"):
        a, b = load_prompt(ours / f"{f}.safetensors"), load_prompt(theirs / f"{f}.safetensors")
        assert torch.equal(a[0], b[0]) and a[1] == b[1]


def test_fit_writes_every_artifact_and_only_the_prompt_changes(tmp_path):
    trainer, model = make(out=tmp_path)
    init = model.prompt.weight.detach().clone()
    backbone = {k: v.clone() for k, v in model.model.state_dict().items()}
    result = trainer.fit()
    assert {"best/val_score", "best/step", "final/val_score", "final/step"} <= set(result)
    assert result["final/step"] == 12 and result["best/step"] in (4, 8, 12)
    for name in ("initial_prompt", "best_prompt", "task_embedding", "final_prompt"):
        assert (tmp_path / f"{name}.safetensors").exists()
    assert torch.equal(load_prompt(tmp_path / "initial_prompt.safetensors")[0], init)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_0000004.safetensors",
        "step_0000008.safetensors",
        "step_0000012.safetensors",
    ]
    emb, meta = load_prompt(tmp_path / "task_embedding.safetensors")
    assert meta["step"] == 2 and meta["task"] == "sst2_v1" and meta["model"] == "tiny-t5"
    best, meta = load_prompt(tmp_path / "best_prompt.safetensors")
    assert meta["step"] == result["best/step"] and meta["score"] == result["best/val_score"]
    final, _ = load_prompt(tmp_path / "final_prompt.safetensors")
    assert torch.equal(final, model.prompt.weight.detach()) and not torch.equal(final, init)
    assert all(torch.equal(v, model.model.state_dict()[k]) for k, v in backbone.items())
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["step"] for h in history] == [0, 4, 8, 12]
    assert "train/loss" in history[1] and "val/accuracy" in history[1]
    logged = trainer.tracker
    assert logged.params["trainer.optimizer"] == "adafactor" and logged.params["trainer.lr"] == 0.3
    assert [s for s, m in logged.metrics if "val/score" in m] == [0, 4, 8, 12]


def test_same_seed_same_prompt_and_other_seed_differs(tmp_path):
    a, _ = make(out=tmp_path / "a")
    b, _ = make(out=tmp_path / "b")
    c, _ = make(out=tmp_path / "c", seed=1)
    a.fit(), b.fit(), c.fit()
    pa, pb, pc = (load_prompt(tmp_path / n / "final_prompt.safetensors")[0] for n in "abc")
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-llama"])
@pytest.mark.parametrize("kill_after", [3, 6, 11])
def test_interrupted_run_resumes_bit_identically(tmp_path, monkeypatch, name, kill_after):
    full, _ = make(name, out=tmp_path / "full", optimizer="adamw", lr=0.05)
    reference = full.fit()

    crashing, _ = make(name, out=tmp_path / "crash", optimizer="adamw", lr=0.05)
    kill(crashing, kill_after, monkeypatch)
    resumed, _ = make(name, out=tmp_path / "crash", optimizer="adamw", lr=0.05)
    assert resumed.fit() == reference
    assert_same_prompts(tmp_path / "crash", tmp_path / "full")
    assert json.loads((tmp_path / "crash/metrics.json").read_text()) == json.loads(
        (tmp_path / "full/metrics.json").read_text()
    )


def test_adafactor_resume_is_exact_too(tmp_path, monkeypatch):
    full, _ = make(out=tmp_path / "full")
    full.fit()
    half, _ = make(out=tmp_path / "half", steps=8)
    half.fit()  # a finished 8-step run leaves its step-8 checkpoint; continue it to 12
    (tmp_path / "half/result.json").unlink()
    longer, _ = make(out=tmp_path / "half")
    longer.fit()
    assert torch.equal(
        load_prompt(tmp_path / "full/final_prompt.safetensors")[0],
        load_prompt(tmp_path / "half/final_prompt.safetensors")[0],
    )


@pytest.mark.parametrize("includes_init", [False, True])
def test_the_initial_prompt_competes_for_best_only_when_asked(tmp_path, includes_init):
    trainer, model = make(out=tmp_path, best_includes_init=includes_init)
    init = model.prompt.weight.detach().clone()
    scores = iter([90.0, 50.0, 60.0, 55.0])  # training makes it worse than the init: steps 0, 4, 8, 12
    trainer.data.evaluate = lambda model, batch_size: {"score": next(scores)}
    result = trainer.fit()
    best, meta = load_prompt(tmp_path / "best_prompt.safetensors")
    if includes_init:
        assert (result["best/val_score"], result["best/step"]) == (90.0, 0) and torch.equal(best, init)
    else:
        assert (result["best/val_score"], result["best/step"]) == (60.0, 8) and meta["step"] == 8


def test_finished_run_is_not_trained_again(tmp_path, monkeypatch):
    first, _ = make(out=tmp_path)
    result = first.fit()
    again, _ = make(out=tmp_path)
    monkeypatch.setattr(Trainer, "_train_step", lambda *a: pytest.fail("a finished run trained again"))
    assert again.fit() == result


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    trainer, model = make(out=tmp_path)
    with torch.no_grad():
        model.prompt.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 1 .*lower the learning rate"):
        trainer.fit()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("optimizer", "sgd", "optimizer must be one of: adafactor, adamw; got 'sgd'"),
        ("steps", 0, "trainer.steps must be an integer >= 1, got 0"),
        ("lr", -1.0, "trainer.lr must be a finite number > 0, got -1.0"),
        ("embedding_step", 50, r"trainer.embedding_step must be in 1..trainer.steps \(10\)"),
    ],
)
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainerConfig(**{"steps": 10, field: value})


def test_micro_batches_give_the_same_gradient_as_one_pass(tiny_name):
    from spot_core.trainer import accumulate_gradients

    model, codec = prompted(tiny_name, length=4)
    model.eval()  # no dropout: the two passes must see the same function
    examples = encode_examples(codec, TRAIN[:6])
    whole = accumulate_gradients(model, examples, codec, micro_batch_size=6)
    grad = model.prompt.weight.grad.clone()
    model.prompt.weight.grad = None
    parts = accumulate_gradients(model, examples, codec, micro_batch_size=4)
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.prompt.weight.grad, grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-llama"])
def test_the_trainer_trains_any_prompt_module(tmp_path, monkeypatch, name):
    trainer, model = make(name, out=tmp_path / "full", factors=True, optimizer="adamw", lr=0.05)
    start = {k: v.clone() for k, v in model.prompt.state_dict().items()}
    backbone = {k: v.clone() for k, v in model.model.state_dict().items()}
    reference = trainer.fit()
    assert all(not torch.equal(v, model.prompt.state_dict()[k]) for k, v in start.items())  # both factors learn
    assert all(torch.equal(v, model.model.state_dict()[k]) for k, v in backbone.items())
    with torch.no_grad():  # the prompt files hold what the module produces, [L, H]
        assert torch.equal(load_prompt(tmp_path / "full/final_prompt.safetensors")[0], model.prompt())
        assert torch.equal(load_prompt(tmp_path / "full/initial_prompt.safetensors")[0], start["left"] @ start["right"])
    saved = torch.load(tmp_path / "full/resume.pt", weights_only=False)["prompt_state"]
    assert set(saved) == {"left", "right"}
    # an interrupted run of the module resumes bit-identically from its state_dict
    crashing, _ = make(name, out=tmp_path / "crash", factors=True, optimizer="adamw", lr=0.05)
    kill(crashing, 6, monkeypatch)
    resumed, _ = make(name, out=tmp_path / "crash", factors=True, optimizer="adamw", lr=0.05)
    assert resumed.fit() == reference
    assert_same_prompts(tmp_path / "crash", tmp_path / "full")


def test_a_checkpoint_written_before_prompt_modules_still_resumes_bit_identically(tmp_path, monkeypatch):
    full, _ = make(out=tmp_path / "full")
    reference = full.fit()
    crashing, _ = make(out=tmp_path / "old")
    kill(crashing, 5, monkeypatch)
    # the layout of resume.pt before prompt modules: the SoftPrompt's weight under "prompt"
    blob = torch.load(tmp_path / "old/resume.pt", weights_only=False)
    blob["prompt"] = blob.pop("prompt_state")["weight"]
    torch.save(blob, tmp_path / "old/resume.pt")
    resumed, _ = make(out=tmp_path / "old")
    assert resumed.fit() == reference
    assert_same_prompts(tmp_path / "old", tmp_path / "full")
