"""plan=true: a study's cells per stage, the finished ones in the ledger, the trials they pack into and the cost of
the rest, printed without training or writing anything (pipelines/plan.py on spot_core/cost.py)."""

import hashlib
from pathlib import Path

import pytest
import torch
from conftest import SMOKE_DESIGN, compose_study, copy_study, overrides, run_main
from omegaconf import OmegaConf

from pipelines import plan
from pipelines.errors import EXIT_USER_ERROR
from pipelines.study import build_study, pack_key, run
from pipelines.study import main as study_main
from spot_core import cost
from spot_core.errors import ConfigError
from spot_core.stages.catalogue import parse_stages, plan_stages
from spot_core.tags import Stage

pytestmark = pytest.mark.usefixtures("ray_runtime")  # the session's Ray (conftest.py)

SMOKE = {
    "source": 2, "target": 4, "transfer": 8, "mpt": 5, "cross_model": 7, "zero_shot": 4, "neurons": 6, "retrieval": 10,
    "attempt": 4,
}  # fmt: skip


def local(tmp_path: Path, data_dir: Path, *extra: str) -> list[str]:
    uri = f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"
    return ["study=smoke", f"data_dir={data_dir}", f"out_dir={tmp_path}/out", uri, "ray.num_cpus=2", *extra]


def planned(tmp_path: Path, *overrides: str) -> plan.Plan:
    """The plan of a composed study (no calibration), against a store under tmp_path that does not exist."""
    cfg = compose_study(*overrides)
    study = build_study(cfg)
    stages = parse_stages([n for n in cfg.stages if n != "report"])
    store = (f"sqlite:///{tmp_path}/mlflow.db", cfg.tracking.experiment)
    return plan.make_plan(study, stages, plan_stages(study, stages), store, cfg.ray.cells_per_trial, pack_key)


def table(p: plan.Plan, column: str) -> dict[str, int]:
    return {
        r.stage.name: len(getattr(r, column)) if column in ("cells", "todo") else getattr(r, column) for r in p.rows
    }


def test_cells_per_stage_of_the_smoke_and_spot_studies(tmp_path):
    smoke = planned(tmp_path, "study=smoke")
    assert table(smoke, "cells") == SMOKE and table(smoke, "finished") == dict.fromkeys(SMOKE, 0)
    assert table(smoke, "trials") == SMOKE  # ray=local: one cell per trial
    assert smoke.finished_from == f"no tracking store yet at {tmp_path}/mlflow.db"
    spot = planned(tmp_path, "study=spot")
    # 16 sources, 10 targets x 3 seeds, 480 transfers (the 526 SPoT cells); Su et al.'s: 160 zero-shot, 46 neurons,
    # T5 Large's 16 own prompts + a projector + 16 zero-shot + 16 transfers; retrieval per target and k in
    # [3, 6, 9, 12]: a mixture prompt and, per seed, a weighted-average and a mixture-init run; MPT's shared prompt
    # and a run per target and seed; ATTEMPT's run per target and seed (counted from the design)
    assert table(spot, "cells") == {
        "source": 16, "target": 30, "transfer": 480, "mpt": 1 + 30, "cross_model": 49, "zero_shot": 160,
        "neurons": 46, "retrieval": 10 * 4 * (1 + 3 * 2), "attempt": 30,
    }  # fmt: skip
    # ray=cluster packs 16 cells of one backbone per trial where the stage can (not cross_model, zero_shot, neurons,
    # attempt)
    assert table(spot, "trials") == {
        "source": 1,
        "target": 2,
        "transfer": 30,
        "mpt": 2,
        "cross_model": 49,
        "zero_shot": 160,
        "neurons": 46,
        "retrieval": 18,
        "attempt": 30,
    }
    retrieval = next(r for r in spot.rows if r.stage.name == "retrieval")
    assert retrieval.later and sum(c.stage is Stage.RETRIEVAL_MIXTURE for c in retrieval.cells) == 40


def test_packing_counts_with_four_cells_per_trial(tmp_path):
    p = planned(tmp_path, "study=smoke", "ray.cells_per_trial=4")
    # source, target, transfer, retrieval and mpt pack (ceil(n / 4)); the others run one cell per trial
    assert table(p, "trials") == {
        "source": 1, "target": 1, "transfer": 2, "mpt": 2, "cross_model": 7, "zero_shot": 4, "neurons": 6,
        "retrieval": 3, "attempt": 4,
    }  # fmt: skip
    assert "packs of up to 4 cells with one backbone" in plan.render(p, build_study(compose_study("study=smoke")))


