"""Study planning: the cells of each stage and their deterministic keys (the resume ledger's)."""

import dataclasses

import pytest

from spot_core.stages.catalogue import plan_stages, stage_named
from spot_core.stages.retrieval import plan_retrieval
from spot_core.study import StudyConfig, cell_tags, data_identity, run_spec
from spot_core.tags import Stage
from spot_core.tasks import UnknownNameError
from spot_core.trainer import TrainerConfig
from spot_core.tuning import RunSpec

SPOT = ["source", "target", "transfer"]  # SPoT's grid


def study(**kw) -> StudyConfig:
    return StudyConfig(
        **{
            "name": "t",
            "model": "tiny-llama",
            "sources": ["mnli", "sst2"],
            "targets": ["rte", "wsc", "cb"],
            "seeds": [0, 1],
            "prompt": {"length": 4},
            **kw,
        }
    )


def test_the_plan_has_every_source_target_and_transfer_cell():
    cells = plan_stages(study(), SPOT)
    by_stage = {s: [c for c in cells if c.stage is s] for s in Stage}
    assert len(by_stage[Stage.SOURCE]) == 2 and len(by_stage[Stage.TARGET]) == 3 * 2
    assert len(by_stage[Stage.TRANSFER]) == 2 * 3 * 2
    assert len({c.key for c in cells}) == len(cells)
    assert [c.label for c in by_stage[Stage.TRANSFER][:2]] == [
        "transfer:mnli_v1->rte_v1:s0",
        "transfer:mnli_v1->rte_v1:s1",
    ]
    # Class-label init where the target has label words; WSC generates its answers, so sampled vocab.
    assert {c.task: c.init for c in by_stage[Stage.TARGET]} == {
        "rte_v1": "class_labels",
        "wsc_v1": "sampled_vocab",
        "cb_v1": "class_labels",
    }


def test_keys_are_stable_and_change_only_with_what_determines_a_result():
    first, again = plan_stages(study(), SPOT), plan_stages(study(name="renamed", data_dir="/elsewhere"), SPOT)
    assert [c.key for c in first] == [c.key for c in again]  # names and paths are not part of a result
    more = {c.key for c in plan_stages(study(seeds=[0, 1, 2]), SPOT)}
    assert {c.key for c in first} < more and len(more) == 2 + 3 * 3 + 2 * 3 * 3
    faster = plan_stages(study(target_trainer=TrainerConfig(lr=0.1)), SPOT)
    changed = [a.stage for a, b in zip(first, faster, strict=True) if a.key != b.key]
    assert Stage.SOURCE not in changed and changed.count(Stage.TARGET) == 6
    longer_sources = plan_stages(study(source_trainer=TrainerConfig(steps=7)), SPOT)
    transfers = [(a.key, b.key) for a, b in zip(first, longer_sources, strict=True) if a.stage is Stage.TRANSFER]
    assert all(a != b for a, b in transfers)  # a transfer's key follows its source cell's


def test_a_cell_on_a_fallback_configuration_has_its_own_key_and_the_others_keep_theirs(tmp_path):
    """A mirror without WinoGrande XL serves it from L (another result, so another key); other keys stay."""
    for config in ("winogrande_l", "winogrande_xl"):
        for split in ("train", "validation"):
            path = tmp_path / config / "allenai__winogrande" / config / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text('{"sentence": "Al met _.", "option1": "Al", "option2": "Bo", "answer": "1"}\n')
    design = {"sources": ["winogrande", "sst2"], "targets": ["rte"], "seeds": [0]}
    on_l = study(**design, data_dir=str(tmp_path / "winogrande_l"))
    keys = {d: {c.label: c.key for c in plan_stages(study(**design, data_dir=d), SPOT)} for d in (None, "/elsewhere")}
    keys["l"] = {c.label: c.key for c in plan_stages(on_l, SPOT)}
    keys["xl"] = {c.label: c.key for c in plan_stages(study(**design, data_dir=str(tmp_path / "winogrande_xl")), SPOT)}
    assert keys[None] == keys["/elsewhere"] == keys["xl"]  # the hub and a mirror with XL: its own configuration
    changed = sorted(label for label, key in keys["l"].items() if key != keys["xl"][label])
    assert changed == ["source:winogrande_v1:s0", "transfer:winogrande_v1->rte_v1:s0"]  # a transfer follows its source
    assert data_identity(on_l, "winogrande_v1") == {"data_configs": {"winogrande_v1": "winogrande_l"}}
    assert data_identity(on_l, "sst2_v1+winogrande_v1") == {"data_configs": {"winogrande_v1": "winogrande_l"}}
    assert data_identity(on_l, "sst2_v1") == {} == data_identity(study(**design), "winogrande_v1")


