"""Cross-model projector: shapes, distance minimising, task tuning through a frozen model of another width."""

import json
from dataclasses import replace

import pytest
import torch
from conftest import prompted

from spot_core.backbones import load_backbone
from spot_core.cross_model import ProjectorSpec, fit_projector, project_file
from spot_core.encoding import batch_indices, collate, encode_examples
from spot_core.evaluation import TaskData
from spot_core.projector import (
    ProjectedPrompt,
    ProjectorConfig,
    PromptProjector,
    fit_distance,
    fit_task,
    project,
)
from spot_core.prompt_files import load_prompt, save_prompt
from spot_core.prompted import PromptedLM
from spot_core.prompts import PromptShapeError, SoftPrompt, random_uniform
from spot_core.tasks import get_task
from spot_core.tuning import PromptConfig, RunSpec, codec_for, evaluate_prompt, load_data

WORDS = ["good", "great", "fine", "bad", "awful", "dull", "lovely", "poor"]
TRAIN = [
    {"inputs": f"sst2 sentence: {w} {v}", "targets": "positive" if i % 2 else "negative"}
    for i, (w, v) in enumerate(zip(WORDS * 3, reversed(WORDS * 3), strict=True))
]


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_projector_maps_between_hidden_sizes_single_and_batched():
    proj = PromptProjector(length=4, source_hidden=32, target_hidden=48, hidden=16)
    assert proj(rand(4, 32)).shape == (4, 48)
    assert proj(rand(3, 4, 32)).shape == (3, 4, 48)
    # a batch row is the same as projecting it alone
    batch = rand(3, 4, 32)
    torch.testing.assert_close(proj(batch)[1], proj(batch[1]))
    assert sum(p.numel() for p in proj.parameters()) == 4 * 32 * 16 + 16 + 16 * 4 * 48 + 4 * 48
    with pytest.raises(PromptShapeError, match=r"\[4, 32\].*got \(5, 32\)"):
        proj(rand(5, 32))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("method", "regress", "projector.method must be one of: distance, task_tuning"),
        ("activation", "swish", "projector.activation must be one of"),
        ("hidden", 0, "projector.hidden must be an integer >= 1, got 0"),
        ("lr", 0.0, "projector.lr must be a finite number > 0, got 0.0"),
    ],
)
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        ProjectorConfig(**{field: value})


