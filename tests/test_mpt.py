"""MPT by the paper's recipe (spot_core.methods.mpt, spot_core.stages.mpt): the source run's distillation from the
single-task prompts, a target's factors started from the source run's, and the stage that wires them.

- Distillation: the student as its own teacher adds nothing (KL 0, hidden-state MSE 0: the loss is the LM loss);
  another teacher adds the KL and the MSE as computed here by hand, example by example, with F.kl_div on the model's
  own logits; micro-batches and prompt once change nothing; its gradient reaches P* and each task's factors; weight
  0 is the plain multitask loss (`study.mpt.distill=false`).
- Target init: average, exact:<task> and ones give the factors PEFT's AVERAGE_SOURCE_TASKS, EXACT_SOURCE_TASK and
  spot's ones give.
- The stage: the source run waits for the source runs it distils and names their prompt files in its tasks' order;
  the settings are checked and keyed; a distilling source run is priced with its teachers' forward passes; a tiny
  study runs it end to end.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import no_dropout, prompted
from test_packing import RTE, SST2

from spot_core import cost
from spot_core.encoding import collate, encode_examples, length, to_device
from spot_core.errors import ConfigError
from spot_core.evaluation import MixtureData, TaskData
from spot_core.methods import load_module, save_module
from spot_core.methods.mpt import Distillation, MPTConfig, MultitaskTrainer
from spot_core.packing import Pack, row_gradients
from spot_core.prompt_files import load_prompt, save_prompt
from spot_core.prompted import PromptedLM
from spot_core.prompts import FactoredPrompt, PromptShapeError, SoftPrompt, random_uniform, source_factors
from spot_core.run_dir import RunDir
from spot_core.stages.catalogue import plan_stages, runnable, stage_named, stage_of
from spot_core.study import StudyConfig
from spot_core.tags import Stage
from spot_core.tasks import get, get_task
from spot_core.tracking import MemoryTracker
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec, codec_for, prompt_module

PATHS = [("tiny-llama", None), ("tiny-llama", False), ("tiny-t5", None)]  # prompt once, concatenated, T5


def setup(name, prompt_once=None):
    """A tiny model without dropout, MPT's two-task prompt on it (rank 2, P* and factors random), two other
    prompts (teachers), and a batch of both tasks' examples as (task, example) items."""
    base, codec = prompted(name, length=4, prompt_once=prompt_once)
    no_dropout(base.model)
    H, gen = base.backbone.hidden_size, torch.Generator().manual_seed(7)
    module = FactoredPrompt(random_uniform(4, H, 0.5, gen), tasks=2, rank=2, generator=gen)
    with torch.no_grad():
        module.u.add_(0.3 * torch.randn(module.u.shape, generator=gen))
    model = PromptedLM(base.backbone, module, prompt_once)
    teachers = torch.stack([random_uniform(4, H, 0.5, gen) for _ in range(2)])
    examples = encode_examples(codec, SST2[:4]) + encode_examples(codec, RTE[:4])
    items = [(0, e) for e in examples[:4]] + [(1, e) for e in examples[4:]]
    return model, codec, teachers, items


def step(model, items, codec, distillation=None, chunk=None):
    """`MultitaskTrainer`'s step on `items`: (the batch's mean loss, each parameter's gradient)."""
    model.prompt.zero_grad(set_to_none=True)
    targets = sum(len(e.target_ids) for _, e in items)
    prompts = model.prompt.task_prompts()
    weight = torch.full((prompts.shape[0],), 1.0 / targets)
    loss = distillation.row_loss(model, items) if distillation else None
    sums = row_gradients(model, prompts, items, weight, codec, chunk or len(items), loss=loss)
    return sums.sum() / targets, {k: p.grad.clone() for k, p in model.prompt.named_parameters()}


@pytest.mark.parametrize(("name", "prompt_once"), PATHS)
def test_the_student_as_its_own_teacher_adds_nothing(name, prompt_once):
    model, codec, _, items = setup(name, prompt_once)
    plain, plain_grads = step(model, items, codec)
    itself = Distillation(model.prompt.task_prompts().detach().clone(), weight=0.9, temperature=2.0)
    loss, grads = step(model, items, codec, itself)
    torch.testing.assert_close(loss, plain, rtol=1e-6, atol=1e-6)  # KL 0 and MSE 0: the LM loss alone
    for key, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[key], rtol=1e-4, atol=1e-6)


