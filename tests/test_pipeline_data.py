"""`make data` and `make docs`: the mirror and tasks_doc pipelines composed with Hydra's API."""

import json

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir

from pipelines import mirror, tasks_doc
from spot_core.tasks import UnknownNameError, get_task, load_examples


def compose_conf(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def test_make_data_links_a_mirror_and_lists_what_cannot_run_offline(tmp_path, data_dir, capsys):
    out = tmp_path / "data"
    tasks = "tasks=[rte_v1,mnli,doc_nli_v1]"
    result = mirror.run(compose_conf("mirror", f"source={data_dir}", f"out_dir={out}", tasks))
    assert result["files"] == 3 and result["unavailable"] == ["doc_nli_v1"] and result["failed"] == {}
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert {f["path"] for f in manifest["files"]} == {
        "nyu-mll__glue/rte/train.jsonl",
        "nyu-mll__glue/rte/validation.jsonl",
        "nyu-mll__glue/mnli/train.jsonl",
    }
    assert load_examples(get_task("rte_v1"), "validation", out) == load_examples(
        get_task("rte_v1"), "validation", data_dir
    )
    printed = capsys.readouterr().out
    assert "mnli_v1            carve-out" in printed and "source=hub" in printed and "tasks=[doc_nli_v1]" in printed


def test_make_data_rejects_unknown_tasks_and_sources_before_writing(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean: boolq_v1"):
        mirror.run(compose_conf("mirror", f"out_dir={tmp_path}/d", "tasks=[boolqq]"))
    with pytest.raises(FileNotFoundError, match="source=/no/such/dir: no such directory.*auto.*hub"):
        mirror.run(compose_conf("mirror", f"out_dir={tmp_path}/d", "source=/no/such/dir"))
    assert not (tmp_path / "d").exists()


def test_make_data_from_an_unreachable_hub_reports_each_task(tmp_path):
    result = mirror.run(compose_conf("mirror", "source=hub", f"out_dir={tmp_path}/d", "tasks=[cb_v1]"))
    assert list(result["failed"]) == ["cb_v1"] and "make data" in result["failed"]["cb_v1"]


def test_make_docs_writes_the_coverage_table(tmp_path, data_dir):
    out = tmp_path / "tasks.md"
    tasks_doc.run(compose_conf("tasks_doc", f"data_dir={data_dir}", f"out_dir={tmp_path}"))
    assert out.read_text() == (REPO / "docs" / "tasks.md").read_text(), "docs/tasks.md is stale: run `make docs`"


def test_the_old_out_key_still_works_for_one_release_with_a_warning(tmp_path, data_dir, caplog):
    out = tmp_path / "elsewhere.md"
    tasks_doc.run(compose_conf("tasks_doc", f"data_dir={data_dir}", f"out={out}"))
    assert out.read_text() == (REPO / "docs" / "tasks.md").read_text()
    assert "out is deprecated and will be removed in the next release: use out_dir" in caplog.text


def test_make_docs_and_make_data_check_their_folders_before_writing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_dir=.*/nodata: no such directory"):
        tasks_doc.run(compose_conf("tasks_doc", f"data_dir={tmp_path}/nodata", f"out_dir={tmp_path}/docs"))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match=r"out_dir: cannot create .*/a-file/d, .*/a-file is a file"):
        mirror.run(compose_conf("mirror", f"out_dir={tmp_path}/a-file/d", "tasks=[rte_v1]"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
