import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import pandas as pd

# torch and pandas are imported where used: the CI-skip tests start pytest sessions of their own on this file.
# Set before any test module imports transformers or datasets (they read them once, on import); so spot_core is
# imported inside the helpers below, not here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist (`make test`) each worker process gets its share of the cores for torch's threads: two workers
# at torch's default (every core each) ran the tiny models' tests up to 10x slower than one process did.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline mirror where the entry points find it (README): $SPOT_DATA_DIR, else data/ (`make data`), else
    ../shared/data beside the repository."""
    from pipelines.paths import resolve_data_dir

    found = resolve_data_dir(None)
    if found is None:
        pytest.skip("no offline data mirror: set SPOT_DATA_DIR, run make data, or put shared/data beside the repo")
    return Path(found)


def run_main(main, monkeypatch, *args: str) -> int:
    """An entry point's `main()` as the command line `python -m pipelines.<entry> args` runs it, in this process
    (Hydra's logging set-up left out); its exit code."""
    import sys

    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.setattr(sys, "argv", ["spot", *args, "hydra/job_logging=none", "hydra/hydra_logging=none"])
    try:
        main()
        return 0
    except SystemExit as e:
        return e.code
    finally:
        GlobalHydra.instance().clear()


# --- the longest files first ----------------------------------------------------------------------------------
# `make test` hands whole files to two pytest-xdist workers (--dist loadfile) in collection order
# (--no-loadscope-reorder: xdist would otherwise start with the files of the most tests). Started last, a file of a
# minute or more left one worker alone for its last 40 s; started first, the short files fill in around it. The
# files' times from `pytest --durations=0` on the 2-core machine (2026-12-07), longest first (but the second: the
# first two files would both wait for the smoke study, which the workers share); the rest keep their order.
LONGEST_FIRST = (
    "test_safety_study.py", "test_stage_plugin.py", "test_pipeline_study.py", "test_user_tasks.py",
    "test_entry_errors.py", "test_model_tuning.py", "test_pipeline_packing.py", "test_pipeline_serve.py",
    "test_ci_skips.py", "test_plan.py", "test_report_study.py", "test_learning.py",
)  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order kept


# --- one local Ray for the session's studies -------------------------------------------------------------------
# A study run in this process joins a Ray that is already up and leaves it running (pipelines.study.start_ray):
# the studies of the suite share one instead of paying Ray's start and stop each. A study that is stopped takes
# Ray down (its cells must end with it); the next test that asks for Ray starts it again.
def ensure_ray() -> None:
    """The session's Ray, started if it is not up (module fixtures that run studies call it)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture
def ray_runtime():
    ensure_ray()
    yield


@pytest.fixture
def own_ray():
    """A study whose workers must inherit what the test sets up (environment variables, sys.path): Ray starts
    with the study, after the test's set-up, and goes down with it."""
    import ray

    ray.shutdown()
    yield
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def ray_down_at_the_end():
    yield
    import sys

    if "ray" in sys.modules:
        sys.modules["ray"].shutdown()


@pytest.fixture(scope="session", autouse=True)
def mlflow_schema_once(tmp_path_factory):
    """Each new sqlite store of this session gets MLflow's tables as a copy (sqlite's backup) of the first store's
    freshly migrated, empty schema, instead of replaying MLflow's migrations (about a second per store, and the suite
    creates dozens). MLflow still creates, checks and fills every store; only the replay is shared. Stores created
    by other processes (subprocess tests, Ray workers) are created as MLflow creates them. The CI-skip tests' own
    pytest sessions (SPOT_SKIP_PROBE) create no store and leave MLflow's import out (5 s of each)."""
    if os.environ.get("SPOT_SKIP_PROBE"):
        yield
        return
    import sqlite3

    import sqlalchemy
    from mlflow.store.db import utils

    original = utils._initialize_tables
    template = tmp_path_factory.mktemp("mlflow-schema") / "empty.db"

    def initialize(engine) -> None:
        if engine.url.get_backend_name() != "sqlite":
            return original(engine)
        if not template.exists():
            original(sqlalchemy.create_engine(f"sqlite:///{template}"))
        raw = engine.raw_connection()
        try:
            with contextlib.closing(sqlite3.connect(template)) as schema:
                schema.backup(raw.driver_connection)
        finally:
            raw.close()

    utils._initialize_tables = initialize
    yield
    utils._initialize_tables = original


def paused_at_step(step: int, module: str) -> str:
    """A `python -c` script that runs `python -m <module>` (its arguments after the script) whose training prints
    "checkpoint <step> written" after that checkpoint and then waits (for the signal a test sends: a short run
    could end before a busy machine had the test send it). Ctrl-C raises KeyboardInterrupt there, as in a terminal,
    also when the suite runs as a background job (which starts its processes with SIGINT ignored)."""
    return f"""
import runpy, signal, sys, time
from spot_core.trainer import Trainer

signal.signal(signal.SIGINT, signal.default_int_handler)
checkpoint = Trainer.checkpoint


def paused(self, state):
    checkpoint(self, state)
    if state.step == {step}:
        print("checkpoint {step} written", flush=True)
        time.sleep(120)


Trainer.checkpoint = paused
sys.argv[0] = "{module}"
runpy.run_module("{module}", run_name="__main__")
"""


# --- studies: their settings, their runs, and the session's smoke study -------------------------------------------
def overrides(tmp_path: Path, data_dir: Path, *extra: str) -> list[str]:
    """study=smoke in tmp_path: its out_dir tmp_path/out and its MLflow store tmp_path/mlflow.db."""
    return [
        "study=smoke",
        f"data_dir={data_dir}",
        f"out_dir={tmp_path}/out",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        "ray.num_cpus=2",
        *extra,
    ]


def compose_study(*args: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("study", overrides=list(args))


def compose_report(*args: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("report", overrides=["study=smoke", *args])


def cell_runs(tmp_path: Path) -> list:
    """The cell runs (FINISHED or not) of the study whose store is tmp_path/mlflow.db."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("spot-study")
    return client.search_runs([experiment.experiment_id], "tags.cell_key != ''", max_results=1000)


def cell_runs_or_none(tmp_path: Path) -> list:
    try:
        return cell_runs(tmp_path)
    except Exception:  # the driver has not created the store or the experiment yet
        return []


def copy_study(source: Path, dest: Path) -> None:
    """A study's MLflow store, its artifacts and its cell folders, as a study of its own: the copied store's
    experiment and runs point at the copied artifacts, so that a study run on the copy leaves the original as it
    was (its parent run's config, for one, is an artifact)."""
    import shutil
    import sqlite3

    from mlflow.tracking._tracking_service import utils

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "mlflow.db", dest / "mlflow.db")
    shutil.copytree(source / "mlartifacts", dest / "mlartifacts")
    shutil.copytree(source / "out", dest / "out")
    old, new = (f"file://{folder}/mlartifacts/" for folder in (source, dest))
    with contextlib.closing(sqlite3.connect(dest / "mlflow.db")) as db, db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (old, new))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
    utils._artifact_repos_cache.clear()  # MLflow caches a run's artifact folder by run id, which the copy shares


# SPoT's stages on tiny-llama, seed 0, with displacement task embeddings ranked by per-token cosine: read by the
# tests of several files (test_safety_study, test_pipeline_study, test_plan); a test that changes it works on a copy.
SMOKE_DESIGN = ("study.seeds=[0]", "++study.task_embedding=displacement", "++study.retrieval_similarity=per_token")
SMOKE_STAGES = "stages=[source,target,transfer,retrieval,report]"


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory, data_dir, worker_id):
    """The smoke study run in two steps: stages source and target with their report (kept in partial_report), then
    the rest of SPoT's stages, which trains only the new cells. `printed`: what the first step printed. Its cells
    run in this process (ray.in_process): the tests that read it check what the stages wrote; Ray's part is the
    subject of the tests that extend it (test_safety_study's `extended`), pack it, stop it or crash it.

    The tests only read it (or copy it), so pytest-xdist's workers share one: the first to ask runs it in the
    session's common temporary folder, under a file lock, and writes what the two steps returned beside it; the
    others wait for the lock and read that."""
    import io
    import shutil
    from types import SimpleNamespace

    from filelock import FileLock

    from pipelines.study import run

    common = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        common = common.parent  # pytest-of-<user>/pytest-<n>, above each worker's popen-gw<i>
    tmp, returned = common / "smoke", common / "smoke.json"
    args = overrides(tmp, data_dir, *SMOKE_DESIGN, "ray.in_process=true")
    with FileLock(common / "smoke.lock"):
        if tmp.exists() and not returned.exists():
            pytest.fail("the smoke study failed in another pytest-xdist worker: its error is that worker's")
        if not returned.exists():
            tmp.mkdir()
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                partial = run(compose_study(*args, "stages=[source,target,report]"))
            shutil.copytree(tmp / "out" / "report", tmp / "partial_report")
            full = run(compose_study(*args, SMOKE_STAGES))
            returned.write_text(json.dumps({"partial": partial, "full": full, "printed": printed.getvalue()}))
    return SimpleNamespace(tmp=tmp, args=args, **json.loads(returned.read_text()))


def mirror_rows(task, data_dir, split="train") -> list[dict]:
    """A task's raw rows as the mirror file holds them."""
    from spot_core.tasks import DataSource

    return [json.loads(line) for line in DataSource.of(task, data_dir).file(split).read_text().splitlines()]


def prompted(name: str, length: int = 4, seed: int = 0, prompt_once: bool | None = None):
    """A tiny model with a random prompt [length, H] and its codec: (PromptedLM, Codec)."""
    from spot_core.backbones import load_backbone
    from spot_core.encoding import Codec
    from spot_core.prompted import PromptedLM
    from spot_core.prompts import SoftPrompt, random_uniform

    backbone = load_backbone(name)
    import torch

    init = random_uniform(length, backbone.hidden_size, 0.5, torch.Generator().manual_seed(seed))
    model = PromptedLM(backbone, SoftPrompt(init), prompt_once)
    return model, Codec(backbone.tokenizer, backbone.is_encoder_decoder, 64, 8)


def no_dropout(model):
    """`model` (a torch module) with its dropout off (tiny-t5 has 0.1): runs compared with each other draw no masks
    (a pack draws its masks from one stream, a lone run from its own)."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "dropout", None), float):  # T5's attention: functional dropout at this rate
            module.dropout = 0.0
    return model


def concatenated(model):
    """The same backbone and prompt (shared parameter) on the concatenated reference path."""
    from spot_core.prompted import PromptedLM

    return PromptedLM(model.backbone, model.prompt, prompt_once=False)


@pytest.fixture(params=["tiny-llama", "tiny-t5"])
def tiny_name(request) -> str:
    return request.param


RUN_TUPLE = ("key", "stage", "task", "source", "source_key", "target", "seed", "score")
RUN_DEFAULTS = {"source": "", "source_key": "", "target": "", "k": 0, "retrieval": ""}


def runs_frame(*rows) -> "pd.DataFrame":
    """A hand-made runs table with every column of spot_core.analysis.frames.RUN_COLUMNS, in that order.

    Rows are dicts (missing source, source_key, target: ""; k: 0; retrieval: ""; score: NaN) or tuples
    (key, stage, task, source, source_key, target, seed, score).
    """
    import pandas as pd

    from spot_core.analysis.frames import RUN_COLUMNS

    records = [row if isinstance(row, dict) else dict(zip(RUN_TUPLE, row, strict=True)) for row in rows]
    return pd.DataFrame([RUN_DEFAULTS | record for record in records], columns=list(RUN_COLUMNS))


# --- no silent skips in CI -------------------------------------------------------------------------------
# With CI=true a skipped test fails the session, unless it was skipped for want of a CUDA device (CI has none):
# a missing data mirror or model package must not pass as green. (xfail is not a skip.)
ALLOWED_SKIPS = ("needs a CUDA device",)  # the skip reasons CI may show (tests/test_gpu.py)
SKIPPED: list[str] = []  # "node id: reason" of the other skips of this session


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(ok in reason for ok in ALLOWED_SKIPS):
            SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_terminal_summary(terminalreporter):
    if in_ci() and SKIPPED:
        terminalreporter.section("skipped tests fail the session when CI=true", red=True)
        for line in SKIPPED:
            terminalreporter.line(f"SKIPPED IN CI: {line}", red=True)
    if CHANGED:
        terminalreporter.section("the suite changed the repository (it must write to temporary folders only)", red=True)
        for kind, entries in CHANGED.items():
            terminalreporter.line(f"{kind}: {entries}", red=True)


# --- the suite writes only to temporary folders ----------------------------------------------------------
# git's view of the repository (changed, untracked and ignored entries; ignored folders runs write into are
# listed file by file) when the session starts and when it ends, in the process that runs the session (with
# pytest-xdist: the controller, once every worker is done). A difference fails the session, as a skip in CI does.
WRITTEN_BY_RUNS = ("outputs", "mlruns", "data")  # ignored folders (.gitignore) a run writes into
CACHES = ("__pycache__", ".pytest_cache", ".ruff_cache")  # Python's and the tools' own
AT_START: set[str] = set()
CHANGED: dict[str, list[str]] = {}


def repository_state(repo: Path = REPO) -> set[str]:
    import subprocess

    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"], cwd=repo, capture_output=True, text=True, check=True
    )
    entries = {line for line in status.stdout.splitlines() if not any(c in line for c in CACHES)}
    for folder in WRITTEN_BY_RUNS:
        entries |= {f"!! {p.relative_to(repo)}" for p in (repo / folder).rglob("*")}
    return entries


def state_change(before: set[str], after: set[str]) -> dict[str, list[str]]:
    """What appeared and what went, first 20 of each; empty when nothing changed."""
    change = {"new": sorted(after - before)[:20], "gone": sorted(before - after)[:20]}
    return change if change["new"] or change["gone"] else {}


def controller(config) -> bool:
    return not hasattr(config, "workerinput")  # an xdist worker has it


def pytest_sessionstart(session):
    if controller(session.config):
        AT_START.update(repository_state())


def pytest_sessionfinish(session, exitstatus):
    if not controller(session.config):
        return
    CHANGED.update(state_change(AT_START, repository_state()))
    if exitstatus == pytest.ExitCode.OK and (CHANGED or (in_ci() and SKIPPED)):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def tiny_library(root: Path, prompts, model: str = "tiny-llama", hidden: int = 32) -> Path:
    """A prompt library at root/library of random prompts, one entry per (task, seed, length, score) of `prompts`,
    as if trained (spot_core.library.write of SourceRuns whose three prompt files hold the same prompt)."""
    import torch

    from spot_core.library import SourceRun, write
    from spot_core.prompt_files import save_prompt
    from spot_core.prompts import random_uniform
    from spot_core.run_dir import RunDir

    runs = []
    for task, seed, length, score in prompts:
        folder = root / "runs" / f"{task}-{seed}-{length}"
        folder.mkdir(parents=True)
        prompt = random_uniform(length, hidden, 0.5, torch.Generator().manual_seed(seed))
        files = {}
        for name in (RunDir.BEST_PROMPT, RunDir.TASK_EMBEDDING, RunDir.INITIAL_PROMPT):
            files[name] = save_prompt(folder / name, prompt * (1 + len(files)), task=task, model=model, step=0)
        runs.append(SourceRun(files, task, model, seed, "random_uniform", 4, 2, score, {"val/accuracy": score}))
    write(root / "library", runs)
    return root / "library"