def by_hand(model, codec, prompt, example, T):
    """One example alone on the concatenated path, prompted by `prompt`: (logits predicting its target tokens
    [S, V], the last hidden states of its tokens [len(input) + S, H])."""
    lone = PromptedLM(model.backbone, SoftPrompt(prompt), prompt_once=False)
    batch = to_device(collate([example], codec), model.device)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    n, S = len(example.input_ids), len(example.target_ids)
    if not model.is_encoder_decoder:
        hidden = lone.hidden(ids, mask).states[0]  # input then target tokens
        return lone.head(hidden)[n - 1 : n - 1 + S], hidden
    embeds, full = lone.embed(ids, mask)
    dec = model.model.prepare_decoder_input_ids_from_labels(labels=labels)
    out = model.model(inputs_embeds=embeds, attention_mask=full, decoder_input_ids=dec, output_hidden_states=True)
    return out.logits[0].float(), torch.cat([out.encoder_last_hidden_state[0, 4:], out.decoder_hidden_states[-1][0]])


@pytest.mark.parametrize(("name", "prompt_once"), PATHS)
def test_another_teacher_adds_the_kl_and_the_hidden_mse_computed_by_hand(name, prompt_once):
    model, codec, teachers, items = setup(name, prompt_once)
    weight, T = 0.5, 2.0
    loss, _ = step(model, items, codec, Distillation(teachers, weight, T))
    students = model.prompt.task_prompts().detach()
    ce = kl = squared = 0.0
    with torch.no_grad():
        for task, e in items:
            logits, hidden = by_hand(model, codec, students[task], e, T)
            teacher_logits, teacher_hidden = by_hand(model, codec, teachers[task], e, T)
            target = torch.tensor(e.target_ids)
            ce += F.cross_entropy(logits, target, reduction="sum")
            kl += F.kl_div(F.log_softmax(logits / T, -1), F.softmax(teacher_logits / T, -1), reduction="sum")
            squared += (hidden - teacher_hidden).pow(2).mean(-1).sum()
    targets, tokens = sum(len(e.target_ids) for _, e in items), sum(length(e) for _, e in items)
    assert kl > 0 and squared > 0
    expected = (ce + weight * kl) / targets + weight * squared / tokens  # L_PLM + lambda (L_Logits + L_Hidden)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_distillation_micro_batches_and_prompt_once_change_nothing(name):
    model, codec, teachers, items = setup(name)
    distillation = Distillation(teachers, 0.9, 1.5)
    whole, grads = step(model, items, codec, distillation)
    parts, part_grads = step(model, items, codec, distillation, chunk=3)
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    runs = [part_grads]
    if not model.is_encoder_decoder:  # the reference path: the prompt before every example
        runs.append(step(PromptedLM(model.backbone, model.prompt, prompt_once=False), items, codec, distillation)[1])
    for other in runs:
        for key, grad in grads.items():
            torch.testing.assert_close(other[key], grad, rtol=1e-4, atol=1e-6)


def test_the_distillation_gradient_reaches_the_shared_prompt_and_each_tasks_factors():
    model, codec, teachers, items = setup("tiny-llama")
    plain, plain_grads = step(model, items, codec)
    zero, zero_grads = step(model, items, codec, Distillation(teachers, weight=0.0))
    torch.testing.assert_close(zero, plain)  # weight 0 (and study.mpt.distill=false): the multitask loss
    assert all(torch.equal(zero_grads[k], plain_grads[k]) for k in plain_grads)
    _, grads = step(model, items, codec, Distillation(teachers, weight=0.9))
    for key in ("shared", "u", "v"):
        moved = (grads[key] - plain_grads[key]).flatten(1 if key != "shared" else 0).abs().amax(-1)
        assert (moved > 1e-6).all(), key  # P*, and both tasks' u and v
    # only task 1's examples: the distillation term moves task 1's factors, never task 0's
    rte = [(task, e) for task, e in items if task == 1]
    _, grads = step(model, rte, codec, Distillation(teachers, weight=0.9))
    assert grads["u"][0].abs().sum() == 0 and grads["v"][0].abs().sum() == 0 and grads["u"][1].abs().sum() > 0


