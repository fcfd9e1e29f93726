"""Safety net (issue 13): the study presets compose and plan the cells they promise, and the smoke study's cell keys
and labels stay what they were (a golden list: keys are the MLflow ledger's, a refactor must not change them).

Regenerate the golden list only when a change of keys is intended (every finished study then trains again):
    SPOT_WRITE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_safety_plan.py
"""

import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import cell_runs, compose_study, overrides

# The planning entry points (they may move in the refactor: fix the imports here, not the expectations).
from pipelines.study import build_study, run
from spot_core.stages.catalogue import parse_stages, plan_stages, stage_named
from spot_core.stages.retrieval import plan_retrieval

GOLDEN = Path(__file__).parent / "data" / "smoke_cell_keys.json"
PLANNABLE = ["source", "target", "transfer", "zero_shot", "neurons", "cross_model"]  # retrieval: from runs


def planned(*overrides: str, stages=PLANNABLE) -> list:
    cfg = compose_study(*overrides)
    return plan_stages(build_study(cfg), parse_stages(stages))


def by_stage(cells) -> Counter:
    return Counter(c.stage.value for c in cells)


def test_the_generic_preset_plans_table_1s_design():
    cfg = compose_study("study=generic")
    assert cfg.model.name == "google/t5-base-lm-adapt" and "model_tuning" in cfg.stages
    cells = planned("study=generic", stages=[s for s in cfg.stages if s != "report"])
    study = build_study(cfg)
    S, T, seeds = len(study.sources), len(study.targets), len(study.seeds)
    assert (S, T, seeds) == (14, 15, 3)  # Table 1's sources; GLUE's 8 and SuperGLUE's 8 share RTE
    assert by_stage(cells) == {
        "source": S, "target": T * seeds, "transfer": S * T * seeds,
        "model_tuning": T * seeds, "mt_source": S, "mt_target": S * T * seeds,
    }  # fmt: skip
    assert {c.trainer.steps for c in cells} == {2**18} and len({c.key for c in cells}) == len(cells)
    tuned = [c for c in cells if c.stage.value in ("model_tuning", "mt_source", "mt_target")]
    assert {c.trainer.lr for c in tuned} == {1e-3}
    # SPoT's model-tuning rows fine-tune the original T5 1.1; its prompts train on the LM-adapted one
    assert {c.model for c in tuned} == {"google/t5-v1_1-base"} and {c.model for c in cells} - {
        c.model for c in tuned
    } == {""}
    assert json.loads(tuned[0].identity)["model"] == "google/t5-v1_1-base"  # in the key
    study = build_study(compose_study("study=generic", "study.model_tuning_model=null"))
    assert {c.model for c in plan_stages(study, parse_stages(["model_tuning"]))} == {""}


def test_demo_preset_composes_and_plans_its_cells():
    cfg = compose_study("study=demo")
    assert cfg.model.name == "smollm2-135m" and cfg.study.name == "demo"
    assert list(cfg.stages) == ["source", "target", "transfer", "retrieval", "zero_shot", "neurons", "report"]
    cells = planned("study=demo", stages=[s for s in cfg.stages if s != "report"])
    # sources [sst2, qnli] x source seeds [0, 1]; targets [cr, rte, mrpc] x seeds [0]
    assert by_stage(cells) == {"source": 4, "target": 3, "transfer": 4 * 3, "zero_shot": 4 * 3, "neurons": 4 + 3}
    assert len({c.key for c in cells}) == len(cells) == 38
    # + the retrieval cells planned from the runs: weighted average only, k=2, per target and seed: the README's 41
    study = build_study(cfg)
    assert list(study.retrieval) == ["weighted_average"] and list(study.retrieval_ks) == [2]
    assert len(cells) + len(study.targets) * len(study.retrieval_ks) * len(study.seeds) == 41
    assert sorted(c.label for c in cells if c.stage.value == "source") == [
        "source:qnli_v1:s0",
        "source:qnli_v1:s1",
        "source:sst2_v1:s0",
        "source:sst2_v1:s1",
    ]
    assert {c.label for c in cells if c.stage.value == "target"} == {
        "target:cr_v1:s0",
        "target:rte_v1:s0",
        "target:mrpc_v1:s0",
    }
    assert study.task_embedding == "displacement" and study.prompt.length == 100
    assert (study.source_trainer.steps, study.target_trainer.steps, study.source_trainer.lr) == (100, 80, 0.01)
    assert study.target_trainer.best_includes_init is True
    with pytest.raises(ValueError, match="stage cross_model needs study.cross_model"):
        planned("study=demo", stages=["cross_model"])


