"""Tasks from a YAML file and a data file, no Python: read and checked when named, trained like a built-in task, and
carried to Ray workers that never read the file. Every test defines its own task name (the registry is global)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from pipelines import library, retrieve, study, train, user_tasks
from pipelines.user_tasks import carried
from spot_core.errors import ConfigError
from spot_core.metrics import named_metric
from spot_core.stages.target import plan as plan_targets
from spot_core.study import StudyConfig
from spot_core.tasks import TaskDataError, UnknownNameError, base, check_data, definitions, get_task, load_examples
from spot_core.tasks.definitions import definition, fingerprint, fingerprint_of, load_task_file

pytestmark = pytest.mark.usefixtures("ray_runtime")  # the session's Ray (conftest.py)


@pytest.fixture(autouse=True)
def own_registry():
    """Each test's task files and modules leave the process's registry as they found it (others list every task)."""
    saved = dict(base._TASKS), dict(definitions._DEFINITIONS), list(user_tasks._MODULES)
    yield
    for registry, before in zip((base._TASKS, definitions._DEFINITIONS, user_tasks._MODULES), saved, strict=True):
        registry.clear()
        registry.update(before) if isinstance(registry, dict) else registry.extend(before)


REVIEWS = ("good value and works great", "broke after a week", "the screen is sharp", "battery died, avoid")


def reviews(folder: Path, n: int = 24, name: str = "reviews.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"text": REVIEWS[i % 4] + f" ({i})", "label": (i + 1) % 2} for i in range(n)]
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def task_file(folder: Path, name: str, body: str = "", **data: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = data or {"train": "reviews.jsonl[:16]", "validation": "reviews.jsonl[16:]"}
    lines = [f"name: {name}", "data:", *(f"  {role}: {path}" for role, path in data.items())]
    default = 'inputs: "reviews review: {text}"\nlabel_field: label\nlabel_words: [negative, positive]\n'
    path = folder / f"{name.rsplit('_v', 1)[0]}.yaml"
    path.write_text("\n".join(lines) + "\n" + (textwrap.dedent(body) or default))
    return path


def test_a_task_file_reads_its_data_with_the_template_label_words_and_slices(tmp_path):
    reviews(tmp_path)
    task = load_task_file(task_file(tmp_path, "reviews_a_v1"))
    assert task.label_words == ("negative", "positive") and task.name == "reviews_a_v1"
    train_rows, val_rows = load_examples(task, "train", None), load_examples(task, "validation", None)
    assert len(train_rows) == 16 and len(val_rows) == 8
    assert train_rows[0] == {"inputs": "reviews review: good value and works great (0)", "targets": "positive"}
    assert task.score(["positive", "negative"], ["positive", "positive"])["accuracy"] == 50.0
    check_data(task.name, None)  # every row: reads the whole file


def test_csv_tsv_a_label_mapping_input_fields_and_a_generation_task(tmp_path):
    (tmp_path / "q.csv").write_text('question,kind\n"what is 2+2, roughly?",NUM\n"who wrote it",HUM\nwhere,LOC\n')
    (tmp_path / "q.tsv").write_text("question\tkind\nhow many\tNUM\nwho\tHUM\n")
    body = """\
        input_fields: [question]
        label_field: kind
        label_words: {NUM: number, HUM: person, LOC: place}
        metrics: [accuracy, mean_multiclass_f1]
    """
    task = load_task_file(task_file(tmp_path, "qtype_v1", body, train="q.csv", validation="q.tsv"))
    rows = load_examples(task, "train", None)
    assert rows[0] == {"inputs": "qtype question: what is 2+2, roughly?", "targets": "number"}
    assert [r["targets"] for r in load_examples(task, "validation", None)] == ["number", "person"]
    assert set(task.score(["number"], ["number"])) == {"accuracy", "mean_multiclass_f1", "score"}
    (tmp_path / "a.jsonl").write_text('{"q": "capital of France", "a": "Paris"}\n{"q": "2+2", "a": "4"}\n')
    gen = load_task_file(task_file(tmp_path, "qa_gen_v1", 'inputs: "q: {q}"\ntarget: "{a}"\nmetrics: [squad]\n',
                                   train="a.jsonl", validation="a.jsonl"))  # fmt: skip
    assert gen.label_words is None and load_examples(gen, "train", None)[0]["targets"] == "Paris"
    assert gen.score(["Paris"], ["paris"])["em"] == 100.0


@pytest.mark.parametrize(
    ("body", "data", "message"),
    [
        ('inputs: "r: {text}"\nlable_field: label\n', {}, "lable_field: unknown key (did you mean 'label_field'?)"),
        ('inputs: "r: {txt}"\nlabel_field: label\nlabel_words: [a, b]\n', {}, "inputs: field 'txt' is not in line 1"),
        ('inputs: "r: {text}"\nlabel_field: stars\nlabel_words: [a, b]\n', {}, "label_field: field 'stars'"),
        ('inputs: "r: {text}"\nlabel_field: label\nlabel_words: [a]\n', {}, "label_words: needs two or more"),
        ('inputs: "r: {text}"\nlabel_field: label\nlabel_words: {1: a, 2: b}\n', {}, "line 2 of"),
        ('inputs: "r: {text}"\nlabel_field: label\nlabel_words: [a, b]\nmetrics: [acc]\n', {}, "metrics: unknown"),
        ('inputs: "r: {text}"\ntarget: "{label}"\nmetrics: [f1]\n', {}, "metrics: metric 'f1' needs label words"),
        ('inputs: "r: text"\nlabel_field: label\nlabel_words: [a, b]\n', {}, "inputs: needs fields in braces"),
        ("label_field: label\nlabel_words: [a, b]\n", {}, "inputs: give either inputs"),
        ('inputs: "r: {text}"\nlabel_field: label\nlabel_words: [a, b]\n', {"train": "nope.jsonl"}, "data: needs"),
        (
            'inputs: "r: {text}"\nlabel_field: label\nlabel_words: [a, b]\n',
            {"train": "nope.jsonl", "validation": "reviews.jsonl"},
            "data.train: no file at",
        ),  # fmt: skip
        (
            'inputs: "r: {text}"\nlabel_field: label\nlabel_words: [a, b]\n',
            {"train": "reviews.txt", "validation": "reviews.jsonl"},
            "data.train: reviews.txt is not a",
        ),  # fmt: skip
        ("inputs: [unclosed\n", {}, "not valid YAML (line"),
        ('inputs: "r: {text}\nlabel_field: label\n', {}, "while scanning a quoted scalar from line 5. Fix it: a value"),
        (
            'inputs: "r: {text}"\nlabel_field: label\nlabel_words: [good, good]\n',
            {},
            "label_words: 'good' is the word of labels 0 and 1: give each label its own word",
        ),  # fmt: skip
        (
            'inputs: "r: {text}"\nlabel_field: label\nlabel_words: {0: bad, 1: good, 2: good}\n',
            {},
            "label_words: 'good' is the word of labels 1 and 2: give each label its own word",
        ),  # fmt: skip
    ],
)
def test_a_malformed_task_file_is_one_line_naming_the_file_and_the_key(tmp_path, body, data, message):
    reviews(tmp_path)
    (tmp_path / "reviews.txt").write_text("x")
    path = task_file(tmp_path, f"bad_{abs(hash(body + str(data))) % 10**8}_v1", body, **data)
    with pytest.raises((ConfigError, TaskDataError)) as caught:
        load_task_file(path)
    text = str(caught.value)
    assert "\n" not in text and str(path.name) in text and message in text, text


def test_every_registered_task_has_a_word_of_its_own_for_each_label():
    for name in base.task_names():
        words = get_task(name).label_words or ()
        assert len(set(words)) == len(words), f"{name}: {words}"


def test_one_name_one_definition_a_builtin_name_is_refused_and_the_key_follows_the_template(tmp_path):
    reviews(tmp_path)
    path = task_file(tmp_path, "reviews_b_v1")
    first = load_task_file(path)
    assert load_task_file(path) is first  # the same definition again: the same task
    before = fingerprint("reviews_b_v1")
    path.write_text(path.read_text().replace("reviews review:", "review:"))
    with pytest.raises(ConfigError, match="already defined by .* with another definition"):
        load_task_file(path)
    with pytest.raises(ConfigError, match="name: 'sst2_v1' is a built-in task"):
        load_task_file(_builtin(tmp_path))
    assert before == fingerprint("reviews_b_v1") and fingerprint("sst2_v1") is None
    found = definition("reviews_b_v1")
    moved = {**found, "data": {role: spec.replace(str(tmp_path), "/elsewhere") for role, spec in found["data"].items()}}
    assert fingerprint_of(moved) == before  # where the data lives is not in the key
    assert fingerprint_of({**found, "inputs": "review: {text}"}) != before  # the template is


def _builtin(tmp_path: Path) -> Path:
    reviews(tmp_path / "b")
    return task_file(tmp_path / "b", "sst2_v1")


def test_named_metrics():
    assert named_metric("f1", ["no", "yes"])(["yes", "no"], ["yes", "yes"])["f1"] == pytest.approx(200 / 3)
    assert named_metric("matthews_corr")(["a", "b"], ["a", "b"])["matthews_corr"] == 100.0
    with pytest.raises(KeyError, match="choose from accuracy, .*, bleu, rouge"):
        named_metric("meteor")


def test_a_worker_that_never_read_the_task_file_registers_it_from_what_the_cell_carries(tmp_path):
    reviews(tmp_path)
    path = task_file(tmp_path, "reviews_w_v1")
    load_task_file(path)
    payload = json.dumps(carried())
    path.unlink()  # the worker cannot read the YAML file: only the data file stays
    code = textwrap.dedent(f"""
        import json, sys
        from spot_core.tasks import get_task, load_examples, UnknownNameError
        try:
            get_task("reviews_w_v1"); sys.exit("known before receiving")
        except UnknownNameError:
            pass
        from pipelines.user_tasks import receive
        receive(json.loads({payload!r}))
        print(load_examples(get_task("reviews_w_v1"), "validation", None)[0]["targets"])
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "positive"  # row 16: label 1