def test_the_trainer_distils_and_refuses_teachers_of_another_shape(tmp_path):
    model, codec, teachers, _ = setup("tiny-llama")
    sst2 = TaskData(get_task("sst2_v1"), codec, encode_examples(codec, SST2), encode_examples(codec, SST2[:4]))
    rte = TaskData(get_task("rte_v1"), codec, encode_examples(codec, RTE), encode_examples(codec, RTE[:4]))
    data = MixtureData(get("sst2_v1+rte_v1"), [sst2, rte])
    config = TrainerConfig(steps=2, batch_size=4, eval_every=2, eval_batch_size=4)
    with pytest.raises(ConfigError, match=r"a teacher prompt per task of shape \(4, 32\) \(2 tasks\)"):
        MultitaskTrainer(config, model, data, tmp_path / "bad", distillation=Distillation(teachers[:1]))
    trainer = MultitaskTrainer(config, model, data, tmp_path / "run", distillation=Distillation(teachers))
    assert trainer.fit()["final/step"] == 2


def test_source_factors_average_each_factor_or_take_one_tasks():
    u = torch.tensor([[[1.0], [3.0]], [[3.0], [5.0]]])  # [T=2, L=2, r=1]
    v = torch.tensor([[[2.0, 0.0, 4.0]], [[0.0, 2.0, 2.0]]])  # [T=2, r=1, H=3]
    mean_u, mean_v = source_factors({"shared": torch.ones(2, 3), "u": u, "v": v})
    assert mean_u.tolist() == [[2.0], [4.0]] and mean_v.tolist() == [[1.0, 1.0, 3.0]]  # each factor averaged alone
    assert [f.tolist() for f in source_factors({"u": u, "v": v}, 1)] == [[[3.0], [5.0]], [[0.0, 2.0, 2.0]]]
    with pytest.raises(PromptShapeError, match="factors of 2 tasks, not of task 2"):
        source_factors({"u": u, "v": v}, 2)
    with pytest.raises(PromptShapeError, match="not an MPT source run's module"):
        source_factors({"weight": torch.ones(2, 3)})


def test_a_target_starts_its_factors_from_the_source_runs_module(tmp_path):
    base, _ = prompted("tiny-llama", length=4)
    H, gen = base.backbone.hidden_size, torch.Generator().manual_seed(3)
    source = FactoredPrompt(random_uniform(4, H, 0.5, gen), tasks=2, rank=2, generator=gen)
    with torch.no_grad():
        source.u.copy_(torch.randn(source.u.shape, generator=gen))
    module_file = save_module(tmp_path / RunDir.BEST_MODULE, source, step=1, score=50.0)
    shared_file = save_prompt(tmp_path / RunDir.BEST_PROMPT, source.shared.detach())

    def target(**prompt):
        config = PromptConfig(length=4, init="file", files=[str(shared_file)], rank=2, **prompt)
        spec = RunSpec("tiny-llama", "rte", config)
        return prompt_module(spec, base.backbone, codec_for(spec, base.backbone))

    average = target(factors=str(module_file))
    torch.testing.assert_close(average.u[0], source.u.mean(0).detach())  # PEFT's AVERAGE_SOURCE_TASKS
    torch.testing.assert_close(average.v[0], source.v.mean(0).detach())
    torch.testing.assert_close(average(), source.shared * (source.u.mean(0) @ source.v.mean(0)))
    exact = target(factors=str(module_file), factors_task=1)  # PEFT's EXACT_SOURCE_TASK
    assert torch.equal(exact.u[0], source.u[1]) and torch.equal(exact.v[0], source.v[1])
    torch.testing.assert_close(exact(), source.task_prompts()[1])  # the source task's own prompt, to start
    ones = target()
    assert torch.equal(ones.u, torch.ones(1, 4, 2)) and torch.equal(ones.shared, source.shared)
    assert load_module(module_file)[0]["u"].shape == (2, 4, 2)
    prompt = PromptConfig(4, "file", files=[str(shared_file)], rank=1, factors=str(module_file))
    wrong_rank = RunSpec("tiny-llama", "rte", prompt)
    with pytest.raises(ConfigError, match="holds rank-2 factors, but prompt.rank=1"):
        prompt_module(wrong_rank, base.backbone, codec_for(wrong_rank, base.backbone))
    with pytest.raises(ConfigError, match="prompt.factors: no MPT source module at"):
        target(factors=str(tmp_path / "nope.safetensors"))
    with pytest.raises(ConfigError, match="prompt.factors starts MPT's factors: it needs prompt.rank"):
        PromptConfig(4, "file", files=[str(shared_file)], factors=str(module_file))