def test_plan_prints_the_plan_and_the_estimate_and_writes_nothing(tmp_path, data_dir, capsys):
    summary = run(compose_study(*local(tmp_path, data_dir, "plan=true")))
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [], "plan=true wrote files (a store, out_dir)"
    assert "plan of study smoke (tiny-llama)" in out and "no tracking store yet" in out
    assert "estimate of the cells still to run" in out and "device-hours of this machine" in out
    assert "measured here (cpu" in out and "tiny-llama-wide" in out  # the cross-model cells' model too
    assert summary["estimate"] in out and "cells" not in summary and "report" not in summary
    assert [line for line in out.splitlines() if line.startswith("  source ")][0].split()[1:4] == ["2", "0", "2"]


def test_plan_lists_what_this_machine_lacks_instead_of_stopping(tmp_path):
    empty = tmp_path / "mirror"
    empty.mkdir()
    summary = run(compose_study(*local(tmp_path, empty, "plan=true", "stages=[source,target]")))
    lacking = summary["plan"].lacking
    assert len(lacking) == 4 and all("no data for its 'train' split" in line for line in lacking)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror"]


def test_finished_counts_after_a_smoke_study_ran(smoke_study, tmp_path, data_dir):
    # make study prints the plan before it trains: nothing finished yet (the session's smoke study, conftest.py)
    printed = smoke_study.printed
    assert printed.index("plan of study smoke") < printed.index("study smoke: 4 cells, 0 already finished")
    copy_study(smoke_study.tmp, tmp_path)  # seed 0 of SPoT's stages finished; a second seed planned
    db = tmp_path / "mlflow.db"
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    grid = ("study.seeds=[0,1]", "stages=[source,target,transfer]", "plan=true")
    again = run(compose_study(*overrides(tmp_path, data_dir, *SMOKE_DESIGN[1:], *grid)))
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest, "plan=true changed the tracking store"
    p = again["plan"]
    assert table(p, "finished") == {"source": 2, "target": 2, "transfer": 4}
    assert table(p, "todo") == {"source": 0, "target": 2, "transfer": 4}
    assert p.finished_from == f"the ledger in sqlite:///{db}"


def test_the_estimate_scales_with_steps(tmp_path):
    per_token = {m: cost.TokenCost(m, 1e-3, 5e-4, "fixed") for m in ("tiny-llama", "tiny-llama-wide")}

    def seconds(steps: int) -> dict[str, float]:
        trainers = [f"study.{t}_trainer.steps={steps}" for t in ("source", "target")]
        study = build_study(compose_study("study=smoke", *trainers))
        p = planned(tmp_path, "study=smoke", *trainers)
        return {k.kind: k.train for k in plan.cost_by_kind(p, study, per_token)}

    four, eight = seconds(4), seconds(8)
    assert four["source"] > 0 and four["zero_shot"] == 0  # scoring cells train nothing
    assert all(eight[kind] == pytest.approx(2 * four[kind]) for kind in four if kind != "projector")
    # smoke: prompt 4, input 128 and target 16 tokens, batch 4, prompt once: 4 + 4 x 144 tokens a step
    assert four["source"] == pytest.approx(2 * 4 * (4 + 4 * 144) * 1e-3)


def test_on_a_cpu_the_estimate_spreads_the_cells_over_the_trials_that_run_at_once(tmp_path, monkeypatch):
    ray_cfg = lambda **kw: OmegaConf.create({"num_cpus": 4, "cpus_per_trial": 1, "max_concurrent_trials": None} | kw)  # noqa: E731
    assert plan.Trials.of(ray_cfg()) == plan.Trials(threads=1, at_once=4)
    assert plan.Trials.of(ray_cfg(max_concurrent_trials=2)) == plan.Trials(1, 2)
    assert plan.Trials.of(ray_cfg(cpus_per_trial=3)) == plan.Trials(3, 1)
    study = build_study(compose_study("study=smoke"))
    p = planned(tmp_path, "study=smoke")
    per_token = {m: cost.TokenCost(m, 1e-3, 5e-4, "fixed") for m in ("tiny-llama", "tiny-llama-wide")}
    total = sum(k.train + k.evaluate for k in plan.cost_by_kind(p, study, per_token))
    text = plan.estimate(p, study, None, per_token, plan.Trials(1, 2))
    assert f"with 2 trials at once (1 thread each, ray.*): about {plan.hours(total / 2)} if" in text
    assert "trials at once" not in plan.estimate(p, study, None, per_token, plan.Trials(2, 1))
    # the calibration runs with a trial's threads, and the process gets its own back
    threads = []
    timed = lambda *a, **kw: threads.append(torch.get_num_threads()) or per_token[a[0]]  # noqa: E731
    monkeypatch.setattr(plan.cost, "measure", timed)
    before = torch.get_num_threads()
    plan.model_costs(p, study, None, plan.Trials(1, 2))
    assert set(threads) == {1} and torch.get_num_threads() == before


