"""The bad inputs of docs/reliability.md that concern data, prompt files and settings: each ends in one line on
stderr and exit code 2 before anything is written (no MLflow run, no file). The entry points run in this process
(tests/test_entry_errors.py runs the others as subprocesses); `pytest -rP` prints each line and its time to fail."""

import json
import math
import os
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import run_main
from hydra import compose, initialize_config_dir
from safetensors.torch import save_file

from pipelines import evaluate, study, train
from pipelines.errors import CONF, EXIT_USER_ERROR, check_settings
from pipelines.tracking import open_store
from spot_core.errors import ConfigError
from spot_core.prompt_files import save_prompt
from spot_core.tasks import DataSource, get_task

SST2 = get_task("sst2_v1")
TINY = ["model=tiny-llama", "prompt.length=4", "max_train_examples=8", "max_eval_examples=8"]


def mirror(tmp_path: Path, data_dir: Path) -> Path:
    """A copy of SST-2's first 16 rows of each split, to spoil."""
    root = tmp_path / "data"
    for split in ("train", "validation"):
        target = DataSource.of(SST2, root).file(split)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(DataSource.of(SST2, data_dir).file(split).read_text().splitlines(True)[:16]))
    return root


def spoil(path: Path, line: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


def fails(main, monkeypatch, capsys, tmp_path: Path, *args: str) -> str:
    """Runs an entry point as the command line would; checks exit 2, one line on stderr, nothing written."""
    inputs = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    store = tmp_path / "store" / "mlflow.db"
    start = time.perf_counter()
    code = run_main(main, monkeypatch, f"tracking.uri=sqlite:///{store}", f"out_dir={tmp_path}/out", *args)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    print(f"| {' '.join(args)} | {err.strip()} | {code} | {seconds:.1f} |")
    assert code == EXIT_USER_ERROR and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == inputs, "a failed invocation wrote files"
    assert not store.exists(), "a failed invocation opened the tracking store"
    return err.strip()


@pytest.mark.parametrize(
    ("spoilt", "expected"),
    [
        ("missing_split", "no data for its 'validation' split at"),
        ("garbled", "line 2 of {train} is not valid JSON"),
        ("no_field", "line 1 of {train} lacks field 'sentence' (the row has: text, label, idx)"),
        ("label", "line 3 of {train}: field 'label' is 7, outside 0..1 (negative, positive)"),
    ],
)
def test_bad_data_names_the_file_row_and_field(tmp_path, data_dir, monkeypatch, capsys, spoilt, expected):
    root = mirror(tmp_path, data_dir)
    path = DataSource.of(SST2, root).file("train")
    if spoilt == "missing_split":
        DataSource.of(SST2, root).file("validation").unlink()
    elif spoilt == "garbled":
        spoil(path, 2, lambda line: line[:20])
    elif spoilt == "no_field":
        spoil(path, 1, lambda line: line.replace('"sentence"', '"text"'))
    else:
        spoil(path, 3, lambda line: json.dumps({**json.loads(line), "label": 7}))
    line = fails(train.main, monkeypatch, capsys, tmp_path, *TINY, "task=sst2_v1", f"data_dir={root}")
    assert expected.format(train=path) in line


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("width", "a prompt for hidden size 48"),
        ("length", "a prompt of length 7, but prompt.length=4"),
        ("rank", "holds a 3-D tensor of shape (2, 4, 32), not a prompt"),
        ("format", "is not a prompt file (a text file)"),
        ("missing", "does not exist"),
        ("nan", "holds 128 of 128 values that are not finite (NaN or infinite)"),
        ("inf", "holds 2 of 128 values that are not finite (NaN or infinite)"),
        ("empty", "is empty (0 bytes), not a prompt"),
    ],
)
def test_a_bad_prompt_file_says_what_is_wrong_with_it(tmp_path, data_dir, monkeypatch, capsys, prompt, expected):
    inputs = tmp_path / "prompts"
    inputs.mkdir()
    path = inputs / f"{prompt}.safetensors"
    shapes = {"width": (4, 48), "length": (7, 32), "rank": (2, 4, 32)}
    if prompt == "rank":  # save_prompt refuses to write one: as another tool would
        save_file({"prompt_embeddings": torch.zeros(shapes[prompt])}, str(path))
    elif prompt in shapes:
        save_prompt(path, torch.zeros(shapes[prompt]))
    elif prompt == "format":
        path = inputs / "notes.txt"
        path.write_text("0.1 0.2 0.3 0.4 0.5\n")
    elif prompt in ("nan", "inf"):
        values = torch.full((4, 32), math.nan) if prompt == "nan" else torch.zeros(4, 32)
        values[0, :2] = math.inf if prompt == "inf" else math.nan
        save_prompt(path, values)
    elif prompt == "empty":
        path.write_bytes(b"")
    args = [*TINY, f"data_dir={data_dir}", "prompt=file", f"prompt.files=[{path}]", "prompt.length=4"]
    line = fails(train.main, monkeypatch, capsys, tmp_path, *args)
    assert expected in line and str(path) in line


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("trainer.lr=nan", "trainer.lr must be a finite number > 0, got nan"),
        ("trainer.lr=-0.1", "trainer.lr must be a finite number > 0, got -0.1"),
        ("trainer.lr=0", "trainer.lr must be a finite number > 0, got 0"),
        ("prompt.length=0", "prompt.length must be an integer >= 1, got 0"),
    ],
)
def test_a_bad_setting_is_named_as_written(tmp_path, data_dir, monkeypatch, capsys, setting, expected):
    line = fails(train.main, monkeypatch, capsys, tmp_path, *TINY, f"data_dir={data_dir}", setting)
    assert line == f"error: {expected}" or line.startswith(f"error: {expected} ")