def study(**kw) -> StudyConfig:
    return StudyConfig(
        **{"name": "t", "model": "tiny-llama", "sources": ["mnli", "sst2"], "targets": ["rte", "cb"], "seeds": [0, 1],
           "source_seeds": [3, 4], "prompt": {"length": 4}, **kw}
    )  # fmt: skip


def test_the_source_run_waits_for_the_source_runs_it_distils_and_names_their_prompts(tmp_path):
    cfg = study()
    cells = plan_stages(cfg, ["source", "mpt"])
    sources = {(c.task, c.seed): c for c in cells if c.stage is Stage.SOURCE}
    shared = [c for c in cells if c.stage is Stage.MPT_SOURCE]
    assert [c.seed for c in shared] == [3, 4]  # a run per source seed, each distilling the first seed's runs
    teachers = [sources["mnli_v1", 3], sources["sst2_v1", 3]]  # in the order of its tasks
    assert all(list(c.parts) == teachers and set(teachers) <= set(c.inputs) for c in shared)
    spec = stage_named("mpt").spec(cfg, shared[0], tmp_path)
    assert spec["teachers"] == [str(c.out_dir(tmp_path) / "best_prompt.safetensors") for c in teachers]
    assert spec["mpt"] == {"rank": 1, "distill": True, "distill_weight": 0.9, "distill_temperature": 1.0}
    # without the source stage (and no finished source runs) the source run cannot run, nor its targets
    kept, why = runnable(plan_stages(cfg, ["mpt"]), finished=set())
    assert kept == [] and "add stage 'source' to stages" in why[shared[0].label]
    assert len(runnable(plan_stages(cfg, ["mpt"]), {c.key for c in teachers})[0]) == 2 + 2 * 2
    # study.mpt.distill=false: the multitask loss, no teachers to wait for
    plain = plan_stages(study(mpt={"distill": False}), ["mpt"])
    assert plain[0].parts == () and plain[0].key != shared[0].key
    assert stage_named("mpt").spec(cfg, plain[0], tmp_path)["teachers"] == []


def test_mpt_settings_are_checked_and_keyed(tmp_path):
    cfg = study()
    shared, target = plan_stages(cfg, ["mpt"])[0], plan_stages(cfg, ["mpt"])[2]
    keys = {
        plan_stages(study(mpt=mpt), ["mpt"])[0].key
        for mpt in ({}, {"distill_weight": 0.5}, {"distill_temperature": 2.0}, {"distill": False})
    }
    assert len(keys) == 4 and shared.key in keys
    assert (
        plan_stages(study(mpt={"distill": False, "distill_weight": 0.5}), ["mpt"])[0].key
        == plan_stages(study(mpt={"distill": False}), ["mpt"])[0].key
    )  # the weight does not matter where nothing is distilled
    exact = plan_stages(study(mpt={"target_init": "exact:sst2"}), ["mpt"])
    assert exact[0].key == shared.key and exact[2].key != target.key  # the target's init is the target's key
    prompt = stage_named("mpt").spec(study(mpt={"target_init": "exact:sst2"}), exact[2], tmp_path)["job"]["prompt"]
    assert prompt["factors"] == str(shared.run_dir(tmp_path).best_module) and prompt["factors_task"] == 1
    average = stage_named("mpt").spec(cfg, target, tmp_path)["job"]["prompt"]
    assert (average["factors"], average["factors_task"]) == (str(shared.run_dir(tmp_path).best_module), None)
    at_ones = study(mpt={"target_init": "ones"})
    ones = stage_named("mpt").spec(at_ones, plan_stages(at_ones, ["mpt"])[2], tmp_path)["job"]["prompt"]
    assert ones["factors"] is None and ones["factors_task"] is None
    assert MPTConfig(target_init="exact:sst2").target_init == "exact:sst2_v1"
    for bad, message in (
        ({"distill": "yes"}, "study.mpt.distill must be true or false"),
        ({"distill_weight": -1}, "study.mpt.distill_weight must be a finite number >= 0"),
        ({"distill_temperature": 0}, "study.mpt.distill_temperature must be a finite number > 0"),
        ({"target_init": "exact"}, "study.mpt.target_init must be one of: average, ones, exact:<source task>"),
        ({"target_init": "exact:nosuchtask"}, "study.mpt.target_init=exact:nosuchtask: unknown task"),
    ):
        with pytest.raises(ConfigError, match=message):
            study(mpt=bad)
    with pytest.raises(ConfigError, match=r"target_init=exact:rte_v1: not one of MPT's source tasks"):
        plan_stages(study(mpt={"target_init": "exact:rte"}), ["mpt"])