def compose_with(config: str, *args: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config, overrides=list(args))


def test_train_a_two_worker_study_library_and_retrieve_with_a_task_file(tmp_path, data_dir):
    """A new user's path: a JSONL file and a YAML file, then `make train`, then a smoke study with it as the target on
    a local Ray with 2 workers (separate processes that never imported the file), then `make library` of that study
    and `make retrieve` for the task against it."""
    reviews(tmp_path / "tasks", n=40)
    task_file(tmp_path / "tasks", "reviews_s_v1", train="reviews.jsonl[:32]", validation="reviews.jsonl[32:]")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = [f"tasks.dirs=[{tmp_path}/tasks]", f"tracking.uri={uri}", f"data_dir={data_dir}"]
    result = train.run(
        compose_with(
            "train", "model=tiny-llama", "task=reviews_s", "prompt=class_labels", "prompt.length=4",
            "trainer.steps=4", "trainer.batch_size=4", "trainer.eval_every=2", "trainer.embedding_step=2",
            f"out_dir={tmp_path}/train", *common,
        )
    )  # fmt: skip
    # the run's result is its files': the best of its evaluations after step 0 (metrics.json), each an accuracy on
    # the 8 validation reviews (a multiple of 100/8), and result.json says the same
    history = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert [h["step"] for h in history] == [0, 2, 4]
    assert all((h["val/score"] * 8 / 100).is_integer() for h in history)
    best = max(history[1:], key=lambda h: h["val/score"])  # the first of equal scores, as the Trainer keeps it
    assert (result["best/val_score"], result["best/step"]) == (best["val/score"], best["step"])
    assert json.loads((tmp_path / "train" / "result.json").read_text()).items() <= result.items()
    cfg = compose_with(
        "study", "study=smoke", "study.sources=[sst2]", "study.targets=[reviews_s]", "study.seeds=[0]",
        "stages=[source,target,transfer,retrieval,zero_shot,report]", "study.retrieval_ks=[1]",
        "ray.num_cpus=2", "ray.max_concurrent_trials=2",
        f"out_dir={tmp_path}/study", *common,
    )  # fmt: skip
    summary = study.run(cfg)
    # source, target, transfer, zero-shot; retrieval: the weighted average (k=1), the mixture sst2+reviews_s
    # and the target from it
    assert summary["failed"] == {} and summary["finished"] == summary["cells"] == 7
    assert "reviews_s_v1" in (tmp_path / "study" / "report" / "report.md").read_text()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("spot-study")
    runs = client.search_runs([experiment.experiment_id], "tags.cell_key != ''")
    assert sorted(r.data.tags["task"] for r in runs) == [
        *["reviews_s_v1"] * 5, "sst2_v1", "sst2_v1+reviews_s_v1"
    ]  # fmt: skip
    assert {r.info.status for r in runs} == {"FINISHED"}
    # a library of the study's source prompts, then `make retrieve` for the task file's task, training from the top 1
    exported = library.run(
        compose_with("library", "study=smoke", f"library={tmp_path}/library", f"out_dir={tmp_path}/study", *common)
    )
    assert exported["entries"] == 1
    found = retrieve.run(
        compose_with(
            "retrieve", "model=tiny-llama", f"library={tmp_path}/library", "task=reviews_s", "train=true", "top_k=1",
            "trainer.steps=4", "trainer.batch_size=4", "trainer.micro_batch_size=null", "trainer.eval_every=2",
            "max_train_examples=32", "max_eval_examples=8", f"out_dir={tmp_path}/retrieve", *common,
        )
    )  # fmt: skip
    ranking = pd.read_csv(tmp_path / "retrieve" / "ranking.csv")
    assert list(ranking["task"]) == ["sst2_v1"] and found["parent_run_id"]
    results = pd.read_csv(tmp_path / "retrieve" / "results.csv").set_index("method")
    assert {"baseline", "best_of", "weighted_average", "mixture"} <= set(results.index)
    assert results[["score", "abs", "rel"]].loc[["best_of", "weighted_average", "mixture"]].notna().all().all()
    # the task file's fingerprint is in its cells' keys: an edited template is another cell
    design = StudyConfig(name="x", model="tiny-llama", sources=["sst2"], targets=["reviews_s_v1"], seeds=[0])
    assert json.loads(plan_targets(design)[0].identity)["task_definitions"] == {
        "reviews_s_v1": fingerprint("reviews_s_v1")
    }