@pytest.mark.parametrize("name", sorted(cost.BUILTIN_ARCHITECTURES))
def test_the_built_in_models_known_architectures_are_their_installed_configs(name):
    from spot_core.backbones import model_config

    known, installed = cost.architecture(name), model_config(name)
    assert type(known) is type(installed)
    for key in cost.BUILTIN_ARCHITECTURES[name][1]:
        ours, theirs = getattr(known, key), getattr(installed, key)
        assert ours == (pytest.approx(theirs) if isinstance(theirs, float) else theirs), key  # eps: float32 in GGUF


def test_work_and_tokens_of_a_step():
    once, concatenated = cost.Shape(10, 20, 2, True), cost.Shape(10, 20, 2, False)
    assert (once.step_tokens(4), concatenated.step_tokens(4)) == (10 + 4 * 22, 4 * (10 + 22))
    trainer = cost.TrainerConfig(steps=250, eval_every=100, eval_at_start=True)
    assert cost.evaluations(trainer) == 1 + 2 + 1  # at 0, 100, 200 and the last step
    work = cost.Work(steps=10, batch_size=4, evaluations=3, eval_examples=50, eval_batch_size=4)
    train, evaluate = work.seconds(concatenated, cost.TokenCost("m", 2.0, 1.0, ""))
    assert (train, evaluate) == (10 * 4 * 32 * 2.0, 3 * 50 * 32 * 1.0)
    # model tuning: no prompt tokens, its own per-token figure, and an update of every weight per step
    tuned = cost.Work(steps=10, batch_size=4, evaluations=3, eval_examples=50, eval_batch_size=4, weights=True)
    figures = cost.TokenCost("m", 2.0, 1.0, "", train_weights=3.0, update=0.5)
    assert tuned.seconds(concatenated, figures) == (10 * (4 * 22 * 3.0 + 0.5), 3 * 50 * 22 * 1.0)
    with pytest.raises(cost.ConfigError, match="m: no figure of a model-tuning step"):
        tuned.seconds(concatenated, cost.TokenCost("m", 2.0, 1.0, "stored"))


def test_model_tuning_cells_are_priced_by_a_model_tuning_step(tmp_path, monkeypatch):
    measured, calibrate = [], cost.measure
    figures = cost.TokenCost("tiny-llama", 1e-3, 5e-4, "fixed", train_weights=2e-3, update=0.25)
    monkeypatch.setattr(plan.cost, "measure", lambda *a, **kw: measured.append(kw.get("weights")) or figures)
    both = "stages=[target,model_tuning]"
    study = build_study(compose_study("study=smoke", both))
    p = planned(tmp_path, "study=smoke", both)
    costs = plan.model_costs(p, study, None)
    assert measured == [True]  # the study's model, with its model-tuning figures
    by_kind = {k.kind: k.train for k in plan.cost_by_kind(p, study, costs)}
    # smoke: 2 targets x 2 seeds, 4 steps of 4 examples of 128 input and 16 target tokens; a target cell's prompt of
    # 4 runs once per step, a model-tuning cell has none and updates every weight once per step
    assert by_kind["target"] == pytest.approx(4 * 4 * (4 + 4 * 144) * 1e-3)
    assert by_kind["model_tuning"] == pytest.approx(4 * 4 * (4 * 144 * 2e-3 + 0.25))
    # the real calibration measures both figures
    real = calibrate("tiny-llama", cost.architecture("tiny-llama"), plan.shape(study, "tiny-llama"), 1, 4,
                        "float32", "cpu", weights=True)  # fmt: skip
    assert real.train_weights > 0 and real.update > 0 and "model tuning" in real.how
    assert real.held == cost.tuning_memory(cost.architecture("tiny-llama"), "float32")


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_model_tunings_memory_is_what_its_step_allocates(model):
    """The plan's memory of a model-tuning cell against a real step: the weights, the gradients a backward pass
    leaves and the state Adafactor (T5's settings) keeps after one update, counted in bytes."""
    from spot_core.backbones import load_backbone
    from spot_core.trainer import TrainerConfig, make_optimizer

    backbone = load_backbone(model)
    weights = list(backbone.model.requires_grad_(True).parameters())
    optimizer = make_optimizer(TrainerConfig(lr=1e-3, scale_parameter=True, weight_decay=0.0), weights)
    ids = torch.tensor([[5, 6, 7, 8]])
    extra = {"decoder_input_ids": ids} if backbone.is_encoder_decoder else {}
    backbone.model(input_ids=ids, labels=ids, **extra).loss.backward()
    optimizer.step()
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    state = [t for p in weights for t in optimizer.state[p].values() if torch.is_tensor(t) and t.dim() > 0]
    held = cost.tuning_memory(backbone.model.config, "float32")
    assert (held.weights, held.gradients, held.optimizer) == (
        nbytes(weights),
        nbytes(p.grad for p in weights),
        nbytes(state),
    )
    assert "MiB before activations: weights" in held.describe()


