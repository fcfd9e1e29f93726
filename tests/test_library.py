"""The portable prompt library (spot_core.library, pipelines.library) on a smoke study's source runs: exported from
MLflow, opened with no MLflow, verified, merged, re-exported; malformed indexes and bad commands fail in one line."""

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_main
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from pipelines import ledger
from pipelines.library import main as library_main
from pipelines.library import run
from pipelines.tracking import open_store
from spot_core.library import PROMPT_FILES, Change, Library, LibraryError, SourceRun, entry_id, merge, sha256, write
from spot_core.prompt_files import load_prompt
from spot_core.run_dir import RunDir, current_umask
from spot_core.tags import NEURONS


def compose_config(name: str, *args: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=["study=smoke", *args])


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir) -> dict:
    """A smoke study's source runs with their neuron masks, in seconds (the target runs are left out: their
    neurons cells are refused without running)."""
    from pipelines.study import run as run_study

    root = tmp_path_factory.mktemp("study")
    args = [f"data_dir={data_dir}", f"out_dir={root}/out", f"tracking.uri=sqlite:///{root}/mlflow.db"]
    design = ("study.seeds=[0]", "stages=[source,neurons]", "ray.in_process=true")
    result = run_study(compose_config("study", *args, *design))
    assert sorted(result["failed"]) == ["neurons:cb_v1:s0", "neurons:rte_v1:s0"]
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("spot-study").experiment_id
    runs = ledger.finished_runs(client, experiment, "smoke")
    sources = {r.data.tags["task"]: r for r in runs if r.data.tags["stage"] == "source"}
    return {"root": root, "client": client, "runs": runs, "sources": sources, "out": root / "out"}


def export(study: dict, library: Path, *extra: str) -> dict:
    args = [f"tracking.uri=sqlite:///{study['root']}/mlflow.db", f"out_dir={study['out']}", f"library={library}"]
    return run(compose_config("library", *args, *extra))


