"""A stage added from outside the package (tests/plugins/probe_stage.py, `stage_modules=[probe_stage]`), touching
no file of it: planned (its later cells from finished runs), priced under plan=true, run on two Ray workers,
resumed after its trial worker is SIGKILLed, and shown in the report."""

import os
import sys
from pathlib import Path

import pytest
from conftest import compose_report, compose_study, overrides
from mlflow.tracking import MlflowClient

from pipelines import user_tasks
from pipelines.errors import check_overrides
from pipelines.report import run as report_run
from pipelines.study import build_study, run
from spot_core.errors import ConfigError
from spot_core.stages import catalogue

pytestmark = pytest.mark.usefixtures("ray_runtime")  # the session's Ray (conftest.py)

PLUGINS = Path(__file__).parent / "plugins"
STAGES = "stages=[source,target,probe]"


@pytest.fixture
def probe_stage(monkeypatch):
    """The plugin folder on this process's path and, through PYTHONPATH, on the Ray workers' it starts; the
    catalogue and the imported stage modules as they were, afterwards."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(PLUGINS), os.environ.get("PYTHONPATH")) if p))
    before, modules = list(catalogue.CATALOGUE), list(user_tasks._STAGE_MODULES)
    yield "stage_modules=[probe_stage]"
    catalogue.CATALOGUE[:] = before
    user_tasks._STAGE_MODULES[:] = modules


def runs_of(tmp_path: Path, kind: str) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("spot-study")
    return client.search_runs([experiment.experiment_id], f"tags.stage = '{kind}'", max_results=100)


def test_a_stage_from_a_module_outside_the_package_is_planned_priced_run_resumed_and_reported(
    tmp_path, data_dir, probe_stage, monkeypatch, own_ray
):
    args = overrides(tmp_path, data_dir, STAGES, probe_stage, "study.seeds=[0]")
    planned = run(compose_study(*args, "plan=true"))
    rows = {r.stage.name: r for r in planned["plan"].rows}
    # 2 sources x 1 source seed: 2 probes; then 2 targets x 1 seed from the best-probed source, counted from the design
    assert [str(c.stage) for c in rows["probe"].cells] == ["probe"] * 2 + ["probe_transfer"] * 2
    assert rows["probe"].later and len(rows["probe"].todo) == 4
    assert "probe_transfer" in planned["estimate"] and "probe " in planned["estimate"]

    marker = tmp_path / "killed"
    monkeypatch.setenv("SPOT_PROBE_KILL_MARKER", str(marker))
    summary = run(compose_study(*args))
    assert marker.exists()  # a probe_transfer trial's worker killed itself once; Ray retried the trial
    assert summary["failed"] == {} and summary["finished"] == summary["cells"] == 2 + 2 + 2 + 2
    resumed = [r.data.metrics.get("train/resumed_at_step") for r in runs_of(tmp_path, "probe_transfer")]
    assert 2.0 in resumed  # the retried cell went on from its step-2 checkpoint, not from scratch
    finished = [r for r in runs_of(tmp_path, "probe_transfer") if r.info.status == "FINISHED"]
    assert len(finished) == 2

    again = run(compose_study(*args))
    assert again["trained_now"] == 0 and again["finished"] == again["cells"]

    uri = f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"
    report = report_run(compose_report(uri, f"out_dir={tmp_path}/r", probe_stage))
    text = Path(report["document"][0]).read_text()
    assert "## Probes" in text and "2 source prompts probed." in text
    assert (tmp_path / "r" / "tables" / "probes.csv").read_text().count("\n") == 3  # header and two probes


def test_a_stage_module_without_a_stage_or_that_does_not_import_is_one_line(tmp_path, data_dir, probe_stage):
    (tmp_path / "not_a_stage.py").write_text("X = 1\n")
    with pytest.raises(ConfigError, match=r"^stage_modules: cannot import 'no_such_stage_module'"):
        run(compose_study(*overrides(tmp_path, data_dir, "stage_modules=[no_such_stage_module]")))
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ConfigError, match=r"'not_a_stage' defines no STAGE = StageDef"):
            run(compose_study(*overrides(tmp_path, data_dir, "stage_modules=[not_a_stage]")))
    finally:
        sys.path.remove(str(tmp_path))
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("override", ["stages.modules=[probe_stage]", "+stages.modules=[probe_stage]"])
def test_stages_dot_modules_says_to_name_stage_modules(override):
    """`stages` is the list of stages to run: a key under it would be Hydra's traceback, so the entry points answer
    it in one line that names the key to use (pipelines.errors.check_overrides, before Hydra composes)."""
    with pytest.raises(ConfigError, match=r"^stages.modules: .*stage_modules=\[my_pkg.my_stage\]"):
        check_overrides(["study=smoke", override])
    check_overrides(["stages=[source,target]", "stage_modules=[probe_stage]"])  # the keys to use pass


def test_the_example_of_docs_stages_md_is_a_stage_that_plans(tmp_path, monkeypatch, data_dir):
    """docs/stages.md's complete example imports and plans what tests/plugins/probe_stage.py plans (the tested
    module, which adds only its kill hook)."""
    text = (Path(__file__).parents[1] / "docs" / "stages.md").read_text()
    (tmp_path / "docs_probe_stage.py").write_text(text.split("```python\n", 1)[1].split("```", 1)[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(PLUGINS))
    import docs_probe_stage
    import probe_stage

    study = build_study(compose_study(*overrides(tmp_path, data_dir, STAGES)))
    for plan in ("plan", "designed"):
        assert [c.key for c in getattr(docs_probe_stage.STAGE, plan)(study)] == [
            c.key for c in getattr(probe_stage.STAGE, plan)(study)
        ]
    assert docs_probe_stage.STAGE.kinds == probe_stage.STAGE.kinds
