"""`make serve` (pipelines.serve): a library's prompts behind HTTP on Ray Serve answer mixed-task rows as the
engine does when called directly, concurrent requests share dynamic batches and each gets its own rows' answers, a
bad request is refused in one line (4xx) without stopping the server, and a changed library file stops the command
before anything starts."""

import json
import shutil
import socket
import threading

import pytest
import requests
from conftest import REPO, ensure_ray, run_main, tiny_library
from hydra import compose, initialize_config_dir
from ray import serve

import pipelines.serve as serve_module
from pipelines.predict import check_prompts, load_predictor
from pipelines.serve import main, start, stop
from spot_core.library import Library

PROMPTS = [("sst2_v1", 0, 4, 70.0), ("sst2_v1", 1, 4, 80.0), ("rte_v1", 2, 4, 60.0), ("squad_v1", 3, 6, 30.0)]
MODEL = ["model=tiny-llama", "model.max_input_tokens=128", "model.max_target_tokens=8"]
# A batch waits long enough for concurrent test requests to meet in it; small limits to reach them cheaply.
SERVE = ["serve.batch_wait_timeout_s=0.2", "serve.max_rows=8", "serve.max_body_bytes=4096", "batch_size=4"]


def config(*args: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("serve", overrides=[*MODEL, *SERVE, *args])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return tiny_library(tmp_path_factory.mktemp("serve"), PROMPTS)


@pytest.fixture(scope="module")
def server(library):
    ensure_ray()
    cfg = config(f"library={library}", f"serve.port={free_port()}")
    url = start(cfg)
    yield url, cfg
    stop()
    assert not serve.status().applications


@pytest.fixture(scope="module")
def direct(server):
    """The engine called directly on the same config: a row's expected prediction."""
    cfg = server[1]
    prompts, predictor = check_prompts(cfg), load_predictor(cfg)

    def predict(rows: list[dict]) -> list[dict]:
        checked = [prompts.request(r, predictor.codec, f"row {i}") for i, r in enumerate(rows, 1)]
        return [p.to_json() for p in predictor.predict(checked)]

    return predict


def entry_ids(library) -> dict[tuple[str, int], str]:
    return {(e.task, e.seed): e.id for e in Library.open(library).entries}


def mixed_rows(library, n: int, start: int = 0) -> list[dict]:
    """Rows of every entry and task, interleaved: by task, by entry, and `inputs` text."""
    ids, out = entry_ids(library), []
    for i in range(start, start + n):
        kind = i % 4
        if kind == 0:
            out.append({"task": "sst2_v1", "sentence": f"a {'very ' * (i % 3)}good film", "id": f"r{i}"})
        elif kind == 1:
            out.append({"entry": ids[("rte_v1", 2)], "sentence1": f"cat {i}", "sentence2": "a cat", "id": i})
        elif kind == 2:
            out.append({"entry": ids[("squad_v1", 3)], "question": "who?", "context": f"bob {i} ran."})
        else:
            out.append({"entry": ids[("sst2_v1", 0)], "inputs": f"sst2 sentence: {'bad ' * (i % 5)}"})
    return out


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert [p["row"] for p in got] == list(range(1, len(want) + 1))
    keys = ("id", "entry", "task", "prediction")
    for g, w in zip(got, want, strict=True):
        assert [g.get(k) for k in keys] == [w.get(k) for k in keys]
        if w["scores"] is None:
            assert g["scores"] is None
        else:
            assert g["scores"].keys() == w["scores"].keys()
            assert all(g["scores"][k] == pytest.approx(w["scores"][k], abs=1e-4) for k in w["scores"])


def post(url: str, body) -> requests.Response:
    """POST /predict: `body` as JSON, or a string as it is."""
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(f"{url}/predict", data=data, headers={"content-type": "application/json"}, timeout=60)


def test_health_and_entries_name_the_prompts_served(server, library):
    url = server[0]
    entries = requests.get(f"{url}/entries", timeout=30).json()
    assert entries["model"] == "tiny-llama"
    by_id = {e["id"]: e for e in entries["entries"]}
    assert by_id.keys() == {e.id for e in Library.open(library).entries}
    assert sorted(e["task"] for e in by_id.values()) == ["rte_v1", "squad_v1", "sst2_v1", "sst2_v1"]
    assert all(e["model"] == "tiny-llama" and e["prompt_length"] in (4, 6) for e in by_id.values())
    health = requests.get(f"{url}/health", timeout=30).json()
    assert (health["status"], health["model"], health["entries"]) == ("ok", "tiny-llama", 4)
    assert health["cache"].keys() == {"bytes", "hits", "misses", "evictions", "hit_rate"}


def test_mixed_rows_get_what_the_engine_gives_them_directly(server, library, direct):
    url = server[0]
    rows = mixed_rows(library, 8)
    response = post(url, {"rows": rows})
    assert response.status_code == 200, response.text
    got = response.json()["predictions"]
    assert_same(got, direct(rows))
    best_sst2 = entry_ids(library)[("sst2_v1", 1)]  # a row naming its task gets the task's best entry
    assert all(p["entry"] == best_sst2 for p, r in zip(got, rows, strict=True) if "task" in r)
    one = post(url, rows[1])  # a body that is one row
    assert one.status_code == 200 and one.json()["predictions"] == [{**got[1], "row": 1}]
    assert one.elapsed.total_seconds() >= 0.2  # a lone request waits serve.batch_wait_timeout_s for company
    health = requests.get(f"{url}/health", timeout=30).json()
    assert health["rows"] >= 9 and health["cache"]["misses"] >= 3


def test_concurrent_requests_share_batches_and_get_their_own_rows(server, library, direct):
    url, calls = server[0], 6
    before = requests.get(f"{url}/health", timeout=30).json()
    bodies = [mixed_rows(library, 1 + i % 3, start=10 * i) for i in range(calls)]
    answers: list = [None] * calls
    gate = threading.Barrier(calls)

    def call(i: int) -> None:
        gate.wait()
        answers[i] = post(url, {"rows": bodies[i]})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    for body, answer in zip(bodies, answers, strict=True):
        assert_same(answer.json()["predictions"], direct(body))
    after = requests.get(f"{url}/health", timeout=30).json()
    assert after["rows"] - before["rows"] == sum(len(b) for b in bodies)
    assert after["batches"] - before["batches"] < calls  # some requests met in one batch


@pytest.mark.parametrize(
    "body, status, field, says",
    [
        ('{"task": "sst2_v1", "sentence": ', 400, None, "the body is not JSON"),
        ("[1, 2]", 400, None, "must be a JSON object, got list"),
        ({"rows": {"task": "sst2_v1"}}, 400, "rows", '"rows" must be a list'),
        ({"rows": [{"task": "sst2_v1", "sentence": "x"}] * 9}, 413, "rows", "9 rows, over the limit of 8"),
        ({"task": "sst2_v1", "sentence": "x" * 5000}, 413, None, "over 4096 bytes"),
        ({"entry": "0123456789abcdef", "sentence": "x"}, 422, "entry", "row 1: no entry '0123456789abcdef'"),
        ({"rows": [{"task": "sst2_v1", "sentence": "x"}, {"task": "sst2_v1"}]}, 422, "sentence", "row 2 lacks"),
        ({"task": "sst2_v1", "sentence": 5}, 422, "sentence", "row 1"),
        ({"task": 3, "sentence": "x"}, 422, "task", "row 1: field 'task' must be a string"),
        ({"task": "no_such_task", "sentence": "x"}, 422, "task", "row 1"),
        ({"task": "sst2_v1", "sentence": "long " * 40}, 422, "inputs", "over the limit of 128"),
    ],
)
def test_a_bad_request_is_refused_in_one_line_and_the_server_goes_on(server, library, body, status, field, says):
    url = server[0]
    response = post(url, body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field and says in error["error"] and "\n" not in error["error"], error
    good = post(url, mixed_rows(library, 1)[0])
    assert good.status_code == 200 and good.json()["predictions"][0]["task"] == "sst2_v1"


def test_a_changed_library_file_stops_the_command_before_anything_starts(library, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "library"
    shutil.copytree(library, copy)
    changed = next(copy.rglob("best_prompt.safetensors"))
    with changed.open("ab") as f:
        f.write(b"\0")
    started = []
    monkeypatch.setattr(serve_module, "deploy", lambda cfg: started.append(cfg))
    code = run_main(main, monkeypatch, f"library={copy}", *MODEL, f"serve.port={free_port()}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and started == []
    assert len(err) == 1 and str(changed) in err[0] and "has changed" in err[0], err


@pytest.mark.parametrize(
    "args, says",
    [
        (["serve.gpus_per_replica=1"], "serve.gpus_per_replica=1 needs model.device=cuda"),
        (["serve.max_rows=0"], "serve.max_rows must be an integer >= 1"),
        (["serve.port=70000"], "serve.port must be a port number"),
    ],
)
def test_bad_serve_settings_stop_the_command_in_one_line(library, monkeypatch, capsys, args, says):
    started = []
    monkeypatch.setattr(serve_module, "start_ray", lambda r: started.append(r))
    code = run_main(main, monkeypatch, f"library={library}", *MODEL, *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and started == [] and len(err) == 1 and says in err[0], err


def test_a_port_in_use_stops_the_command_in_one_line(library, monkeypatch, capsys):
    started = []
    monkeypatch.setattr(serve_module, "start_ray", lambda r: started.append(r))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = run_main(main, monkeypatch, f"library={library}", *MODEL, f"serve.port={port}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and started == [] and len(err) == 1 and f"serve.port={port}: cannot listen there" in err[0], err