def test_a_source_without_offline_data_stops_the_study_before_ray(tmp_path, data_dir, monkeypatch, capsys):
    args = ["study=smoke", f"data_dir={data_dir}", "study.sources=[sst2,doc_nli]"]
    line = fails(study.main, monkeypatch, capsys, tmp_path, *args)
    assert "task 'doc_nli_v1'" in line and "make data" in line


def test_a_smoke_studys_files_are_readable_by_group_and_others(tmp_path):
    """Under the usual umask (022) every file a study writes is 0644 (the suite's shared smoke study is in
    test_safety_study; here one run's folder, written through the same RunDir and prompt-file code)."""
    from spot_core.run_dir import RunDir

    old = os.umask(0o022)
    try:
        run = RunDir(tmp_path / "run")
        save_prompt(run.best_prompt, torch.zeros(4, 32))
        run.finish({"best/val_score": 1.0})
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "run").iterdir()} == {"0o644"}


# --- a setting that does not exist, a store that is no store, a data_dir that is a file --------------------------
@pytest.mark.parametrize(
    ("main", "args", "expected"),
    [
        (train.main, ["+trainer.lrr=0.1"], "trainer.lrr: no such setting; did you mean trainer.lr?"),
        (train.main, ["trainer.lrr=0.1"], "trainer.lrr: no such setting; did you mean trainer.lr?"),
        (train.main, ["+promt=file"], "promt: no such setting; did you mean prompt?"),
        (evaluate.main, ["+promt=file"], "promt: no such setting; did you mean prompt?"),
        (evaluate.main, ["+trainer.eval_batchsize=4"], "did you mean trainer.eval_batch_size?"),
        (study.main, ["study=smoke", "+study.source_trainer.lrr=0.1"], "did you mean study.source_trainer.lr?"),
        (study.main, ["study=smoke", "+datadir=/x"], "datadir: no such setting; did you mean data_dir?"),
    ],
)
def test_a_setting_that_does_not_exist_names_the_closest(tmp_path, monkeypatch, capsys, main, args, expected):
    line = fails(main, monkeypatch, capsys, tmp_path, *args)
    assert line == f"error: {expected}" or line.endswith(f"; {expected}")


def test_a_setting_that_does_not_exist_is_refused_by_run_too(tmp_path, data_dir):
    """Hydra's compose API (no command line to check): the run's dataclasses refuse it, naming the closest."""
    overrides = [*TINY, f"data_dir={data_dir}", f"out_dir={tmp_path}/out", "+trainer.lrr=0.1"]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides)
    with pytest.raises(ConfigError, match=r"^trainer.lrr: no such setting; did you mean trainer.lr\?$"):
        train.run(cfg)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ("train", ["+trainer.best_includes_init=true", "trainer.lr=0.1", "model=tiny-t5", "task=rte"]),
        ("study", ["study=smoke", "++study.task_embedding=displacement", "++study.retrieval_similarity=per_token"]),
        ("study", ["+study.cross_model.model=tiny-t5", "trainer@study.source_trainer=spot", "-m"]),
        ("retrieve", ["library=x", "task=rte", "top_k=2", "+trainer.best_includes_init=true"]),
    ],
)
def test_settings_that_exist_pass_also_added_with_a_plus(config, overrides):
    check_settings(config, overrides)  # fields of the config dataclasses that no YAML file sets: + adds them


def test_a_tracking_uri_of_an_unknown_scheme(tmp_path, data_dir, monkeypatch, capsys):
    args = [*TINY, f"data_dir={data_dir}", "tracking.uri=sqllite:///x.db"]
    line = fails(train.main, monkeypatch, capsys, tmp_path, *args)
    assert line.startswith("error: tracking.uri=sqllite:///x.db: MLflow has no tracking store for the scheme ")
    assert "(did you mean sqlite?): use sqlite:///PATH" in line and not (tmp_path / "x.db").exists()


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # python -m http.server's request lines would go to stderr
        pass


def test_a_web_server_that_is_not_mlflow(tmp_path, data_dir, monkeypatch, capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        line = fails(train.main, monkeypatch, capsys, tmp_path, *TINY, f"data_dir={data_dir}", f"tracking.uri={uri}")
    finally:
        server.shutdown()
        server.server_close()
    assert line.startswith(f"error: {uri} answered, but is not an MLflow tracking server (GET /health: 404 ")
    assert "set tracking.uri to the address of an MLflow server" in line


def test_a_data_dir_that_is_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "data.jsonl").write_text("{}\n")
    line = fails(train.main, monkeypatch, capsys, tmp_path, *TINY, f"data_dir={tmp_path}/data.jsonl")
    assert line.startswith(f"error: data_dir: {tmp_path}/data.jsonl is a file, not a folder: set data_dir to")


def test_a_new_sqlite_store_follows_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        open_store(f"sqlite:///{tmp_path}/store/mlflow.db", "spot-train")
    finally:
        os.umask(old)
    assert oct((tmp_path / "store" / "mlflow.db").stat().st_mode & 0o777) == "0o664"