def test_spot_preset_composes_the_papers_design_526_spot_cells():
    cfg = compose_study("study=spot")
    assert (cfg.model.name, cfg.ray.address, cfg.ray.gpus_per_trial, cfg.ray.max_failures) == (
        "google/t5-base-lm-adapt",
        "auto",
        1,
        3,
    )
    study = build_study(cfg)
    assert (len(study.sources), len(study.targets), list(study.seeds), list(study.source_seeds)) == (
        16,
        10,
        [0, 1, 2],
        [0],
    )
    spot = planned("study=spot", stages=["source", "target", "transfer"])
    assert by_stage(spot) == {"source": 16, "target": 10 * 3, "transfer": 16 * 10 * 3}
    assert len({c.key for c in spot}) == len(spot) == 526  # README: "526 SPoT cells"
    su = planned("study=spot", stages=["zero_shot", "neurons", "cross_model"])
    # cross_model: T5 Large's own prompt per source task, one projector, a zero-shot and a transfer cell per source
    assert by_stage(su) == {
        "zero_shot": 16 * 10,
        "neurons": 16 + 30,
        "cross_source": 16,
        "projector": 1,
        "cross_zero_shot": 16,
        "cross_transfer": 16,
    }
    projector = next(c for c in su if c.stage.value == "projector")
    assert projector.task == "sst2_v1+mnli_v1" and projector.model == "google/t5-large-lm-adapt"
    # retrieval (planned from the runs): per target and k in [3, 6, 9, 12], a mixture prompt and, per seed, a
    # weighted-average and a mixture-init run
    assert list(study.retrieval_ks) == [3, 6, 9, 12] and list(study.retrieval) == ["weighted_average", "mixture"]
    assert (study.source_trainer.steps, study.source_trainer.lr, study.source_trainer.optimizer) == (
        262144,
        0.3,
        "adafactor",
    )


def rows(cells) -> list[dict]:
    return sorted(({"stage": c.stage.value, "label": c.label, "key": c.key} for c in cells), key=lambda r: r["label"])


def retrieval(*overrides: str) -> list:
    """The retrieval cells of the smoke study for a made-up ranking (the same for both targets: mnli first)."""
    study = build_study(compose_study("study=smoke", *overrides))
    sources = plan_stages(study, ["source"])
    ranked = sorted(sources, key=lambda c: c.task != "mnli_v1")
    return plan_retrieval(study, {t: list(zip(ranked, [0.75, 0.25], strict=True)) for t in study.targets})


def smoke_golden() -> dict[str, list[dict]]:
    return {
        "cells": rows(planned("study=smoke")),
        "retrieval": rows(retrieval()),
        "retrieval_displacement_per_token": rows(
            retrieval("++study.task_embedding=displacement", "++study.retrieval_similarity=per_token")
        ),
    }


