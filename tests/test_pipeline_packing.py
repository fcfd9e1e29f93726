"""A study whose cells train in packs (`ray.cells_per_trial`): the same runs, scores and ledger as one cell per
trial, and resumable after a SIGKILL of a trial worker and of the driver."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from test_pipeline_study import cell_runs, cell_runs_or_none, compose_study, overrides

from pipelines.study import run

# Sources long enough (60 steps, a checkpoint every 10) for a kill to land inside a pack.
STAGES = (
    "stages=[source,target,transfer]",
    "study.source_trainer.steps=60",
    "study.source_trainer.eval_every=10",
)


def scores(tmp_path: Path) -> dict[str, float]:
    return {
        r.data.tags["cell_key"]: r.data.metrics["best/val_score"]
        for r in cell_runs(tmp_path)
        if r.info.status == "FINISHED"
    }


def ray_workers() -> list[int]:
    """The trial processes of Ray on this machine."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "ray::ImplicitFunc" in line]


def wait_for(condition, driver: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert driver.poll() is None, f"the study ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_packed_study_equals_one_cell_per_trial_and_survives_kills(tmp_path, data_dir):
    alone = tmp_path / "alone"
    lone = run(compose_study(*overrides(alone, data_dir, *STAGES)))
    assert lone["failed"] == {} and lone["finished"] == 14

    packed = tmp_path / "packed"
    args = [
        *overrides(packed, data_dir, *STAGES, "ray.cells_per_trial=4", "ray.max_concurrent_trials=1"),
        f"hydra.run.dir={packed}/hydra",
    ]
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipelines.study", *args],
        cwd=REPO,
        start_new_session=True,
        stdout=open(tmp_path / "driver.log", "w"),  # noqa: SIM115 - the process outlives this line
        stderr=subprocess.STDOUT,
    )
    try:
        # a trial worker dies inside a pack of sources (a checkpoint exists, the pack is not finished): Ray retries
        # the trial, whose cells resume from their own checkpoints
        wait_for(lambda: list((packed / "out/source").glob("*/resume.pt")), driver, "a source checkpoint")
        (worker,) = ray_workers()  # one trial at a time: the sources' pack
        os.kill(worker, signal.SIGKILL)
        # then the driver dies, once some cells have finished
        wait_for(lambda: len(scores_or_none(packed)) >= 4, driver, "four cells finished")
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        time.sleep(1)
        os.killpg(driver.pid, signal.SIGKILL)  # Ray's own processes, to keep the machine clean
    before = scores(packed)
    assert 4 <= len(before) < 14
    result = run(compose_study(*args[:-1]))
    assert result["failed"] == {} and result["finished"] == 14 and result["trained_now"] == 14 - len(before)
    assert not [r for r in cell_runs(packed) if r.info.status == "RUNNING"]
    # the same cells, keys and scores as one cell per trial (scores are accuracies on 16 examples: float rounding
    # could only move one through a near tie)
    ours, theirs = scores(packed), scores(alone)
    assert ours.keys() == theirs.keys()
    assert ours == pytest.approx(theirs, abs=1e-6)
    packs = [r for r in cell_runs(packed) if r.info.status == "FINISHED" and "pack/cells" in r.data.metrics]
    assert packs and max(r.data.metrics["pack/cells"] for r in packs) > 1


def scores_or_none(tmp_path: Path) -> dict[str, float]:
    return {r.data.tags["cell_key"]: 0.0 for r in cell_runs_or_none(tmp_path) if r.info.status == "FINISHED"}
