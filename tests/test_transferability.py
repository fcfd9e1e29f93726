"""Planning Su et al.'s stages: zero-shot, neurons and cross-model cells, their inputs and keys."""

import json

import pytest

from spot_core.stages import cross_model, neurons, zero_shot
from spot_core.stages.catalogue import parse_stages, plan_stages, stage_named
from spot_core.stages.cross_model import projector_spec
from spot_core.study import StudyConfig, cell_tags, run_spec
from spot_core.tags import Stage

plan_zero_shot, plan_neurons, plan_cross_model = zero_shot.plan, neurons.plan, cross_model.plan

SPOT = ["source", "target", "transfer"]  # SPoT's grid

CROSS = {"model": "tiny-llama-wide", "train_tasks": ["sst2"], "projector": {"hidden": 8, "steps": 2}}


def study(**kw) -> StudyConfig:
    base = {
        "name": "t",
        "model": "tiny-llama",
        "sources": ["mnli", "sst2", "qqp"],
        "targets": ["rte", "cb"],
        "seeds": [0, 1],
        "prompt": {"length": 4},
        "cross_model": CROSS,
    }
    return StudyConfig(**{**base, **kw})


def test_zero_shot_and_neurons_cells_point_at_their_runs(tmp_path):
    cfg = study()
    shots = plan_zero_shot(cfg)
    assert len(shots) == 3 * 2 and all(c.source.stage is Stage.SOURCE for c in shots)
    assert all("trainer" not in json.loads(c.identity) for c in shots)  # scored only: the trainer is not in the key
    spec = run_spec(cfg, shots[0], tmp_path)
    assert spec.task == "rte_v1" and spec.prompt.init == "file"
    assert spec.prompt.files == [str(shots[0].source.out_dir(tmp_path) / "best_prompt.safetensors")]
    cells = plan_neurons(cfg)
    assert len(cells) == 3 + 2 * 2 and {c.source.stage for c in cells} == {Stage.SOURCE, Stage.TARGET}
    assert neurons.spec(cfg, cells[0], tmp_path)["prompt_file"].endswith("task_embedding.safetensors")
    assert cell_tags(cells[0], cfg)["source_key"] == cells[0].source.key


def test_cross_model_cells_run_on_the_other_model_after_their_projector(tmp_path):
    cfg = study()
    cells = plan_cross_model(cfg)
    by = {s: [c for c in cells if c.stage is s] for s in Stage}
    assert [c.task for c in by[Stage.CROSS_SOURCE]] == ["sst2_v1", "mnli_v1", "qqp_v1"]  # training task first
    (projector,) = by[Stage.PROJECTOR]
    assert [c.stage for c in projector.inputs] == [Stage.SOURCE] and projector.inputs[0].task == "sst2_v1"
    assert len(by[Stage.CROSS_ZERO_SHOT]) == len(by[Stage.CROSS_TRANSFER]) == 3
    for cell in by[Stage.CROSS_ZERO_SHOT] + by[Stage.CROSS_TRANSFER]:
        assert cell.model == "tiny-llama-wide" and cell.projector is projector
        assert cell.inputs == [cell.source, projector] and cell.source.task == cell.task
        spec = run_spec(cfg, cell, tmp_path)
        assert spec.model == "tiny-llama-wide" and spec.prompt.files == [
            str(cell.out_dir(tmp_path) / "projected_prompt.safetensors")
        ]
    assert "@tiny-llama-wide" in by[Stage.CROSS_TRANSFER][0].label
    assert cell_tags(by[Stage.CROSS_TRANSFER][0], cfg)["model"] == "tiny-llama-wide"
    pspec = projector_spec(cfg, projector, tmp_path)
    assert pspec.target.model == "tiny-llama-wide" and pspec.train_tasks == ["sst2_v1"] and pspec.target_prompts == []


def test_distance_minimising_waits_for_the_other_models_own_prompt(tmp_path):
    cfg = study(cross_model={**CROSS, "projector": {"method": "distance"}})
    projector = next(c for c in plan_cross_model(cfg) if c.stage is Stage.PROJECTOR)
    assert [c.stage for c in projector.inputs] == [Stage.SOURCE, Stage.CROSS_SOURCE]
    assert len(projector_spec(cfg, projector, tmp_path).target_prompts) == 1


def test_keys_change_with_what_changes_the_result_only():
    a, b = plan_cross_model(study()), plan_cross_model(study())
    assert [c.key for c in a] == [c.key for c in b]
    other = plan_cross_model(study(cross_model={**CROSS, "projector": {"hidden": 16, "steps": 2}}))
    changed = {c.stage for c, d in zip(a, other, strict=True) if c.key != d.key}
    assert changed == {Stage.PROJECTOR, Stage.CROSS_ZERO_SHOT, Stage.CROSS_TRANSFER}  # B's own prompts stay
    # the SPoT grid's keys do not depend on the cross-model stage at all
    assert [c.key for c in plan_stages(study(), SPOT)] == [c.key for c in plan_stages(study(cross_model=None), SPOT)]


@pytest.mark.parametrize(
    "cross, message",
    [
        ({**CROSS, "train_tasks": ["rte"]}, r"train_tasks \['rte_v1'\] are not sources"),
        ({**CROSS, "tasks": ["cola"]}, r"tasks \['cola_v1'\] are not sources"),
        ({**CROSS, "model": "tiny-llama"}, "must be another model"),
        ({**CROSS, "train_tasks": []}, "at least one source task"),
        ({**CROSS, "projector": {"method": "regress"}}, "projector.method must be one of"),
    ],
)
def test_cross_model_config_errors_say_what_to_fix(cross, message):
    with pytest.raises(ValueError, match=message):
        study(cross_model=cross)


def test_a_stage_that_needs_more_of_the_design_says_what():
    with pytest.raises(ValueError, match=r"stage cross_model needs study.cross_model"):
        plan_stages(study(cross_model=None), [stage_named("cross_model")])
    with pytest.raises(ValueError, match=r"stages: unknown \['retreival'\]; choose from \['source', .*'report'\]"):
        parse_stages(["source", "retreival"], also=["report"])