def test_a_mixture_source_leaves_its_tasks_without_teachers():
    cfg = study(sources=["sst2", "paraphrase"])
    with pytest.raises(ConfigError, match=r"have none: they are members of a mixture .* or set study.mpt.distill"):
        plan_stages(cfg, ["mpt"])
    plain = plan_stages(study(sources=["sst2", "paraphrase"], mpt={"distill": False}), ["mpt"])
    assert plain[0].task.startswith("sst2_v1+")


def test_a_distilling_source_run_is_priced_with_its_teachers_forward_passes():
    cfg = study()
    shared, target = plan_stages(cfg, ["mpt"])[0], plan_stages(cfg, ["mpt"])[2]
    mpt = stage_named("mpt")
    work = mpt.work(shared, cfg)
    assert work.forward_steps == work.steps == cfg.source_trainer.steps
    assert mpt.work(target, cfg).forward_steps == 0
    assert mpt.work(plan_stages(study(mpt={"distill": False}), ["mpt"])[0], cfg).forward_steps == 0
    shape = cost.Shape(4, 64, 8, True)
    relative = cost.TokenCost("any", train=3.0, evaluate=1.0, how="")  # a training token = 3 evaluation tokens
    train, _ = work.seconds(shape, relative)
    assert train == pytest.approx(work.steps * shape.step_tokens(work.batch_size) * (3.0 + 1.0))


def test_a_tiny_study_distils_and_starts_its_targets_from_the_averaged_factors(tmp_path, data_dir):
    trainer = {"steps": 2, "batch_size": 4, "eval_every": 2, "eval_batch_size": 8}
    cfg = study(targets=["rte"], seeds=[0], source_seeds=[0], data_dir=str(data_dir), max_train_examples=8,
                max_eval_examples=8, source_trainer=trainer, target_trainer=trainer)  # fmt: skip
    trackers = {}
    for cell in plan_stages(cfg, ["source", "mpt"]):  # upstream first, as the scheduler runs them
        stage, trackers[cell.stage] = stage_of(cell.stage), MemoryTracker()
        stage.run(stage.spec(cfg, cell, tmp_path), cell.out_dir(tmp_path), trackers[cell.stage])
        assert cell.run_dir(tmp_path).finished(), cell.label
    assert trackers[Stage.MPT_SOURCE].params["mpt.distill"] is True
    assert trackers[Stage.MPT_SOURCE].params["mpt.distill_weight"] == 0.9
    shared, target = [c for c in plan_stages(cfg, ["mpt"])]
    state, _ = load_module(shared.run_dir(tmp_path).best_module)
    start = state["shared"] * (state["u"].mean(0) @ state["v"].mean(0))
    torch.testing.assert_close(load_prompt(target.run_dir(tmp_path).initial_prompt)[0], start)
    assert trackers[Stage.MPT].params["prompt.factors_task"] == "average"


def test_a_distilled_source_run_learns_both_tasks_from_teachers_that_solve_them(tmp_path):
    """tests/test_learning.py's MPT check (a task and its flip on the same inputs, from one prompt) with the
    paper's loss: the teachers are the two tasks' own prompts, trained alone there first."""
    from test_learning import fit_of, mpt_run, pair

    runs = pair("tiny-llama", tmp_path / "teachers")
    Pack(runs).fit()  # the two teachers, trained as one pack
    assert all(fit_of(t.model, t.data).accuracy == 1.0 for t in runs)  # each teacher solves its task
    teachers = torch.stack([t.model.prompt.weight.detach() for t in runs])
    found, _, _ = mpt_run("tiny-llama", tmp_path / "mpt", Distillation(teachers))
    assert found == [[], []]
