"""ATTEMPT and MPT (spot_core.methods): each reduces to what it generalises, and resumes bit for bit.

- ATTEMPT with its attention forced onto one source is SPoT's transfer from that source (the target prompt starts at
  zeros, so the instance prompt starts at the source prompt; weight decay off, since it acts on the whole prompt in
  SPoT and on the target part alone in ATTEMPT).
- MPT with rank-r factors of ones, held fixed, trains its shared prompt as a plain soft prompt: on one task, as a
  prompt started from it; on the sources together, as a prompt on their mixture.
"""

import json

import pytest
import torch
from conftest import no_dropout, prompted
from test_packing import RTE, SST2, assert_same_run

from spot_core.encoding import encode_examples
from spot_core.evaluation import MixtureData, TaskData
from spot_core.methods import BestModule, load_module
from spot_core.methods.attempt import AttentionPrompt, AttentionRecord
from spot_core.methods.mpt import MultitaskTrainer
from spot_core.packing import Pack
from spot_core.prompt_files import load_prompt
from spot_core.prompted import PromptedLM
from spot_core.prompts import FactoredPrompt, SoftPrompt, random_uniform
from spot_core.run_dir import RunDir
from spot_core.tasks import get, get_task
from spot_core.trainer import Trainer, TrainerConfig, accumulate_gradients

CONFIG = {"steps": 6, "batch_size": 4, "eval_every": 3, "eval_batch_size": 4, "embedding_step": 2, "lr": 0.3,
          "weight_decay": 0.0, "seed": 1}  # fmt: skip


def setup(name, length=4, prompt_once=None):
    base, codec = prompted(name, length=length, prompt_once=prompt_once)
    no_dropout(base.model)
    H = base.backbone.hidden_size
    sources = torch.stack([random_uniform(length, H, 0.5, torch.Generator().manual_seed(10 + i)) for i in range(3)])
    rte = TaskData(get_task("rte_v1"), codec, encode_examples(codec, RTE), encode_examples(codec, RTE[:6]))
    return base, codec, sources, rte


def attention(base, sources, forced=None, seed=0):
    H = base.backbone.hidden_size
    gen = torch.Generator().manual_seed(seed)
    return AttentionPrompt(sources, torch.zeros(sources.shape[1], H), 8, H**0.5, gen, forced)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_attempt_forced_onto_one_source_is_spots_transfer_from_it(tmp_path, name):
    base, codec, sources, rte = setup(name)
    config = TrainerConfig(**CONFIG)
    spot = PromptedLM(base.backbone, SoftPrompt(sources[1]))
    Trainer(config, spot, rte, tmp_path / "spot").fit()
    forced = torch.tensor([0.0, 1.0, 0.0, 0.0])
    module = attention(base, sources, forced)
    assert not module.per_example
    Trainer(config, PromptedLM(base.backbone, module), rte, tmp_path / "attempt").fit()
    same_run(tmp_path / "attempt", tmp_path / "spot")