def test_smoke_cell_keys_and_labels_match_the_golden_list():
    now = smoke_golden()
    if os.environ.get("SPOT_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(now, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for part in golden:
        assert [r["label"] for r in now[part]] == [r["label"] for r in golden[part]], part
        # a changed key: every finished study would train that cell (and the cells after it) again
        assert now[part] == golden[part], part
    cells = now["cells"]
    assert len(cells) == len({r["key"] for r in cells}) == 2 + 4 + 8 + 4 + 6 + 7
    # per target: a mixture prompt (sst2/mnli + target) and, per seed, a weighted-average and a mixture-init run
    assert Counter(r["stage"] for r in now["retrieval"]) == {"retrieval_mixture": 2, "retrieval": 2 * 2 * 2}
    assert "retrieval:wavg-top2->rte_v1:s1" in [r["label"] for r in now["retrieval"]]
    # the same labels, other keys: the task embedding and similarity are part of a retrieval cell's result
    other = now["retrieval_displacement_per_token"]
    assert [r["label"] for r in other] == [r["label"] for r in now["retrieval"]]
    assert not {r["key"] for r in other} & {r["key"] for r in now["retrieval"]}


def test_smoke_plan_order_is_upstream_first():
    cells = planned("study=smoke")
    seen = set()
    for cell in cells:
        assert all(c.key in seen for c in cell.inputs), cell.label
        seen.add(cell.key)


@pytest.mark.parametrize("preset", ["smoke", "demo", "spot"])
def test_every_preset_states_its_retrieval_design_so_it_can_be_overridden_plainly(preset):
    settings = ["study.task_embedding=displacement", "study.retrieval_similarity=per_token"]
    study = build_study(compose_study(f"study={preset}", *settings))  # no "+"/"++" needed: the preset has the keys
    assert (study.task_embedding, study.retrieval_similarity) == ("displacement", "per_token")


@pytest.mark.parametrize("preset", ["smoke", "methods", "spot"])
def test_the_presets_that_run_attempt_and_mpt_state_their_settings_at_the_authors_defaults(preset):
    from spot_core.methods.attempt import AttemptConfig
    from spot_core.methods.mpt import MPTConfig

    stated = build_study(compose_study(f"study={preset}")).attempt, build_study(compose_study(f"study={preset}")).mpt
    for config, default, names in (
        (stated[0], AttemptConfig(), ("top_k", "temperature", "bias", "train_norm", "target_init")),
        (stated[1], MPTConfig(), ("rank", "train_shared", "distill", "distill_weight", "distill_temperature",
                                  "target_init")),
    ):  # fmt: skip
        assert {n: getattr(config, n) for n in names} == {n: getattr(default, n) for n in names}
    earlier = ["study.attempt.bias=true", "study.attempt.target_init=zeros", "study.mpt.distill=false"]
    study = build_study(compose_study(f"study={preset}", *earlier))  # no "+" needed: the preset has the keys
    assert (study.attempt.bias, study.attempt.target_init, study.mpt.distill) == (True, "zeros", False)


PRESET_KEYS = Path(__file__).parent / "data" / "preset_cell_keys.json"  # written by the code of commit 56975e2
# Keys changed on purpose since: ATTEMPT's and MPT's defaults became their authors' (issue 27: temperature H * e,
# no biases, a sampled-vocabulary target; MPT distilled from the source prompts, target factors from theirs). Their
# finished cells are another method's: they train again, under new keys and the same labels.
REKEYED = ("attempt", "mpt_source", "mpt")


def kind(label: str) -> str:
    return label.split(":")[0]


@pytest.mark.parametrize("preset", ["smoke", "demo", "methods", "spot"])
def test_every_preset_plans_the_labels_and_keys_of_the_version_before_stages_held_their_own_knowledge(preset, data_dir):
    """Every cell each preset plans, and every cell its later stages count from the design (retrieval, ATTEMPT),
    as the code before the stage catalogue took over the plan's, the cost's and the cells' stage knowledge planned
    them (issue 26): a study started then resumes with nothing re-run but the cells of REKEYED's stages."""
    cfg = compose_study(f"study={preset}", f"data_dir={data_dir}")
    study, stages = build_study(cfg), parse_stages([s for s in cfg.stages if s != "report"])
    cells = plan_stages(study, stages) + [c for s in stages if s.designed for c in s.designed(study)]
    golden = json.loads(PRESET_KEYS.read_text())[preset]
    assert [c.label for c in cells] == [label for label, _ in golden]
    kept = {c.label: c.key for c in cells if kind(c.label) not in REKEYED}
    assert kept == {label: key for label, key in golden if kind(label) not in REKEYED}
    rekeyed = [(c.key, key) for c, (_, key) in zip(cells, golden, strict=True) if kind(c.label) in REKEYED]
    assert all(now != before for now, before in rekeyed)


STORE_BEFORE = Path(__file__).parent / "data" / "smoke_store_56975e2.tar.gz"
ALL_STAGES = "stages=[source,target,transfer,retrieval,zero_shot,neurons,cross_model,mpt,attempt]"
KEPT_STAGES = "stages=[source,target,transfer,retrieval,zero_shot,neurons,cross_model]"


def test_a_smoke_study_finished_by_the_previous_version_resumes_with_nothing_run_again(tmp_path, data_dir):
    """The MLflow store of a whole smoke study, and its source and target runs' task embeddings (what retrieval and
    ATTEMPT plan from), as the code of commit 56975e2 wrote them (before the stage catalogue took over the cells'
    stage knowledge, issue 26): every cell, those planned from finished runs included, is found finished by key;
    only the cells of ATTEMPT and MPT, whose methods changed (REKEYED), are left to train."""
    with tarfile.open(STORE_BEFORE) as tar:
        tar.extractall(tmp_path, filter="data")
    summary = run(compose_study(*overrides(tmp_path, data_dir, KEPT_STAGES, "ray.in_process=true")))
    assert summary["failed"] == {}
    assert summary["trained_now"] == 0 and summary["finished"] == summary["cells"] == 50 - 5 - 4
    cfg = compose_study(*overrides(tmp_path, data_dir, ALL_STAGES, "plan=true"))
    planned = run(cfg)["plan"]
    todo = Counter(str(c.stage) for row in planned.rows for c in row.todo)
    assert todo == {"mpt_source": 1, "mpt": 4}  # the old store's MPT runs: another method
    # ATTEMPT's cells are planned from the finished source runs when the study runs (the plan counts its finished
    # runs by kind): none of the four it plans now is among the store's finished runs
    done = {r.data.tags["cell_key"] for r in cell_runs(tmp_path) if r.info.status == "FINISHED"}
    attempt, why = stage_named("attempt").plan_later(build_study(cfg), tmp_path / "out", done)
    assert why == {} and len(attempt) == 4 and not {c.key for c in attempt} & done