def test_a_named_device_reads_its_stored_figure(tmp_path, data_dir, capsys, monkeypatch):
    figures = tmp_path / "figures.json"
    for model in ("tiny-llama", "tiny-llama-wide"):
        shape = dict(prompt_length=4, input_tokens=128, target_tokens=16, prompt_once=True)
        timed = dict(step_seconds=0.5, eval_seconds_per_example=0.01, measured="a test")
        figure = cost.Figure("testgpu", model, "float32", 1, 4, **shape, **timed)
        cost.record_figure(figures, figure)
    cost.record_figure(figures, figure)  # the same setting again: replaced, not added
    assert len(cost.load_figures(figures)) == 2
    monkeypatch.setattr(plan, "FIGURES", figures)
    monkeypatch.setattr(plan, "REPO", tmp_path)
    out_dir = tmp_path / "run"
    run(compose_study(*local(out_dir, data_dir, "plan=TestGPU", "stages=[source,target]")))
    out = capsys.readouterr().out
    # 2 sources + 4 targets: 4 steps at 0.5 s (the figure's own shape), 3 evaluations of 16 examples at 0.01 s per
    # example of 145 tokens (4 + 4 x 144 over 4), theirs 144.25 tokens (prompt 4 shared by 16, 144 each)
    total = 6 * (4 * 0.5 + 3 * 16 * 0.01 * 144.25 / 145)
    assert "stored figure for testgpu (a test)" in out and "GPU-hours" in out
    assert f"on 1 GPU: {plan.hours(total)}; on 8 GPUs: {plan.hours(total / 8)}" in out and not out_dir.exists()


def test_a_bad_plan_value_is_a_config_error():
    assert plan.asked(False) == (False, None) and plan.asked(True) == (True, None)
    assert plan.asked(" h200 ") == (True, "h200")
    with pytest.raises(ConfigError, match="plan must be true, false or the name of a GPU"):
        plan.asked(3)


def test_a_named_device_without_a_figure_is_one_line_and_exit_2(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPOT_CACHE", str(tmp_path / "cache"))
    for variable in ("HYDRA_FULL_ERROR", "SPOT_VERBOSE"):  # a traceback on request would not be one line
        monkeypatch.delenv(variable, raising=False)
    code = run_main(study_main, monkeypatch, *local(tmp_path, data_dir, "plan=nosuchgpu"))
    done = capsys.readouterr()
    lines = done.err.splitlines()
    assert code == EXIT_USER_ERROR and len(lines) == 1, done.err
    assert lines[0].startswith("error: plan=nosuchgpu: no stored figure for device 'nosuchgpu' in bench/figures.json")
    assert "bench/packed.py" in lines[0] and "plan=true" in lines[0]
    assert done.out == "" and sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_progress_eta_prices_each_cell_by_its_stage_work(data_dir):
    """The scheduler's prices (plan.cell_price) come from each stage's `work`: a cell that only scores its prompt
    costs its one evaluation, a training cell its steps at the batch's tokens (x3: the backward pass) and its
    evaluations, an ATTEMPT cell its prompt once per example; by hand from the smoke design."""
    study = build_study(compose_study("study=smoke", f"data_dir={data_dir}"))
    cells = {str(c.stage): c for c in plan_stages(study, parse_stages(["source", "zero_shot"]))}
    price = plan.cell_price(study)
    t, evals = study.source_trainer, 16  # steps 4, batch 4, eval_every 2: evaluations at 0 (eval_at_start), 2, 4
    once = study.prompt.length + t.eval_batch_size * (study.max_input_tokens + study.max_target_tokens)
    per_example = (study.max_input_tokens + study.max_target_tokens) * t.batch_size + study.prompt.length
    evaluated = cost.evaluations(t) * evals * once / t.eval_batch_size
    assert price(cells["source"]) == pytest.approx(3.0 * t.steps * per_example + evaluated)
    assert price(cells["zero_shot"]) == pytest.approx(evals * once / t.eval_batch_size)  # one evaluation, no step
    attempt = parse_stages(["attempt"])[0].designed(study)[0]  # the target trainer: the same settings in smoke
    example = study.prompt.length + study.max_input_tokens + study.max_target_tokens  # its prompt in every example
    trained = 3.0 * t.steps * t.batch_size * example
    assert price(attempt) == pytest.approx(trained + cost.evaluations(t) * evals * example)
