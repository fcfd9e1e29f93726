"""Bad input to an entry point: one line on stderr that says what was wrong and how to fix it, exit code 2, and
nothing written (no MLflow run, no file outside a temporary folder). Run as users run them: a few in a subprocess (the
exit code and stderr a shell sees), the rest through the same `main()` in this process.
Each case prints its line and time to fail (`pytest -rP`), the table of docs/reliability.md."""

import contextlib
import errno
import importlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import paused_at_step, run_main
from mlflow.tracking import MlflowClient

from pipelines import report, train
from pipelines.errors import EXIT_USER_ERROR
from pipelines.tracking import open_store

TINY_TRAIN = ["model=tiny-llama", "prompt.length=4", "max_train_examples=16", "max_eval_examples=8"]
GPUS = torch.cuda.device_count()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A tracking store with the experiments of train and study, that every case must leave without a run."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"
    for experiment in ("spot-train", "spot-study"):
        open_store(uri, experiment)
    return uri


def run_count(uri: str) -> int:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids, max_results=10000))


def files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if "cache" not in p.relative_to(folder).parts}


def invoke(module: str, args: list[str], cwd: Path, env: dict[str, str], process: bool) -> tuple[int, str, str]:
    """`python -m pipelines.<module> args` run from `cwd` with `env`: in a subprocess as a shell runs it, or in this
    process (the entry point's `main()` with that argv, working folder and environment: the same code path, without
    paying the interpreter's imports again). Its exit code, stdout and stderr."""
    if process:
        command = [sys.executable, "-m", f"pipelines.{module}", *args]
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout, done.stderr
    main = importlib.import_module(f"pipelines.{module}").main
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.chdir(cwd)
        for name in set(os.environ) | set(env):
            if name in env:
                patch.setenv(name, env[name])
            else:
                patch.delenv(name)
        code = run_main(main, patch, *args)
    return code, out.getvalue(), err.getvalue()