def test_same_seed_same_projector():
    cfg = ProjectorConfig(hidden=8, seed=3)
    a, b = (PromptProjector.from_config(cfg, 2, 4, 6) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_distance_minimising_fits_the_target_prompts():
    pairs = [(rand(4, 32, seed=i), rand(4, 48, seed=10 + i)) for i in range(2)]
    proj = PromptProjector.from_config(ProjectorConfig(hidden=32), 4, 32, 48)
    losses = fit_distance(proj, pairs, ProjectorConfig(hidden=32, steps=300, lr=3e-3))
    assert losses[-1] < 0.01 * losses[0]
    for a, b in pairs:
        assert torch.nn.functional.mse_loss(project(proj, a), b) < 0.01


def _data(codec):
    return TaskData(get_task("sst2_v1"), codec, encode_examples(codec, TRAIN), encode_examples(codec, TRAIN[:8]))


def _val_loss(model, data):
    with torch.no_grad():
        return model.loss({k: v for k, v in collate(data.validation, data.codec).items()}).item()


def test_task_tuning_trains_only_the_projector_and_beats_a_random_prompt():
    a_model, _ = prompted("tiny-llama", length=4, seed=1)  # hidden 32
    b_model, codec = prompted("tiny-llama-wide", length=4, seed=2)  # hidden 48, another random model
    data = _data(codec)
    source = a_model.prompt.weight.detach()
    cfg = ProjectorConfig(hidden=32, steps=40, lr=3e-3, batch_size=8)
    proj = PromptProjector.from_config(cfg, 4, 32, 48)
    through_b = PromptedLM(b_model.backbone, ProjectedPrompt(proj, source))
    before = _val_loss(through_b, data)
    frozen = {k: v.clone() for k, v in b_model.backbone.model.state_dict().items()}
    losses = fit_task(proj, [(through_b, data)], cfg)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    after = _val_loss(through_b, data)
    assert after < before
    assert all(torch.equal(v, b_model.backbone.model.state_dict()[k]) for k, v in frozen.items())
    # the projected prompt does better on the training task than random prompts of B's shape
    randoms = [
        _val_loss(
            PromptedLM(b_model.backbone, SoftPrompt(random_uniform(4, 48, 0.5, torch.Generator().manual_seed(s)))), data
        )
        for s in range(3)
    ]
    assert after < min(randoms)


def test_task_tuning_refuses_models_without_the_projected_prompt():
    b_model, codec = prompted("tiny-llama-wide", length=4)
    proj = PromptProjector(4, 32, 48, hidden=8)
    with pytest.raises(ValueError, match="ProjectedPrompt of this projector"):
        fit_task(proj, [(b_model, _data(codec))], ProjectorConfig(steps=1))


# float32 rounding between the run and the plain loop below (the prompt once against the prompt on every example;
# measured: under 1e-7 relatively), carried through 4 AdamW steps
RTOL = 1000 * torch.finfo(torch.float32).eps


def reference_losses(spec: ProjectorSpec) -> list[float]:
    """A projector run's losses by a plain loop on its first training task: the projector of the same seed, AdamW
    at the run's settings, each step's loss from one forward pass: the mean squared distance to B's prompt
    (distance), or B's mean target-token loss on the task's next batch with the projected prompt prepended to every
    example (task tuning; B's dropout seeded as the run seeds it)."""
    cfg = spec.projector
    a = load_prompt(spec.train_prompts[0])[0]
    b = load_backbone(spec.target.model)
    proj = PromptProjector.from_config(cfg, *a.shape, b.hidden_size)
    optimizer = torch.optim.AdamW(proj.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.method == "distance":
        target = load_prompt(spec.target_prompts[0])[0]

        def loss(step: int) -> torch.Tensor:
            return ((proj(a) - target) ** 2).mean()
    else:
        data = load_data(replace(spec.target, task=spec.train_tasks[0]), codec_for(spec.target, b))
        model = PromptedLM(b, ProjectedPrompt(proj, a), prompt_once=False).train()
        torch.manual_seed(cfg.seed)

        def loss(step: int) -> torch.Tensor:
            idx = batch_indices(step, cfg.batch_size, len(data.train), cfg.seed)
            return model.loss(collate([data.train[i] for i in idx], data.codec))

    losses = []
    for step in range(cfg.steps):
        value = loss(step)
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(value.item())
    return losses


def zero_shot(spec: ProjectorSpec, prompt_file, out_dir) -> float:
    """The score of a prompt file for B on the first training task's validation split, as `make evaluate` gives it."""
    run = replace(
        spec.target, task=spec.train_tasks[0], prompt=PromptConfig(length=4, init="file", files=[str(prompt_file)])
    )
    return evaluate_prompt(run, out_dir)["best/val_score"]


@pytest.mark.parametrize("method", ["task_tuning", "distance"])
def test_projector_run_and_project_file_write_prompts_for_the_other_model(data_dir, tmp_path, method):
    for name, h, seed in (("a_sst2", 32, 0), ("a_rte", 32, 1), ("b_sst2", 48, 2)):
        save_prompt(tmp_path / f"{name}.safetensors", rand(4, h, seed=seed) * 0.1)
    target = RunSpec(
        model="tiny-llama-wide",
        task="sst2_v1",
        data_dir=str(data_dir),
        max_train_examples=16,
        max_eval_examples=8,
        max_input_tokens=48,
    )
    spec = ProjectorSpec(
        source_model="tiny-llama",
        target=target,
        train_tasks=["sst2_v1"],
        train_prompts=[str(tmp_path / "a_sst2.safetensors")],
        target_prompts=[str(tmp_path / "b_sst2.safetensors")],
        projector={"method": method, "hidden": 16, "steps": 4, "batch_size": 4},
    )
    result = fit_projector(spec, tmp_path / "run")
    project_file(tmp_path / "run/projector.safetensors", tmp_path / "a_rte.safetensors", tmp_path / "rte.safetensors")
    project_file(tmp_path / "run/projector.safetensors", tmp_path / "a_sst2.safetensors", tmp_path / "sst2.safetensors")
    projected, meta = load_prompt(tmp_path / "rte.safetensors")
    assert projected.shape == (4, 48) and meta["method"] == method
    save_prompt(tmp_path / "odd.safetensors", rand(6, 32))
    with pytest.raises(PromptShapeError, match=r"odd.safetensors has shape \(6, 32\).*\[4, 32\]"):
        project_file(tmp_path / "run/projector.safetensors", tmp_path / "odd.safetensors", tmp_path / "out.safetensors")
    # derived on this machine, not pinned: the losses by a plain loop, the score by scoring the projected prompt file
    losses = reference_losses(spec)
    score = zero_shot(spec, tmp_path / "sst2.safetensors", tmp_path / "shot")
    assert result == pytest.approx(
        {"best/val_score": score, "best/step": 4, "final/loss": losses[-1], "train_task/sst2_v1/val_score": score},
        rel=RTOL,
        abs=1e-6,
    )
    history = json.loads((tmp_path / "run/metrics.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4] and history[-1]["train/loss"] == result["final/loss"]
    assert [h["train/loss"] for h in history] == pytest.approx(losses, rel=RTOL)
    assert fit_projector(spec, tmp_path / "run") == result  # finished: not trained again


def test_projector_run_checks_prompt_shapes_before_training(data_dir, tmp_path):
    save_prompt(tmp_path / "a.safetensors", rand(4, 32))
    save_prompt(tmp_path / "odd.safetensors", rand(6, 32))
    target = RunSpec(model="tiny-llama-wide", task="sst2_v1", data_dir=str(data_dir))
    spec = ProjectorSpec(
        "tiny-llama",
        target,
        ["sst2_v1", "rte_v1"],
        [str(tmp_path / "a.safetensors"), str(tmp_path / "odd.safetensors")],
    )
    with pytest.raises(PromptShapeError, match=r"odd.safetensors has shape \(6, 32\).*\[4, 32\]"):
        fit_projector(spec, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was trained or written
    with pytest.raises(ValueError, match="distance needs the target model's own prompt"):
        ProjectorSpec(
            "tiny-llama", target, ["sst2_v1"], [str(tmp_path / "a.safetensors")], projector={"method": "distance"}
        )
