"""Safety net (issue 13): studies end to end through `pipelines.study.run` and `pipelines.report.run`, checked in
MLflow. One tiny-llama smoke study (displacement task embeddings, per-token retrieval) is run once for the module,
first partially (stages source and target), then completed; the tests that change a study work on a copy of it.

    - the smoke study on the encoder-decoder family (tiny T5), every stage
    - task_embedding=displacement and retrieval_similarity=per_token: retrieval cells planned from them, finished
    - extension: a source and a target more train only the new cells and re-plan retrieval
    - a Ray retry (ray.max_failures=1) of a cell killed after its first checkpoint resumes from that checkpoint
    - the report of a partial study, of a study with FAILED cells, of a study whose runs are still RUNNING; notes
"""

import json
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import SMOKE_DESIGN, cell_runs, compose_report, compose_study, copy_study, ensure_ray, overrides
from mlflow.tracking import MlflowClient
from ray import tune

from pipelines.report import run as report_run
from pipelines.study import build_study
from pipelines.study import run as study_run
from pipelines.tracking import TrackingError
from spot_core.prompt_files import load_prompt
from spot_core.stages.catalogue import plan_stages
from spot_core.stages.retrieval import plan_retrieval

pytestmark = pytest.mark.usefixtures("ray_runtime")  # the session's Ray (conftest.py)

FIRST = {"source": 2, "target": 2, "transfer": 4, "retrieval_mixture": 2, "retrieval": 4}


def client_of(tmp: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp}/mlflow.db")


def parent_of(tmp: Path):
    client = client_of(tmp)
    experiment = client.get_experiment_by_name("spot-study")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.kind = 'study'")
    return parent