def test_an_unknown_name_says_where_a_task_file_would_be(tmp_path):
    with pytest.raises(UnknownNameError, match=r"Nor is there a task file \(.*/tasks/nothing_here.yaml\)"):
        train.run(compose_with("train", "model=tiny-llama", "task=nothing_here", f"tasks.dirs=[{tmp_path}/tasks]"))
    assert get_task("sst2").name == "sst2_v1"


def test_a_task_module_is_imported_from_tasks_modules_and_again_in_a_worker(tmp_path, monkeypatch):
    data = reviews(tmp_path)
    (tmp_path / "my_task_plugin.py").write_text(
        textwrap.dedent(f"""
            from spot_core.metrics import accuracy
            from spot_core.tasks import Task, register
            WORDS = ("negative", "positive")
            register(Task(
                name="plugin_reviews_v1", hub_id="local/plugin", hub_config=None, on_hub=False,
                splits={{"train": "all[:16]", "validation": "all[16:]"}}, files={{"all": {str(data)!r}}},
                preprocess=lambda row: {{"inputs": row["text"][::-1], "targets": WORDS[row["label"]]}},
                metrics=(accuracy,), label_words=("negative", "positive"),
            ))
        """)
    )  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose_with("train", "tasks.modules=[my_task_plugin]")
    from pipelines.user_tasks import use_tasks

    assert use_tasks(cfg, ["plugin_reviews", "sst2+plugin_reviews_v1"], None) == [
        "plugin_reviews", "sst2+plugin_reviews_v1"
    ]  # fmt: skip
    assert "my_task_plugin" in carried()["modules"]
    code = (
        "from pipelines.user_tasks import receive; from spot_core.tasks import get_task, load_examples;"
        "receive({'modules': ['my_task_plugin'], 'definitions': {}});"
        "print(load_examples(get_task('plugin_reviews'), 'train', None)[0]['inputs'])"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == ")0( taerg skrow dna eulav doog", done.stderr[-2000:]
    with pytest.raises(ConfigError, match=r"^tasks.modules: cannot import 'no_such_plugin' \(ModuleNotFoundError"):
        use_tasks(compose_with("train", "tasks.modules=[no_such_plugin]"), ["sst2"], None)


def test_the_example_task_file_reads_the_mirror(data_dir):
    from pipelines.user_tasks import resolve

    name = resolve("product_reviews", [REPO / "tasks"], str(data_dir))
    task = get_task(name)
    assert name == "product_reviews_v1" and task.label_words == ("negative", "positive")
    check_data(name, str(data_dir))
    assert len(load_examples(task, "train", str(data_dir))) == 1775


def test_make_data_checks_a_task_file_and_exports_nothing_for_it(tmp_path):
    from pipelines import mirror

    reviews(tmp_path / "mine")
    path = task_file(tmp_path / "mine", "reviews_d_v1")
    result = mirror.run(compose_with("mirror", f"tasks=[{path}]", f"out_dir={tmp_path}/mirror", "source=hub"))
    assert result["files"] == 0 and result["failed"] == {} and result["unavailable"] == []
    assert get_task("reviews_d_v1").files