def fail(tmp_path: Path, store: str, module: str, *args: str, process: bool = False) -> str:
    """Runs `python -m pipelines.<module> args` in an empty folder (relative defaults such as out_dir land there;
    `process`: in a subprocess, else in this process); checks it exits 2 with one line on stderr, writing nothing;
    returns the line."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before, runs = files(tmp_path), run_count(store)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "SPOT_CACHE": str(tmp_path / "cache")}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("SPOT_VERBOSE", None)
    start = time.perf_counter()
    code, out, err = invoke(module, [f"tracking.uri={store}", *args], cwd, env, process)
    seconds = time.perf_counter() - start
    lines = err.splitlines()
    print(f"| python -m pipelines.{module} {' '.join(args)} | {err.strip()} | {code} | {seconds:.1f} |")
    assert code == EXIT_USER_ERROR and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out
    assert files(tmp_path) == before and not any(cwd.iterdir()), "a failed invocation wrote files"
    assert run_count(store) == runs, "a failed invocation left an MLflow run"
    return lines[0]


def test_unknown_task(tmp_path, store, data_dir):
    line = fail(tmp_path, store, "train", *TINY_TRAIN, f"data_dir={data_dir}", "task=sst", process=True)
    assert "unknown task or mixture 'sst'" in line and "Did you mean: sst2_v1" in line


def test_unknown_model_preset(tmp_path, store):
    line = fail(tmp_path, store, "train", "model=nosuch")
    assert line == (
        "error: model=nosuch: no such option in conf/model/; choose from gemma3-270m, smollm2-135m, "
        "t5-base-lm-adapt, tiny-llama, tiny-t5"
    )


def test_unknown_model_name(tmp_path, store, data_dir):
    line = fail(tmp_path, store, "train", *TINY_TRAIN, f"data_dir={data_dir}", "model.name=nosuchmodel")
    assert "cannot load model 'nosuchmodel'" in line


def test_unknown_study_preset(tmp_path, store):
    line = fail(tmp_path, store, "study", "study=nosuch", process=True)
    presets = "demo, generic, generic_cpu, methods, smoke, spot"
    assert line == f"error: study=nosuch: no such option in conf/study/; choose from {presets}"


def test_unknown_stage(tmp_path, store, data_dir):
    line = fail(tmp_path, store, "study", "study=smoke", f"data_dir={data_dir}", "stages=[sources]")
    assert "stages: unknown ['sources']; choose from ['source'" in line


def test_mpt_with_a_single_source_task(tmp_path, store, data_dir):
    line = fail(tmp_path, store, "study", "study=smoke", f"data_dir={data_dir}", "study.sources=[sst2]", "stages=[mpt]")
    assert line == (
        "error: stage mpt learns a prompt shared by the source tasks: study.sources must hold at least two tasks"
    )


def test_missing_data_dir(tmp_path, store):
    line = fail(tmp_path, store, "train", *TINY_TRAIN, f"data_dir={tmp_path}/nodata")
    assert f"the data directory {tmp_path}/nodata does not exist" in line and "make data" in line


def test_closed_tracking_port_fails_before_training(tmp_path, store, data_dir):
    line = fail(tmp_path, store, "train", *TINY_TRAIN, f"data_dir={data_dir}", "tracking.uri=http://127.0.0.1:9")
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in line and "mlflow server" in line


def test_closed_tracking_port_fails_before_ray_starts(tmp_path, store, data_dir):
    line = fail(tmp_path, store, "study", "study=smoke", f"data_dir={data_dir}", "tracking.uri=http://127.0.0.1:9")
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in line


def test_more_gpus_than_this_machine_has_fails_before_ray_starts(tmp_path, store, data_dir):
    line = fail(tmp_path, store, "study", "study=smoke", f"data_dir={data_dir}", f"ray.gpus_per_trial={GPUS + 1}")
    assert line.startswith(f"error: ray.gpus_per_trial={GPUS + 1} but this machine has {GPUS} GPUs: lower it")


def test_an_out_dir_that_cannot_be_written(tmp_path, store, data_dir):
    # chmod stops no one running as root (CI containers often do): there, a folder under a file stands in
    locked = tmp_path / "locked"
    if os.geteuid() == 0:
        locked.write_text("")
    else:
        locked.mkdir(mode=0o500)
    try:
        line = fail(tmp_path, store, "train", *TINY_TRAIN, f"data_dir={data_dir}", f"out_dir={locked}/run")
    finally:
        locked.chmod(0o700)
    reason = "is a file" if os.geteuid() == 0 else "is not writable (permission denied)"
    assert line.startswith(f"error: out_dir: cannot create {locked}/run, {locked} {reason}: choose another out_dir")


def test_a_study_the_report_cannot_find(tmp_path, store):
    line = fail(tmp_path, store, "report", "study=smoke", "study.name=nosuch", f"out_dir={tmp_path}/report")
    assert "no study named 'nosuch'" in line and "it holds no study yet" in line


# --- in this process: a full disk, a bug, tracebacks on request, and more one-liners -----------------------
def train_args(tmp_path: Path, data_dir: Path) -> list[str]:
    return [
        *TINY_TRAIN,
        f"data_dir={data_dir}",
        "trainer.steps=2",
        "trainer.eval_every=2",
        "trainer.embedding_step=2",
        "trainer.batch_size=4",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"out_dir={tmp_path}/run",
    ]


def test_a_full_disk_while_training_is_one_line_and_a_failed_run(tmp_path, data_dir, monkeypatch, capsys):
    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("spot_core.trainer.save_prompt", full)
    open_store(f"sqlite:///{tmp_path}/mlflow.db", "spot-train")  # a new store's set-up lines left out of stderr
    capsys.readouterr()
    start = time.perf_counter()
    code = run_main(train.main, monkeypatch, *train_args(tmp_path, data_dir))
    seconds = time.perf_counter() - start
    line = capsys.readouterr().err.strip()
    print(f"| (disk full while training: ENOSPC) | {line} | {code} | {seconds:.1f} |")
    assert code == EXIT_USER_ERROR and "\n" not in line
    assert line.startswith(f"error: cannot write {tmp_path}/run/") and line.endswith(
        "No space left on device: free some space there, or set out_dir (and tracking.uri) to a disk with room"
    )
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("spot-train").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("OSError: [Errno 28]")


def test_a_bug_keeps_its_traceback(tmp_path, data_dir, monkeypatch):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(train, "prepare", bug)
    with pytest.raises(ZeroDivisionError, match="a bug"):  # not turned into one line: Python prints it
        run_main(train.main, monkeypatch, *train_args(tmp_path, data_dir))


@pytest.mark.parametrize("variable", ["SPOT_VERBOSE", "HYDRA_FULL_ERROR"])
def test_a_traceback_on_request(tmp_path, monkeypatch, variable):
    from spot_core.tasks import UnknownNameError

    monkeypatch.setenv(variable, "1")
    with pytest.raises(UnknownNameError, match="unknown task or mixture 'sst'"):
        run_main(train.main, monkeypatch, *train_args(tmp_path, tmp_path), "task=sst")
    assert os.environ["HYDRA_FULL_ERROR" if variable == "HYDRA_FULL_ERROR" else variable] == "1"
    assert variable == "HYDRA_FULL_ERROR" or "HYDRA_FULL_ERROR" not in os.environ  # set for Hydra, then restored
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unknown_setting_and_a_store_that_does_not_exist(tmp_path, monkeypatch, capsys):
    for override in ("trainer.steps_per_epoch=3", "+trainer.steps_per_epoch=3"):  # Hydra's hint, followed
        assert run_main(train.main, monkeypatch, override) == EXIT_USER_ERROR
        assert capsys.readouterr().err == (
            "error: trainer.steps_per_epoch: no such setting; the settings of trainer are: steps, batch_size, "
            "micro_batch_size, optimizer, lr, weight_decay, decay_rate, scale_parameter, grad_clip, eval_every, "
            "eval_batch_size, "
            "eval_at_start, embedding_step, keep_checkpoints, seed, best_includes_init\n"
        )
    uri = f"tracking.uri=sqlite:///{tmp_path}/none/mlflow.db"
    assert run_main(report.main, monkeypatch, "study=smoke", uri, f"out_dir={tmp_path}/report") == EXIT_USER_ERROR
    assert capsys.readouterr().err == (
        f"error: no tracking store at {tmp_path}/none/mlflow.db: run a study first, or pass its "
        "tracking.uri=sqlite:///PATH\n"
    )
    assert not any(tmp_path.iterdir())


def test_a_folder_without_write_permission_is_refused_before_writing(tmp_path, monkeypatch):
    from pipelines.paths import check_writable
    from spot_core.errors import ConfigError

    assert check_writable(tmp_path / "a" / "b", "out_dir") == tmp_path / "a" / "b"
    monkeypatch.setattr("pipelines.paths.os.access", lambda path, mode: False)  # as chmod 0500 does, but for root
    with pytest.raises(ConfigError) as raised:
        check_writable(tmp_path / "a" / "b", "out_dir")
    assert str(raised.value) == (
        f"out_dir: cannot create {tmp_path}/a/b, {tmp_path} is not writable (permission denied): choose another "
        "out_dir, or make that folder writable"
    )
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/d/run/resume.pt"),
            "cannot write /d/run/resume.pt: No space left on device: free some space there, or set out_dir (and "
            "tracking.uri) to a disk with room",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/d/run"),
            "cannot use /d/run: Permission denied: set out_dir (or tracking.uri) to a folder you can write to, or "
            "fix its permissions",
        ),
        (OSError(errno.EROFS, "Read-only file system"), "cannot write a file: Read-only file system: set out_dir"),
    ],
)
def test_what_a_disk_refuses_is_the_users_to_fix(error, line):
    from pipelines.errors import StorageError, user_error

    found = user_error(error)
    assert isinstance(found, StorageError) and found.__cause__ is error and str(found).startswith(line)
    assert user_error(FileNotFoundError(errno.ENOENT, "No such file")) is None  # not a disk's refusal: a bug
    assert user_error(RuntimeError("a bug")) is None


def test_a_full_sqlite_store_inside_mlflow_is_the_users_to_fix():
    import sqlite3

    from mlflow.exceptions import MlflowException

    from pipelines.errors import StorageError, user_error

    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as e:
            raise MlflowException("(sqlite3.OperationalError) database or disk is full [SQL: INSERT ...]") from e
    except MlflowException as e:
        found = user_error(e)
    assert isinstance(found, StorageError) and str(found) == (
        "the tracking store cannot be written: database or disk is full: free some space there, or set tracking.uri "
        "to a store on a disk with room"
    )
    assert user_error(MlflowException("RESOURCE_DOES_NOT_EXIST: run 123")) is None  # not the user's: a traceback


@pytest.mark.parametrize("module", ["train", "study"])
def test_malformed_task_file(tmp_path, store, data_dir, module):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "rows.jsonl").write_text('{"text": "fine", "label": 1}\n')
    (folder / "mine.yaml").write_text(
        'name: mine_v1\ndata: {train: rows.jsonl, validation: rows.jsonl}\ninputs: "r: {text}"\nlabel_feild: label\n'
    )
    args = ["study=smoke", "study.targets=[mine]"] if module == "study" else [*TINY_TRAIN, "task=mine"]
    line = fail(tmp_path, store, module, *args, f"data_dir={data_dir}", f"tasks.dirs=[{folder}]")
    assert line == f"error: task file {folder}/mine.yaml: label_feild: unknown key (did you mean 'label_field'?)"


# --- a run stopped by Ctrl-C or SIGTERM: KILLED, one line, and the same command resumes it -------------------------
@pytest.mark.parametrize(("signum", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_a_stopped_run_is_killed_in_one_line_and_the_same_command_resumes_it(
    tmp_path, data_dir, monkeypatch, capsys, signum, code, name
):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    open_store(uri, "spot-train")  # a new store's set-up lines left out of stderr
    args = [*TINY_TRAIN, f"data_dir={data_dir}", "trainer.steps=100", "trainer.eval_every=10", "trainer.batch_size=4"]
    args += ["trainer.embedding_step=2", f"tracking.uri={uri}", f"out_dir={tmp_path}/run"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("SPOT_VERBOSE", None)
    # `python -m pipelines.train args`, whose training waits after its step-20 checkpoint until the signal comes
    # (a run of 100 tiny steps could end before a busy machine had the test send it)
    command = [sys.executable, "-c", paused_at_step(20, "pipelines.train"), *args]
    training = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # training, with a checkpoint (the step-20 one: written after that evaluation's line)
        shown = next((line for line in training.stdout if line.startswith("step 20/")), None)
        paused = next((line for line in training.stdout if line == "checkpoint 20 written\n"), None)
        training.send_signal(signum)
        out, err = training.communicate(timeout=120)
    finally:
        if training.poll() is None:
            training.kill()
            training.wait()
    assert shown is not None and paused is not None and training.returncode == code, err
    assert err.splitlines() == [f"stopped by {name}: run the same command again to resume"]
    assert "Traceback" not in out
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("spot-train").experiment_id
    (stopped,) = client.search_runs([experiment])
    assert stopped.info.status == "KILLED" and "error" not in stopped.data.tags
    assert run_main(train.main, monkeypatch, *args) == 0  # the same command again, in this process
    resumed = next(r for r in client.search_runs([experiment]) if r.info.run_id != stopped.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.metrics["final/step"] == 100
    step = int(resumed.data.metrics["train/resumed_at_step"])
    assert step == 20  # from the stopped run's last checkpoint, and the run says so
    assert f"resuming from step {step}/100 (the run's last checkpoint)" in capsys.readouterr().out.splitlines()


def test_a_stop_that_c_code_turned_into_another_error_is_still_a_stop(tmp_path, data_dir, monkeypatch, capsys):
    """SIGTERM while Ray's `wait` runs in C: Python hands back a SystemError whose context is the stop. It ends as
    a stop does, in one line with 143, and the run it interrupted is KILLED, not FAILED."""
    from pipelines.errors import Terminated, stop_of

    def wait(*args, **kwargs):
        try:
            raise Terminated
        except Terminated:
            raise SystemError("<cyfunction CoreWorker.wait> returned a result with an exception set") from None

    monkeypatch.setattr("spot_core.trainer.Trainer.fit", wait)
    open_store(f"sqlite:///{tmp_path}/mlflow.db", "spot-train")  # a new store's set-up lines left out of stderr
    capsys.readouterr()
    assert run_main(train.main, monkeypatch, *train_args(tmp_path, data_dir)) == 143
    assert capsys.readouterr().err == "stopped by SIGTERM: run the same command again to resume\n"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (stopped,) = client.search_runs([client.get_experiment_by_name("spot-train").experiment_id])
    assert stopped.info.status == "KILLED" and "error" not in stopped.data.tags
    assert stop_of(ValueError("not a stop")) is None