def test_a_transfer_reads_its_source_cells_best_prompt(tmp_path):
    cfg = study()
    cell = next(c for c in plan_stages(cfg, SPOT) if c.stage is Stage.TRANSFER)
    spec = run_spec(cfg, cell, tmp_path)
    assert spec.prompt.init == "file" and spec.trainer.seed == cell.seed
    assert spec.prompt.files == [str(tmp_path / "source" / f"mnli_v1-s0-{cell.source.key}" / "best_prompt.safetensors")]
    assert cell.out_dir(tmp_path).parent == tmp_path / "transfer"
    assert cell_tags(cell, cfg) | {"cell_key": ""} == {
        "study": "t",
        "stage": "transfer",
        "cell_key": "",
        "task": "rte_v1",
        "source": "mnli_v1",
        "target": "rte_v1",
        "seed": "0",
        "k": "0",
        "source_key": cell.source.key,
        "model": "tiny-llama",
        "retrieval": "",
    }


def test_bad_designs_fail_with_the_field_and_the_fix():
    with pytest.raises(UnknownNameError, match="Did you mean: boolq_v1"):
        study(targets=["boolqq"])
    with pytest.raises(ValueError, match=r"study.seeds must be a non-empty list without repeats, got \[1, 1\]"):
        study(seeds=[1, 1])
    with pytest.raises(ValueError, match="study.prompt.source_init must be one of: random_uniform, sampled_vocab"):
        study(prompt={"source_init": "zeros"})
    with pytest.raises(ValueError, match=r"study.prompt.target_init must be one of: .* \(the study chains prompts"):
        study(prompt={"target_init": "file"})
    with pytest.raises(ValueError, match="study.retrieval_similarity must be one of: avg_tokens, per_token"):
        study(retrieval_similarity="cosine")
    assert dataclasses.replace(study(), sources=["glue"]).sources == ["glue_v1"]  # mixtures are sources too


def test_retrieval_cells_blend_or_mix_the_top_k_source_runs(tmp_path):
    cfg = study(sources=["mnli", "sst2", "glue"], seeds=[0], retrieval_ks=[2, 4])
    sources = {c.task: c for c in plan_stages(cfg, SPOT) if c.stage is Stage.SOURCE}
    ranked = [(sources["sst2_v1"], 0.6), (sources["glue_v1"], 0.2), (sources["mnli_v1"], 0.1)]
    cells = plan_retrieval(cfg, {"rte_v1": ranked})
    assert [c.label for c in cells] == [  # k=4 > 3 candidates: skipped; mixture prompts first
        "retrieval_mixture:sst2_v1+cola_v1+mrpc_v1+qqp_v1+stsb_v1+mnli_v1+qnli_v1+rte_v1:s0",
        "retrieval:wavg-top2->rte_v1:s0",
        "retrieval:mix-top2->rte_v1:s0",
    ]
    mix, wavg, from_mix = cells
    assert [(c.retrieval, c.k) for c in cells] == [("mixture", 2), ("weighted_average", 2), ("mixture", 2)]
    assert cell_tags(wavg, cfg)["retrieval"] == "weighted_average" and cell_tags(wavg, cfg)["k"] == "2"
    assert [w for _, w in wavg.blend] == pytest.approx([0.75, 0.25])  # sim / sum of sims
    spec = run_spec(cfg, wavg, tmp_path)
    assert spec.prompt.init == "weighted_average" and spec.prompt.weights == pytest.approx([0.75, 0.25])
    assert spec.prompt.files[0].endswith(f"sst2_v1-s0-{sources['sst2_v1'].key}/best_prompt.safetensors")
    assert run_spec(cfg, from_mix, tmp_path).prompt.files == [str(mix.out_dir(tmp_path) / "final_prompt.safetensors")]
    assert run_spec(cfg, mix, tmp_path).trainer == dataclasses.replace(cfg.source_trainer, seed=0)
    # Another ranking is another cell; the same ranking again is the same cell.
    assert plan_retrieval(cfg, {"rte_v1": ranked})[1].key == wavg.key
    assert plan_retrieval(cfg, {"rte_v1": [ranked[0], (ranked[1][0], 0.3)]})[1].key != wavg.key