def same_run(ours, theirs):
    """`assert_same_run` where float rounding accumulates over the steps: the run's prompt is computed as a sum (the
    source plus the trained target part) in one and trained as one matrix in the other, and Adafactor's normalised
    updates carry the last-bit differences on (about 3e-5 on prompt entries of magnitude 0.5 after 6 steps)."""
    for a, b in zip(*(json.loads((f / RunDir.METRICS).read_text()) for f in (ours, theirs)), strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-4)
    for f in (RunDir.BEST_PROMPT, RunDir.FINAL_PROMPT, RunDir.TASK_EMBEDDING):
        torch.testing.assert_close(load_prompt(ours / f)[0], load_prompt(theirs / f)[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_attempt_gives_each_input_its_own_prompt(tmp_path, name):
    base, codec, sources, rte = setup(name)
    module = attention(base, sources)
    model = PromptedLM(base.backbone, module)
    assert module.per_example and not model.shares_prompt  # an instance prompt cannot run once per batch
    ids = torch.tensor([rte.train[0].input_ids[-5:], rte.train[7].input_ids[-5:]])
    embeds = base.model.get_input_embeddings()(ids)
    weights = module.attention(embeds, torch.ones_like(ids))
    assert weights.shape == (2, 4) and torch.allclose(weights.sum(-1), torch.ones(2))
    assert not torch.allclose(weights[0], weights[1])
    # the instance prompt: the target prompt plus the attention-weighted prompts (the target's own among them)
    prompts = torch.cat([sources, module.target[None]])
    expected = module.target + (weights[:, :, None, None] * prompts).sum(1)
    torch.testing.assert_close(module.for_inputs(embeds, torch.ones_like(ids)), expected)
    # padding never enters the max-pool: a padded input attends as the unpadded one
    padded = torch.cat([ids[:1], torch.zeros(1, 3, dtype=ids.dtype)], 1)
    mask = torch.tensor([[1] * 5 + [0] * 3])
    torch.testing.assert_close(module.attention(base.model.get_input_embeddings()(padded), mask), weights[:1])
    # a step trains the target prompt and the attention, never the sources
    loss = model.loss({k: v for k, v in _batch(rte, codec).items()})
    loss.backward()
    assert module.target.grad.abs().sum() > 0 and module.down.weight.grad.abs().sum() > 0
    assert "sources" not in dict(module.named_parameters())
    with pytest.raises(ValueError, match="per-example"):
        Pack([Trainer(TrainerConfig(**CONFIG), model, rte, tmp_path / "a")])


def _batch(data, codec):
    from spot_core.encoding import collate

    return collate(data.train[:3], codec)


def attempt_trainer(base, sources, rte, out):
    module = attention(base, sources)
    model = PromptedLM(base.backbone, module)
    trainer = Trainer(TrainerConfig(**CONFIG), model, rte, out)
    run = RunDir(out)
    record = AttentionRecord(model, rte, run, ["a", "b", "c"], 6, trainer.tracker)
    trainer.callbacks += [BestModule(module, run), record]
    return trainer


def test_attempt_saves_its_module_and_attention_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    base, codec, sources, rte = setup("tiny-llama")
    attempt_trainer(base, sources, rte, tmp_path / "full").fit()
    record = json.loads((tmp_path / "full" / RunDir.ATTENTION).read_text())
    assert record["prompts"] == ["a", "b", "c", "target"] and len(record["examples"]) == len(rte.validation)
    assert sum(record["mean"]) == pytest.approx(1.0)
    state, meta = load_module(tmp_path / "full" / RunDir.BEST_MODULE)
    assert set(state) == {"sources", "target", "down.weight", "up.weight"}  # ATTEMPT's: no biases, a fixed LayerNorm
    result = json.loads((tmp_path / "full" / RunDir.RESULT).read_text())
    assert meta["step"] == result["best/step"] and meta["score"] == result["best/val_score"]
    _kill_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        attempt_trainer(base, sources, rte, tmp_path / "crash").fit()
    monkeypatch.undo()
    attempt_trainer(base, sources, rte, tmp_path / "crash").fit()
    assert_same_run(tmp_path / "crash", tmp_path / "full", exact=True)
    assert (tmp_path / "crash" / RunDir.ATTENTION).read_text() == (tmp_path / "full" / RunDir.ATTENTION).read_text()
    modules = (load_module(tmp_path / f / RunDir.BEST_MODULE) for f in ("crash", "full"))
    (crashed, crashed_meta), (full, full_meta) = modules
    assert crashed_meta == full_meta and all(torch.equal(crashed[k], full[k]) for k in full)


def _kill_at(monkeypatch, step):
    real = Trainer.step

    def step_then_die(self, state, loss):
        checkpointed = real(self, state, loss)
        if state.step == step:
            raise KeyboardInterrupt("simulated kill")
        return checkpointed

    monkeypatch.setattr(Trainer, "step", step_then_die)


def fixed_ones(module):
    for p in (module.u, module.v):
        p.data.fill_(1.0)
        p.requires_grad_(False)
    return module


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_mpt_with_factors_of_ones_trains_the_shared_prompt(tmp_path, name):
    base, codec, sources, rte = setup(name)
    config = TrainerConfig(**{**CONFIG, "weight_decay": 1e-5})
    Trainer(config, PromptedLM(base.backbone, SoftPrompt(sources[0])), rte, tmp_path / "plain").fit()
    module = fixed_ones(FactoredPrompt(sources[0]))
    Trainer(config, PromptedLM(base.backbone, module), rte, tmp_path / "mpt").fit()
    assert_same_run(tmp_path / "mpt", tmp_path / "plain")


def mixture(codec):
    sst2 = TaskData(get_task("sst2_v1"), codec, encode_examples(codec, SST2), encode_examples(codec, SST2[:5]))
    rte = TaskData(get_task("rte_v1"), codec, encode_examples(codec, RTE), encode_examples(codec, RTE[:6]))
    return MixtureData(get("sst2_v1+rte_v1"), [sst2, rte])


@pytest.mark.parametrize(("name", "prompt_once"), [("tiny-llama", None), ("tiny-llama", False), ("tiny-t5", None)])
def test_mpts_source_run_with_factors_of_ones_is_a_mixture_run(tmp_path, name, prompt_once):
    base, codec, sources, _ = setup(name, prompt_once=prompt_once)
    config = TrainerConfig(**{**CONFIG, "micro_batch_size": 3})
    plain = PromptedLM(base.backbone, SoftPrompt(sources[0]), prompt_once)
    Trainer(config, plain, mixture(codec), tmp_path / "mixture").fit()
    module = fixed_ones(FactoredPrompt(sources[0], tasks=2))
    MultitaskTrainer(config, PromptedLM(base.backbone, module, prompt_once), mixture(codec), tmp_path / "mpt").fit()
    assert_same_run(tmp_path / "mpt", tmp_path / "mixture")


def test_mpts_task_factors_learn_from_their_own_tasks_examples(tmp_path):
    base, codec, sources, _ = setup("tiny-llama")
    module = FactoredPrompt(sources[0], tasks=2, rank=2, generator=torch.Generator().manual_seed(0))
    trainer = MultitaskTrainer(TrainerConfig(**CONFIG), PromptedLM(base.backbone, module), mixture(codec), tmp_path)
    data = trainer.data
    assert [data.train[i] for i in range(len(data.train)) if data.rows[i] == 1] == data.parts[1].train
    only_rte = [i for i, row in enumerate(data.rows) if row == 1]
    data.train, data.rows = [data.train[i] for i in only_rte], [1] * len(only_rte)
    state = trainer.start()
    trainer.step = lambda state, loss: None  # keep the gradients to look at
    trainer._train_step(state)
    assert module.u.grad[0].abs().sum() == 0 and module.v.grad[0].abs().sum() == 0
    packed = {name: p.grad.clone() for name, p in module.named_parameters()}
    # the gradients of the same batch through task 1's prompt alone, as a plain run of it computes them
    module.zero_grad(set_to_none=True)
    module.task = 1
    batch = trainer.batch(state)  # the examples of the step above (its step, batch size and seed)
    accumulate_gradients(trainer.model, batch, codec, len(batch))
    module.task = None
    for name, p in module.named_parameters():
        torch.testing.assert_close(packed[name], p.grad, rtol=1e-4, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}")
    assert module.u.grad[1].abs().sum() > 0  # and it is not the zero gradient of task 0's factors


def test_mpts_source_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    base, codec, sources, _ = setup("tiny-llama")

    def trainer(out):
        module = FactoredPrompt(sources[0], tasks=2, rank=2, generator=torch.Generator().manual_seed(0))
        t = MultitaskTrainer(TrainerConfig(**CONFIG), PromptedLM(base.backbone, module), mixture(codec), out)
        t.callbacks.append(BestModule(module, RunDir(out)))
        return t

    trainer(tmp_path / "full").fit()
    _kill_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "crash").fit()
    monkeypatch.undo()
    trainer(tmp_path / "crash").fit()
    assert_same_run(tmp_path / "crash", tmp_path / "full", exact=True)
    metrics = json.loads((tmp_path / "full" / RunDir.METRICS).read_text())
    assert {"val/sst2_v1/score", "val/rte_v1/score"} <= set(metrics[-1])
    state, _ = load_module(tmp_path / "full" / RunDir.BEST_MODULE)
    assert state["u"].shape == (2, 4, 2) and state["v"].shape[:2] == (2, 2)


def test_prompt_rank_trains_mpts_factored_prompt_in_any_run(tmp_path, data_dir):
    from spot_core.tracking import MemoryTracker
    from spot_core.tuning import PromptConfig, RunSpec, trainer_for

    prompt = PromptConfig(length=4, init="sampled_vocab", rank=2, train_shared=False)
    trainer_config = TrainerConfig(steps=2, batch_size=4, eval_every=2, eval_batch_size=8)
    spec = RunSpec("tiny-llama", "rte", prompt, trainer_config, data_dir=str(data_dir), max_train_examples=8,
                   max_eval_examples=8)  # fmt: skip
    tracker = MemoryTracker()
    trainer = trainer_for(spec, tmp_path, tracker)
    module = trainer.model.prompt
    H = module.shared.shape[1]
    assert isinstance(module, FactoredPrompt) and "shared" not in dict(module.named_parameters())
    shared = module.shared.clone()
    trainer.fit()
    assert tracker.params["trainable_params"] == 4 * 2 + 2 * H and tracker.params["prompt.rank"] == 2
    torch.testing.assert_close(module.shared, shared)  # P* held fixed, its factors trained
    initial = load_prompt(tmp_path / RunDir.INITIAL_PROMPT)[0]
    torch.testing.assert_close(initial, shared, rtol=0.05, atol=0.01)  # u v^T starts at ones (rank 2: plus noise)


def test_the_methods_benchmark_times_every_step_and_counts_their_parameters():
    from bench.methods import main

    out = main(["--model", "tiny-llama", "--steps", "1", "--warmup", "0", "--prompt-len", "4", "--input-len", "8"])
    assert set(out["seconds_per_step"]) == {"spot", "spot_full", "attempt", "mpt", "mpt_source"}
    seconds = out["seconds_per_step"]
    assert all(s > 0 for s in seconds.values())  # timed: a step takes time
    assert out["ratio_to_spot"] == pytest.approx({name: s / seconds["spot"] for name, s in seconds.items()})
    assert out["attempt_vs_concatenated_spot"] == pytest.approx(seconds["attempt"] / seconds["spot_full"])
    H, d, L = 32, 100, 4
    params = out["trainable_params"]
    assert params["spot"] == L * H and params["mpt"] == L * H + L + H and params["mpt_source"] == L * H + 2 * (L + H)
    assert params["attempt"] == L * H + H * d + d * H  # target prompt, W_down, W_up (ATTEMPT's: no biases, fixed norm)