def report_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def expected_retrieval_keys(cfg, root: Path, done: set[str]) -> set[str]:
    """The retrieval cells the design asks for, recomputed here from the finished runs' prompt files: displacement
    task embeddings (the prompt at the embedding step minus the initial prompt), ranked by per-token cosine."""
    study = build_study(cfg)
    assert (study.task_embedding, study.retrieval_similarity) == ("displacement", "per_token")
    runs = [c for c in plan_stages(study, ["source", "target"]) if c.key in done]

    def embedding(cell) -> torch.Tensor:
        (folder,) = (root / cell.stage.value).glob(f"*-{cell.key}")
        return (
            load_prompt(folder / "task_embedding.safetensors")[0]
            - load_prompt(folder / "initial_prompt.safetensors")[0]
        )

    def per_token(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((F.normalize(a.double(), dim=1) @ F.normalize(b.double(), dim=1).T).mean())

    sources = [(c, embedding(c)) for c in runs if c.stage.value == "source"]
    rankings = {}
    for target in study.targets:
        mine = [embedding(c) for c in runs if c.stage.value == "target" and c.task == target]
        if mine:
            scored = [(c, sum(per_token(t, e) for t in mine) / len(mine)) for c, e in sources]
            rankings[target] = sorted(scored, key=lambda item: -item[1])
    return {c.key for c in plan_retrieval(study, rankings)}


@pytest.fixture(scope="module")
def smoke(smoke_study):
    """The session's smoke study (conftest.py): stages source and target with their report, then the rest of SPoT's
    stages."""
    return smoke_study


def test_a_smoke_studys_files_follow_the_umask(smoke):
    """On shared cluster storage others must read a study's prompts, results and report: every file the study
    wrote (run folders, Ray's, the report, the tracking store and its artifacts) has the modes the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in smoke.tmp.rglob("*") if p.is_file() and "partial_report" not in p.parts]
    assert len(files) > 100 and any(p.suffix == ".safetensors" for p in files)
    wanted = 0o666 & ~umask & 0o044  # read by group and others, as far as the umask lets them
    assert [str(p) for p in files if p.stat().st_mode & wanted != wanted] == []


def test_the_study_in_two_steps_trains_each_cell_once(smoke):
    assert smoke.partial["failed"] == {} and smoke.partial["cells"] == smoke.partial["trained_now"] == 4
    full = smoke.full
    assert full["failed"] == {} and full["cells"] == full["finished"] == 14 and full["trained_now"] == 10
    runs = cell_runs(smoke.tmp)
    assert Counter(r.data.tags["stage"] for r in runs) == FIRST
    assert all(r.info.status == "FINISHED" for r in runs) and len({r.data.tags["cell_key"] for r in runs}) == 14
    assert (
        {r.data.tags["mlflow.parentRunId"] for r in runs} == {full["parent_run_id"]} == {smoke.partial["parent_run_id"]}
    )
    parent = parent_of(smoke.tmp)
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert (tags["task_embedding"], tags["retrieval_similarity"], tags["cells"]) == ("displacement", "per_token", "14")
    assert (tags["sources"], tags["targets"]) == ("sst2_v1,mnli_v1", "rte_v1,cb_v1")


def test_displacement_and_per_token_plan_the_retrieval_cells(smoke):
    runs = cell_runs(smoke.tmp)
    done = {r.data.tags["cell_key"] for r in runs}
    retrieval = {r.data.tags["cell_key"] for r in runs if r.data.tags["stage"].startswith("retrieval")}
    assert retrieval == expected_retrieval_keys(compose_study(*smoke.args), smoke.tmp / "out", done)
    wavg = [r for r in runs if r.data.tags["source"] == "wavg-top2"]
    assert sorted(r.data.tags["target"] for r in wavg) == ["cb_v1", "rte_v1"]
    assert all(r.data.params["prompt.init"] == "weighted_average" and "val/score" in r.data.metrics for r in wavg)
    text = (smoke.tmp / "out" / "report" / "report.md").read_text()
    assert "embeddings: the displacement of the prompt at the embedding step from its initial prompt" in text
    assert "task_embedding: displacement" in text and "retrieval_similarity: per_token" in text
    assert "| per-token cosine | Top-k weighted average | 2 |" in text


def test_the_report_of_a_partial_study(smoke):
    report = smoke.tmp / "partial_report"
    text = (report / "report.md").read_text()
    assert "4 finished runs (2 source, 2 target); 2 sources x 2 targets, seeds [0]." in text
    assert "No transfer cell has finished yet." in text
    assert (report / "report.html").is_file() and (report / "figures" / "transfer_rel.png").is_file()
    baseline = (report / "tables" / "baseline.md").read_text()
    assert "| rte_v1 |" in baseline and "| cb_v1 |" in baseline


def test_make_report_rewrites_the_studys_own_report(smoke, tmp_path):
    again = report_run(compose_report(f"tracking.uri=sqlite:///{smoke.tmp}/mlflow.db", f"out_dir={tmp_path}"))
    assert again["runs"] == 14 and again["study"] == "smoke"
    assert report_files(tmp_path) == report_files(smoke.tmp / "out" / "report")


def test_report_notes_and_a_study_that_is_not_there(smoke, tmp_path):
    uri = f"tracking.uri=sqlite:///{smoke.tmp}/mlflow.db"
    notes = tmp_path / "notes.md"
    notes.write_text("Our reading: **nothing transfers** at 4 steps.\n")
    done = report_run(compose_report(uri, f"out_dir={tmp_path}/report", f"notes={notes}"))
    text = (tmp_path / "report" / "report.md").read_text()
    summary = text[text.index("## Summary") : text.index("## Transferability")]
    assert "Our reading: **nothing transfers** at 4 steps." in summary
    assert done["document"][0] == str(tmp_path / "report" / "report.md")
    assert "nothing transfers" in (tmp_path / "report" / "report.html").read_text()
    with pytest.raises(FileNotFoundError, match=r"notes=.*nope.md: no such file"):
        report_run(compose_report(uri, f"out_dir={tmp_path}/r2", f"notes={tmp_path}/nope.md"))
    with pytest.raises(TrackingError, match=r"no study named 'nosuch' in experiment .*run it first"):
        report_run(compose_report(uri, f"out_dir={tmp_path}/r3", "study.name=nosuch"))
    assert not (tmp_path / "r3").exists()


def test_the_report_of_a_study_whose_runs_are_still_running(smoke, tmp_path):
    copy_study(smoke.tmp, tmp_path)
    client = client_of(tmp_path)
    parent = parent_of(tmp_path)
    client.update_run(parent.info.run_id, "RUNNING")  # the driver is still at work
    transfer = next(r for r in cell_runs(tmp_path) if r.data.tags["stage"] == "transfer")
    # a cell being trained again (a retried attempt) and one that has not finished yet
    for key in (transfer.data.tags["cell_key"], "0123456789abcdef"):
        tags = {k: v for k, v in transfer.data.tags.items() if not k.startswith("mlflow.")}
        tags.update({"cell_key": key, "mlflow.parentRunId": parent.info.run_id})
        run = client.create_run(parent.info.experiment_id, tags=tags)
        client.log_metric(run.info.run_id, "val/score", 99.0, step=0)
    assert Counter(r.info.status for r in cell_runs(tmp_path)) == {"FINISHED": 14, "RUNNING": 2}
    done = report_run(compose_report(f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"out_dir={tmp_path}/report"))
    assert done["runs"] == 14  # the finished runs only
    # the same files as the finished study's own report: running runs count for nothing
    assert report_files(tmp_path / "report") == report_files(smoke.tmp / "out" / "report")


# --- extension, a killed cell retried by Ray, a cell that fails ----------------------------------------------------
KILLED = "source:qnli_v1:s0"  # dies (its worker process exits) right after its step-2 checkpoint, first attempt only
BROKEN = "transfer:qnli_v1->cb_v1:s0"  # raises inside its MLflow run, every attempt
MORE = ("study.sources=[sst2,mnli,qnli]", "study.targets=[rte,cb,cr]", "ray.max_failures=1")


def faulty(trainable, marker: str):
    """The study's trainable, with KILLED's first attempt killed after its first checkpoint and BROKEN failing.
    Runs in the Ray workers (cloudpickled by value): it patches spot_core's Trainer there, for one cell's call."""

    def cell(config, **kwargs):
        from spot_core.trainer import Trainer

        label, checkpoint, fit = config["label"], Trainer.checkpoint, Trainer.fit

        def checkpoint_then_die(self, state):
            checkpoint(self, state)
            if not os.path.exists(marker):
                Path(marker).write_text(str(state.step))
                os._exit(1)  # as the OOM killer would: no exception, no cleanup

        def broken(self):
            raise RuntimeError("test: this cell always fails")

        if label == KILLED:
            Trainer.checkpoint = checkpoint_then_die
        if label == BROKEN:
            Trainer.fit = broken
        try:
            return trainable(config, **kwargs)
        finally:
            Trainer.checkpoint, Trainer.fit = checkpoint, fit

    return cell


@pytest.fixture(scope="module")
def extended(smoke, tmp_path_factory, data_dir):
    """A copy of the smoke study extended by a source (qnli) and a target (cr), with KILLED and BROKEN."""
    tmp = tmp_path_factory.mktemp("extended")
    ensure_ray()
    copy_study(smoke.tmp, tmp)
    before = {r.info.run_id: r for r in cell_runs(tmp)}
    marker = tmp / "killed_at_step"
    args = overrides(tmp, data_dir, *SMOKE_DESIGN, *MORE)
    with pytest.MonkeyPatch.context() as patch:
        original = tune.with_parameters
        patch.setattr(tune, "with_parameters", lambda trainable, **kw: original(faulty(trainable, str(marker)), **kw))
        result = study_run(compose_study(*args, "stages=[source,target,transfer,retrieval]"))
    return SimpleNamespace(tmp=tmp, args=args, before=before, result=result, marker=marker)


def test_an_extension_trains_only_the_new_cells_and_re_plans_retrieval(extended):
    result, before = extended.result, extended.before
    # 3 sources, 3 targets, 9 transfers, per target a mixture prompt, a weighted-average and a mixture-init run
    assert result["cells"] == 3 + 3 + 9 + 3 * 3 and result["finished"] == result["cells"] - 1
    assert result["failed"] == {BROKEN: "RuntimeError: test: this cell always fails"}
    runs = cell_runs(extended.tmp)
    # the old runs are untouched: same runs, same status, same end time, and none of their cells trained again
    now = {r.info.run_id: r for r in runs}
    for run_id, old in before.items():
        assert (now[run_id].info.status, now[run_id].info.end_time) == ("FINISHED", old.info.end_time)
    finished = Counter(r.data.tags["cell_key"] for r in runs if r.info.status == "FINISHED")
    assert set(finished.values()) == {1}
    old_keys = {r.data.tags["cell_key"] for r in before.values()}
    assert result["trained_now"] == len(set(finished) - old_keys)
    new = [r for r in runs if r.info.run_id not in before and r.info.status == "FINISHED"]
    assert Counter(r.data.tags["stage"] for r in new if not r.data.tags["stage"].startswith("retrieval")) == {
        "source": 1,
        "target": 1,
        "transfer": 4,  # qnli -> rte, cr; sst2, mnli -> cr (qnli -> cb failed)
    }
    # retrieval re-planned on the new rankings (qnli may enter a top 2): the cells of the new ranking all finished,
    # trained now unless an old run has the same key
    cfg = compose_study(*extended.args)
    expected = expected_retrieval_keys(cfg, extended.tmp / "out", set(finished))
    assert len(expected) == 9 and expected <= set(finished)
    retrained = [r for r in new if r.data.tags["cell_key"] in old_keys]
    assert not retrained
    assert Counter(r.data.tags["target"] for r in runs if r.data.tags["cell_key"] in expected) == {
        "rte_v1": 2,
        "cb_v1": 2,
        "cr_v1": 2,
        "": 3,  # the mixture prompts
    }
    parent = parent_of(extended.tmp)
    assert parent.info.status == "FAILED" and parent.data.tags["cells"] == "24"
    assert parent.data.tags["sources"] == "sst2_v1,mnli_v1,qnli_v1"


def test_a_killed_cell_is_retried_by_ray_and_resumes_from_its_own_checkpoint(extended):
    assert extended.marker.read_text() == "2"  # the first attempt died right after its step-2 checkpoint
    client = client_of(extended.tmp)
    attempts = sorted(
        (r for r in cell_runs(extended.tmp) if r.data.tags["stage"] == "source" and r.data.tags["task"] == "qnli_v1"),
        key=lambda r: r.info.start_time,
    )
    # the dead worker could not end its run (left RUNNING until the next driver start marks it KILLED)
    assert len(attempts) == 2 and attempts[0].info.status in ("RUNNING", "KILLED")
    assert attempts[1].info.status == "FINISHED"
    first, retried = ([m.step for m in client.get_metric_history(r.info.run_id, "val/score")] for r in attempts)
    assert first == [0, 2]
    assert retried == [0, 2, 4]  # the evaluations before the resume are logged again: the run's curve is whole
    assert attempts[1].data.metrics["train/resumed_at_step"] == 2  # resumed from the step-2 checkpoint, not restarted
    (folder,) = (extended.tmp / "out" / "source").glob(f"*-{attempts[1].data.tags['cell_key']}")
    history = json.loads((folder / "metrics.json").read_text())
    assert [h["step"] for h in history] == [0, 2, 4]  # the checkpoint's history, continued
    assert json.loads((folder / "result.json").read_text())["final/step"] == 4
    # its transfers started from its prompt once it had finished
    transfers = [
        r for r in cell_runs(extended.tmp) if r.data.tags.get("source_key") == attempts[1].data.tags["cell_key"]
    ]
    assert {r.data.tags["target"] for r in transfers if r.info.status == "FINISHED"} == {"rte_v1", "cr_v1"}


def test_a_resumed_cells_finished_run_has_its_whole_curve_and_params(extended):
    client = client_of(extended.tmp)
    run = next(
        r
        for r in cell_runs(extended.tmp)
        if r.info.status == "FINISHED" and r.data.tags["stage"] == "source" and r.data.tags["task"] == "qnli_v1"
    )
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/score")] == [0, 2, 4]
    assert run.data.params.get("prompt.init") == "sampled_vocab"


def test_a_failed_cell_is_failed_in_mlflow_with_its_error_after_its_retry(extended):
    failed = [r for r in cell_runs(extended.tmp) if r.info.status == "FAILED"]
    assert len(failed) == 2  # ray.max_failures=1: two attempts
    assert {r.data.tags["stage"] for r in failed} == {"transfer"} and {r.data.tags["task"] for r in failed} == {"cb_v1"}
    assert all(r.data.tags["error"] == "RuntimeError: test: this cell always fails" for r in failed)
    # the study's summary names the cell's own error, not Ray's wrapper around it
    assert extended.result["failed"] == {BROKEN: "RuntimeError: test: this cell always fails"}


def test_the_report_of_a_study_with_a_failed_cell(extended, tmp_path):
    report_run(compose_report(f"tracking.uri=sqlite:///{extended.tmp}/mlflow.db", f"out_dir={tmp_path}"))
    text = (tmp_path / "report.md").read_text()
    assert "finished runs of 24 planned (3 source, 3 target, 8 transfer, " in text
    assert "3 sources x 3 targets, seeds [0]" in text
    scores = (tmp_path / "tables" / "transfer_scores.md").read_text().splitlines()
    assert scores[0].startswith("| source | rte_v1 | cb_v1 | cr_v1 |")
    qnli = next(line for line in scores if line.startswith("| qnli_v1"))
    cells = [c.strip() for c in qnli.strip("|").split("|")]
    assert cells[2] == "–" and "(1)" in cells[1] and "(1)" in cells[3]  # qnli -> cb failed: missing, not zero


def test_the_report_after_an_extension_rests_on_the_current_retrieval_cells(extended, tmp_path):
    """Retrieval cells planned from the old ranking and superseded by the extension are not the study's any more."""
    done = report_run(compose_report(f"tracking.uri=sqlite:///{extended.tmp}/mlflow.db", f"out_dir={tmp_path}"))
    runs = [r for r in cell_runs(extended.tmp) if r.info.status == "FINISHED"]
    current = expected_retrieval_keys(
        compose_study(*extended.args), extended.tmp / "out", {r.data.tags["cell_key"] for r in runs}
    )
    superseded = [
        r for r in runs if r.data.tags["stage"].startswith("retrieval") and r.data.tags["cell_key"] not in current
    ]
    wavg = [
        r.data.metrics["best/val_score"]
        for r in runs
        if r.data.tags["cell_key"] in current and r.data.tags["source"] == "wavg-top2"
    ]
    table = pd.read_csv(tmp_path / "tables" / "table3_values.csv")
    reported = table.loc[table["strategy"] == "weighted_average", "score"].item()
    text = (tmp_path / "report.md").read_text()
    right = done["runs"] == 23 and "23 finished runs of 24 planned" in text and reported == pytest.approx(sum(wavg) / 3)
    assert right
    marked = {r.data.tags["cell_key"] for r in runs if r.data.tags.get("superseded") == "true"}
    assert marked == {r.data.tags["cell_key"] for r in superseded}  # kept in the store, marked


# --- the encoder-decoder family ------------------------------------------------------------------------------------
def test_the_smoke_study_on_tiny_t5_finishes_every_cell(tmp_path, data_dir):
    # every stage's wiring on an encoder-decoder backbone, in this process (Ray's part is the same for any backbone)
    args = overrides(tmp_path, data_dir, "model=tiny-t5", "study.seeds=[0]", "ray.in_process=true")
    result = study_run(compose_study(*args))
    assert result["failed"] == {} and result["cells"] == result["finished"] == result["trained_now"] == 34
    runs = cell_runs(tmp_path)
    assert len(runs) == 34 and all(r.info.status == "FINISHED" for r in runs)
    assert Counter(r.data.tags["stage"] for r in runs) == {
        **FIRST,
        "zero_shot": 4,
        "neurons": 4,
        "cross_source": 2,
        "projector": 1,
        "cross_zero_shot": 2,
        "cross_transfer": 2,
        "mpt_source": 1,
        "mpt": 2,
        "attempt": 2,
    }
    cross = {"cross_source", "projector", "cross_zero_shot", "cross_transfer"}
    assert {r.data.tags["model"] for r in runs if r.data.tags["stage"] in cross} == {"tiny-llama-wide"}
    assert {r.data.tags["model"] for r in runs if r.data.tags["stage"] not in cross} == {"tiny-t5"}
    client = client_of(tmp_path)
    source = next(r for r in runs if r.data.tags["stage"] == "source")
    prompt, meta = load_prompt(client.download_artifacts(source.info.run_id, "best_prompt.safetensors", str(tmp_path)))
    assert prompt.shape == (4, 32) and meta["model"] == "tiny-t5"
    (projector,) = (tmp_path / "out" / "projector").glob("*")
    cross_prompt = next((tmp_path / "out" / "cross_transfer").glob("*")) / "projected_prompt.safetensors"
    assert load_prompt(cross_prompt)[0].shape == (4, 48) and (projector / "projector.safetensors").is_file()
    neurons = [r for r in runs if r.data.tags["stage"] == "neurons"]
    assert all("neurons.safetensors" in {a.path for a in client.list_artifacts(r.info.run_id)} for r in neurons)
    text = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "34 finished runs of" in text and "## Cross-model transfer" in text and "## Zero-shot transfer" in text