def test_mpt_plans_one_shared_prompt_and_a_target_run_from_it_per_target_and_seed(tmp_path):
    cfg = study()
    shared, *targets = plan_stages(cfg, ["mpt"])
    assert shared.label == "mpt_source:mnli_v1+sst2_v1:s0" and len(targets) == 3 * 2
    assert {c.source.key for c in targets} == {shared.key} and targets[0].label == "mpt:mpt->rte_v1:s0"
    spec = RunSpec(**stage_named("mpt").spec(cfg, targets[0], tmp_path)["job"])  # what the cell's worker runs
    assert (spec.prompt.init, spec.prompt.rank, spec.prompt.train_shared) == ("file", 1, True)
    assert spec.prompt.files == [str(shared.out_dir(tmp_path) / "best_prompt.safetensors")]  # P*
    frozen = plan_stages(study(mpt={"train_shared": False}), ["mpt"])
    assert frozen[0].key == shared.key and all(a.key != b.key for a, b in zip(targets, frozen[1:], strict=True))
    assert plan_stages(study(mpt={"rank": 2}), ["mpt"])[0].key != shared.key
    with pytest.raises(ValueError, match="stage mpt learns a prompt shared by the source tasks"):
        plan_stages(study(sources=["sst2"]), ["mpt"])
    with pytest.raises(ValueError, match="study.mpt.rank must be"):
        study(mpt={"rank": 0})


def test_attempt_mixes_every_finished_source_or_the_top_k_retrieval_ranks(tmp_path, monkeypatch):
    from spot_core.stages import attempt, retrieval

    cfg = study()
    sources = plan_stages(cfg, ["source"])
    cells, why = attempt.plan_later(cfg, tmp_path, set())
    assert cells == [] and why == dict.fromkeys(["attempt:rte_v1", "attempt:wsc_v1", "attempt:cb_v1"],
                                               "no finished source runs to mix")  # fmt: skip
    cells, why = attempt.plan_later(cfg, tmp_path, {c.key for c in sources})
    assert why == {} and len(cells) == 3 * 2 and all(c.parts == tuple(sources) for c in cells)
    assert cells[0].label == "attempt:attempt-all->rte_v1:s0" and cells[0].init == "sampled_vocab"
    assert cell_tags(cells[0], cfg)["source"] == "attempt-all"
    spec = attempt.spec(cfg, cells[0], tmp_path)
    assert spec["names"] == ["mnli_v1", "sst2_v1"] and spec["sources"][1].endswith("best_prompt.safetensors")
    assert [c.key for c in attempt.designed(cfg)] == [c.key for c in cells]  # the plan's count, from the design
    top = study(attempt={"top_k": 1})
    ranked = {t: [(sources[1], 0.9), (sources[0], 0.1)] for t in top.targets}
    monkeypatch.setattr(retrieval, "rankings", lambda study, root, done: ranked)
    cells, _ = attempt.plan_later(top, tmp_path, {c.key for c in sources})
    assert all(c.parts == (sources[1],) and c.k == 1 for c in cells) and cells[0].origin == "attempt-top1"
    with pytest.raises(ValueError, match="study.attempt.top_k must be"):
        study(attempt={"top_k": 0})
    with pytest.raises(ValueError, match="study.attempt.temperature must be"):
        study(attempt={"temperature": -1})