@pytest.fixture(scope="module")
def library(study, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("library") / "smoke"
    result = export(study, path)
    assert (result["entries"], result["added"], result["kept"], result["fallbacks"]) == (2, 2, 0, [])
    return path


def run_folder(study: dict, key: str) -> RunDir:
    (folder,) = (study["out"] / "source").glob(f"*-{key}")
    return RunDir(folder)


def test_an_export_holds_the_source_runs_files_and_opens_without_mlflow(study, library, tmp_path):
    opened = Library.open(library)
    assert [e.task for e in opened.entries] == ["mnli_v1", "sst2_v1"] and opened.verify() == 8
    masks = ledger.stage_artifacts(study["client"], study["runs"])[NEURONS]
    for entry in opened.entries:
        r = study["sources"][entry.task]
        assert (entry.model, entry.prompt_length, entry.hidden, entry.seed, entry.init) == (
            "tiny-llama", 4, 32, 0, "sampled_vocab"
        )  # fmt: skip
        assert (entry.steps, entry.embedding_step, entry.task_embedding, entry.task_definition) == (
            4,
            2,
            "prompt",
            None,
        )
        assert entry.score == r.data.metrics["best/val_score"] == entry.metrics["val/score"]
        provenance = entry.provenance
        assert provenance["run_id"] == r.info.run_id and provenance["cell_key"] == r.data.tags["cell_key"]
        assert provenance["study"] == "smoke" and provenance["stage"] == "source"
        assert provenance["trainer"]["embedding_step"] == 2 and provenance["data"]["max_train_examples"] == 32
        assert set(provenance["files_from"].values()) == {"artifact"}
        # The artifacts are the run folder's files, byte for byte: the same id from the folder, with no MLflow.
        folder = run_folder(study, r.data.tags["cell_key"])
        for name in PROMPT_FILES:
            assert entry.path(name).read_bytes() == (folder.path / name).read_bytes()
        assert entry.id == entry_id({name: sha256(folder.path / name) for name in PROMPT_FILES})
        checkpoint, initial = (load_prompt(folder.path / name)[0].numpy() for name in PROMPT_FILES[1:])
        assert np.array_equal(entry.embedding("displacement"), checkpoint - initial)
        assert np.array_equal(entry.embedding(), checkpoint) and entry.embedding().shape == (4, 32)
        assert np.array_equal(entry.neurons(), masks[r.data.tags["cell_key"]])
        modes = [stat.S_IMODE(p.stat().st_mode) for p in (entry.best_prompt_path, entry.best_prompt_path.parent)]
        assert modes == [0o666 & ~current_umask(), 0o777 & ~current_umask()]
    # The same runs from their folders (spot_core only), with a task's definition: the same entries.
    folders = [run_folder(study, r.data.tags["cell_key"]).path for r in study["sources"].values()]
    runs = [SourceRun.from_run_dir(f, task_embedding="displacement") for f in folders]
    local, changes = write(tmp_path / "local", runs, definition=lambda task: {"name": task})
    assert {e.id for e in local.entries} == {e.id for e in opened.entries}
    assert {c for _, c in changes} == {Change.ADDED} and local.entries[0].task_definition == {"name": "mnli_v1"}
    assert local.entries[0].metrics == opened.entries[0].metrics and local.entries[0].neurons() is None
    # Another process opens it where MLflow, Hydra and Ray cannot be imported.
    script = (
        "import sys\n"
        "sys.modules.update(dict.fromkeys(['mlflow', 'hydra', 'omegaconf', 'ray']))  # as if not installed\n"
        "from spot_core.library import Library\n"
        f"lib = Library.open({str(library)!r})\n"
        "print(len(lib.entries), lib.entries[0].embedding('displacement').shape, lib.entries[0].neurons().shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:3] == ["2", "(4,", "32)"]


def test_exporting_the_same_runs_again_changes_nothing(study, library):
    def state() -> dict:
        return {p: (p.is_file() and p.read_bytes(), p.stat().st_mtime_ns) for p in [library, *library.rglob("*")]}

    before = state()
    again = export(study, library)
    assert (again["added"], again["completed"], again["kept"]) == (0, 0, 2)
    assert state() == before


def test_a_changed_missing_or_unlisted_file_fails_verification_naming_it(library, tmp_path):
    copy = shutil.copytree(library, tmp_path / "copy")
    entry = Library.open(copy).entries[1]
    target = entry.path(RunDir.TASK_EMBEDDING)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(LibraryError, match=rf"{target} has changed: .*entries\[1\].files.task_embedding"):
        Library.open(copy)
    cfg = compose_config("library", "action=verify", f"library={copy}")
    with pytest.raises(LibraryError, match=f"{target} has changed"):
        run(cfg)
    target.unlink()
    with pytest.raises(LibraryError, match=f"{target} is missing"):
        Library.open(copy)
    shutil.copyfile(library / target.relative_to(copy), target)
    assert Library.open(copy).verify() == 8
    (copy / "prompts" / "notes.txt").write_text("mine")
    with pytest.raises(LibraryError, match="prompts/notes.txt is not listed in index.json"):
        Library.open(copy)


def test_a_merge_keeps_one_copy_of_the_prompts_both_hold(study, library, tmp_path):
    sst2 = study["sources"]["sst2_v1"]
    one = export(study, tmp_path / "one", f"runs=['{sst2.info.run_id}']")  # a chosen run; no study name
    assert (one["entries"], one["study"]) == (1, None)
    # Another library holds the same sst2 prompts without their neuron mask (exported from its run folder).
    local, _ = write(tmp_path / "local", [SourceRun.from_run_dir(run_folder(study, sst2.data.tags["cell_key"]).path)])
    merged, changes = merge([local.root, tmp_path / "one", library], tmp_path / "merged")
    assert [c.value for _, c in changes] == ["added", "completed", "added", "kept"]
    assert len(merged.entries) == 2 and len(list((tmp_path / "merged" / "prompts").iterdir())) == 2
    assert all(e.neurons() is not None for e in merged.entries)
    assert Library.open(tmp_path / "merged").verify() == 8
    result = run(compose_config("library", "action=merge", f"libraries=[{library}]", f"library={tmp_path}/merged"))
    assert (result["entries"], result["kept"]) == (2, 2)


def corrupt(index: Path, change) -> None:
    data = json.loads(index.read_text())
    change(data)
    index.write_text(json.dumps(data))


CORRUPTIONS = {
    "version": (lambda d: d.update(version=2), r"index.json: version is 2; this spot reads version 1: .*upgrade spot"),
    "format": (lambda d: d.update(format="other"), r"index.json: format is 'other', expected 'spot-prompt-library'"),
    "task": (lambda d: d["entries"][1].pop("task"), r"index.json: entries\[1\].task is missing"),
    "seed": (
        lambda d: d["entries"][0].update(seed="0"),
        r"index.json: entries\[0\].seed must be an integer, got \"0\"",
    ),
    "id": (
        lambda d: d["entries"][0].update(id="0" * 16),
        r"index.json: entries\[0\].id is '0000000000000000', but its prompt",
    ),
    "path": (
        lambda d: d["entries"][0]["files"]["best_prompt.safetensors"].update(path="../x"),
        r"index.json: entries\[0\].files.best_prompt.safetensors.path '../x' must be a path inside the library",
    ),
}


@pytest.mark.parametrize("field", list(CORRUPTIONS))
def test_a_malformed_index_names_the_file_and_the_field(library, tmp_path, field):
    copy = shutil.copytree(library, tmp_path / "copy")
    change, message = CORRUPTIONS[field]
    corrupt(copy / "index.json", change)
    with pytest.raises(LibraryError, match=rf"{copy}/{message}"):
        Library.open(copy, verify=False)
    (copy / "index.json").write_text("{not json")
    with pytest.raises(LibraryError, match=rf"{copy}/index.json: not valid JSON"):
        Library.open(copy)


def test_a_study_without_source_runs_is_one_line_and_exit_2_with_nothing_written(
    study, tmp_path, monkeypatch, capsys
):
    uri = f"sqlite:///{study['root']}/mlflow.db"
    client, experiment = open_store(uri, "spot-study")
    client.create_run(experiment, run_name="study-empty", tags={"study": "empty", "kind": "study", "cell_key": ""})
    capsys.readouterr()
    args = ["study=smoke", "study.name=empty", f"tracking.uri={uri}", f"library={tmp_path}/lib"]
    code = run_main(library_main, monkeypatch, *args)
    done = capsys.readouterr()
    assert code == 2 and done.out == ""
    assert done.err.splitlines() == [
        f"error: study 'empty' has no finished source runs in {uri}: run its source stage first "
        "(make study ARGS='study.name=empty stages=[source]'), or name runs=[RUN_ID,...]"
    ]
    assert not (tmp_path / "lib").exists()


def test_a_prompt_not_logged_as_an_artifact_is_read_from_the_run_folder(study, tmp_path):
    sst2 = study["sources"]["sst2_v1"]
    logged = Path(sst2.info.artifact_uri.removeprefix("file://")) / RunDir.INITIAL_PROMPT
    kept = shutil.move(logged, tmp_path / "aside")
    try:
        result = export(study, tmp_path / "lib", f"runs=['{sst2.info.run_id}']")
    finally:
        shutil.move(kept, logged)
    folder = run_folder(study, sst2.data.tags["cell_key"]).path
    assert result["fallbacks"] == [
        f"{sst2.info.run_id}: {RunDir.INITIAL_PROMPT} not logged as an artifact, read from {folder}"
    ]
    (entry,) = Library.open(tmp_path / "lib").entries
    assert entry.provenance["files_from"][RunDir.INITIAL_PROMPT] == str(folder)
    assert entry.id == entry_id({name: sha256(folder / name) for name in PROMPT_FILES})  # the same prompts
