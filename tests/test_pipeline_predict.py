"""`make predict` (pipelines.predict): a library's prompts answer a file of rows of many tasks; the output is
complete, in input order, equal to scoring each row alone, and written atomically; a bad row or a damaged library
stops it in one line with nothing written."""

import json

import pytest
import torch
from conftest import REPO, run_main, tiny_library
from hydra import compose, initialize_config_dir

from pipelines.predict import main, run
from spot_core.backbones import load_backbone
from spot_core.encoding import Codec, Encoded
from spot_core.evaluation import predict as evaluate_predict
from spot_core.library import Library
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt
from spot_core.scoring import label_scores
from spot_core.tasks import get_task

PROMPTS = [("sst2_v1", 0, 4, 70.0), ("sst2_v1", 1, 4, 80.0), ("rte_v1", 2, 4, 60.0), ("squad_v1", 3, 6, 30.0)]
MODEL = ["model=tiny-llama", "model.max_input_tokens=128", "model.max_target_tokens=8"]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return tiny_library(tmp_path_factory.mktemp("predict"), PROMPTS)


def rows(library) -> list[dict]:
    ids = {(e.task, e.seed): e.id for e in Library.open(library).entries}
    out = []
    for i in range(13):
        kind = i % 4
        if kind == 0:
            out.append({"task": "sst2", "sentence": f"a {'very ' * (i % 3)}good film", "id": f"r{i}"})
        elif kind == 1:
            out.append({"entry": ids[("rte_v1", 2)], "sentence1": f"cat {i}", "sentence2": "a cat", "label": 0})
        elif kind == 2:
            out.append({"entry": ids[("squad_v1", 3)], "question": "who?", "context": f"bob {i} ran."})
        else:
            out.append({"entry": ids[("sst2_v1", 0)], "inputs": f"sst2 sentence: {'bad ' * i}"})
    return out


def write_rows(path, items) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))


def config(*args: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("predict", overrides=[*MODEL, "progress=false", *args])


def test_every_row_is_answered_in_order_as_it_would_be_alone(library, tmp_path):
    items = rows(library)
    write_rows(tmp_path / "rows.jsonl", items)
    out = tmp_path / "out" / "predictions.jsonl"
    summary = run(config(f"library={library}", f"input={tmp_path}/rows.jsonl", f"output={out}"))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["row"] for line in lines] == list(range(1, len(items) + 1))
    assert (summary["rows"], summary["entries"]) == (13, 4)
    assert [line.get("id") for line in lines] == [r.get("id") for r in items]
    entries = {e.id: e for e in Library.open(library).entries}
    best_sst2 = next(e.id for e in entries.values() if (e.task, e.seed) == ("sst2_v1", 1))  # the higher score
    assert all(line["entry"] == best_sst2 for line, r in zip(lines, items, strict=True) if "task" in r)
    backbone = load_backbone("tiny-llama")
    codec = Codec(backbone.tokenizer, False, 128, 8)
    for line, item in zip(lines, items, strict=True):
        task, entry = get_task(line["task"]), entries[line["entry"]]
        text = item.get("inputs") or task.preprocess({**item, "label": 0, "answers": {"text": ["x"]}})["inputs"]
        ids = codec.encode_input(text)
        model = PromptedLM(backbone, SoftPrompt(entry.best_prompt())).eval()
        assert line["prediction"] == evaluate_predict(model, codec, task, [Encoded(ids, [], "")], 1)[0]
        if task.label_words:
            alone = label_scores(model, [ids], [codec.encode_target(w) for w in task.label_words])[0]
            got = torch.tensor([line["scores"][w] for w in task.label_words])
            torch.testing.assert_close(got, alone, rtol=1e-4, atol=1e-4)
        else:
            assert line["scores"] is None


def test_a_csv_file_of_rows_is_read_too(library, tmp_path):
    (tmp_path / "rows.csv").write_text('task,sentence\nsst2,"a fine, long film"\nsst2,dull\n')
    summary = run(config(f"library={library}", f"input={tmp_path}/rows.csv", f"out_dir={tmp_path}/out"))
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert summary["rows"] == 2 and [json.loads(x)["task"] for x in lines] == ["sst2_v1", "sst2_v1"]


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"task": "rte", "sentence1": "x"}, "line 3 of {input} lacks field 'sentence2'"),
        ({"task": "rte", "sentence1": "x", "sentence2": 4}, "line 3 of {input}: field 'sentence2' is 4 (an integer)"),
        ({"task": "cola", "sentence": "x"}, "line 3 of {input}: no prompt of task 'cola_v1'"),
        ({"entry": "0123456789abcdef", "sentence": "x"}, "line 3 of {input}: no entry '0123456789abcdef'"),
    ],
)
def test_a_bad_row_stops_it_in_one_line_naming_the_line_and_field_with_nothing_written(
    library, tmp_path, monkeypatch, capsys, bad, says
):
    source, out = tmp_path / "rows.jsonl", tmp_path / "out" / "predictions.jsonl"
    write_rows(source, [*rows(library)[:2], bad, *rows(library)])
    args = [*MODEL, f"library={library}", f"input={source}", f"output={out}"]
    assert run_main(main, monkeypatch, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says.format(input=source) in err
    assert not out.parent.exists()


def test_an_earlier_output_stays_whole_until_the_new_one_is_complete(library, tmp_path, monkeypatch):
    source, out = tmp_path / "rows.jsonl", tmp_path / "predictions.jsonl"
    write_rows(source, rows(library))
    run(config(f"library={library}", f"input={source}", f"output={out}"))
    before = out.read_text()

    def crash(*args, **kwargs):
        raise RuntimeError("killed midway")

    monkeypatch.setattr("pipelines.predict.Predictor.predict", crash)
    with pytest.raises(RuntimeError):
        run(config(f"library={library}", f"input={source}", f"output={out}"))
    assert out.read_text() == before and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_changed_library_file_stops_it_before_the_model_loads(library, tmp_path, monkeypatch, capsys):
    import shutil

    copy = tmp_path / "library"
    shutil.copytree(library, copy)
    victim = next(copy.rglob("best_prompt.safetensors"))
    victim.write_bytes(victim.read_bytes() + b"\0")
    write_rows(tmp_path / "rows.jsonl", rows(library))
    monkeypatch.setattr("pipelines.predict.load_backbone", lambda *a, **k: pytest.fail("the model loaded"))
    assert run_main(main, monkeypatch, *MODEL, f"library={copy}", f"input={tmp_path}/rows.jsonl") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{victim} has changed" in err


@pytest.mark.parametrize(
    "args, says",
    [
        ([], "give a prompt library (library=PATH) or prompt files"),
        (["library={library}", "input={tmp}/none.jsonl"], "input={tmp}/none.jsonl: no such file"),
        (["library={library}", "input={tmp}/rows.jsonl", "model=tiny-t5"], "has no prompt for model tiny-t5"),
        (["library={library}", "input={tmp}/rows.jsonl", "batch_size=0"], "batch_size"),
    ],
)
def test_bad_settings_stop_it_in_one_line(library, tmp_path, monkeypatch, capsys, args, says):
    write_rows(tmp_path / "rows.jsonl", rows(library))
    args = [a.format(library=library, tmp=tmp_path) for a in args]
    if not any(a.startswith("input=") for a in args):
        args.append(f"input={tmp_path}/rows.jsonl")
    assert run_main(main, monkeypatch, *MODEL, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says.format(tmp=tmp_path) in err
