"""make retrieve: a new task's task embedding against a prompt library's source runs, every indicator, and the target
trained from the top k (best of top-k, weighted average, mixture) against its baseline; tiny-llama on the offline
data, a tmp MLflow store. The ranking's logic also on hand-made embeddings with known answers."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_main
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from pipelines.errors import EXIT_USER_ERROR, user_error
from pipelines.retrieve import main, run
from spot_core.analysis.retrieval import summarise_row
from spot_core.errors import SpotError
from spot_core.library import Library, SourceRun, merge, write
from spot_core.neurons import record_neurons
from spot_core.prompt_files import load_prompt
from spot_core.prompts import similarity_weights
from spot_core.run_dir import RunDir
from spot_core.selection import Candidate, SelectionConfig, Sources, rank_library, ranking_columns, variant_runs
from spot_core.similarity import cosine_of_means, mean_token_cosine
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec, tune_prompt

TRAINER = dict(steps=4, batch_size=4, micro_batch_size=None, eval_every=2, eval_batch_size=16, embedding_step=2)
TINY = [
    "model=tiny-llama",
    "trainer.steps=4",
    "trainer.batch_size=4",
    "trainer.micro_batch_size=null",
    "trainer.eval_every=2",
    "trainer.eval_batch_size=16",
    "max_train_examples=32",
    "max_eval_examples=16",
]
SOURCES = [("cb_v1", 0), ("cb_v1", 1), ("copa_v1", 0)]  # a task with two runs: ranked once per run


def compose_retrieve(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("retrieve", overrides=list(overrides))


def args(tmp: Path, library: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        *TINY,
        f"library={library}",
        "task=rte",
        f"data_dir={data_dir}",
        f"out_dir={tmp}/out",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        *extra,
    ]


def children(tmp: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    experiment = client.get_experiment_by_name("spot-retrieve")
    return client.search_runs([experiment.experiment_id], "tags.run_key != ''", max_results=1000)


@pytest.fixture(scope="module")
def library(tmp_path_factory, data_dir) -> Path:
    """A library of tiny source runs (4 steps, task embedding at step 2); the first has a neuron mask, the others
    get one recorded by retrieve."""
    tmp = tmp_path_factory.mktemp("sources")
    runs = []
    for i, (task, seed) in enumerate(SOURCES):
        spec = RunSpec(
            model="tiny-llama",
            task=task,
            prompt=PromptConfig(length=4, init="sampled_vocab"),
            trainer=TrainerConfig(**TRAINER, seed=seed),
            data_dir=str(data_dir),
            max_train_examples=32,
            max_eval_examples=16,
        )
        folder = tmp / f"{task}-s{seed}"
        tune_prompt(spec, folder)
        neurons = None
        if i == 0:
            record_neurons("tiny-llama", RunDir(folder).task_embedding, tmp / "neurons")
            neurons = RunDir(tmp / "neurons").neurons
        runs.append(SourceRun.from_run_dir(folder, neurons=neurons))
    write(tmp / "library", runs)
    return tmp / "library"


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, library, data_dir) -> tuple[Path, dict]:
    """One retrieval without training, in its own folder and store."""
    tmp = tmp_path_factory.mktemp("ranked")
    return tmp, run(compose_retrieve(*args(tmp, library, data_dir)))


def test_the_ranking_lists_every_library_run_with_every_indicator(ranked, library):
    tmp, summary = ranked
    out = tmp / "out"
    table = pd.read_csv(out / "ranking.csv")
    assert list(table.columns) == ranking_columns()
    entries = Library.open(library).entries
    assert sorted(table["entry"]) == sorted(e.id for e in entries)
    assert sorted(zip(table["task"], table["seed"], strict=True)) == sorted(SOURCES)
    assert table[["avg_tokens", "per_token", "euclidean", "neuron_overlap"]].notna().all().all()
    assert list(table["rank"]) == [1, 2, 3] and list(table["avg_tokens_rank"]) == [1, 2, 3]
    assert table["avg_tokens"].is_monotonic_decreasing
    for indicator in ("per_token", "euclidean", "neuron_overlap"):  # each ranks by its own value
        assert list(table.sort_values(f"{indicator}_rank")[indicator]) == sorted(table[indicator], reverse=True)
    assert dict(zip(table["entry"], table["source_score"], strict=True)) == {e.id: e.score for e in entries}
    saved = json.loads((out / "ranking.json").read_text())
    assert saved["task"] == "rte_v1" and saved["embedding_step"] == 2 and saved["task_embedding"] == "prompt"
    pd.testing.assert_frame_equal(pd.DataFrame(saved["rows"])[ranking_columns()], table, check_dtype=False)
    # Masks: recorded for the two entries without one, the library's used for the first.
    with_mask = [e.id for e in entries if e.neurons() is not None]
    assert len(with_mask) == 1 and not (out / "neurons" / with_mask[0]).exists()
    assert {p.name for p in (out / "neurons").iterdir() if not p.name.startswith("target-")} == {
        e.id for e in entries if e.id not in with_mask
    }
    assert summary["results"] is None and summary["trained_now"] == 1
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["task"] == "rte_v1" and parent.data.tags["model"] == "tiny-llama"
    assert parent.data.tags["library"] == str(library.resolve())
    assert {"ranking.csv", "ranking.json", "config.yaml"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    (child,) = children(tmp)
    assert child.data.tags["role"] == "task_embedding" and child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.params["trainer.steps"] == "2" and child.data.params["prompt.init"] == "class_labels"
    assert "neurons/active_share" in child.data.metrics and child.info.status == "FINISHED"


def test_an_entry_holding_the_targets_own_task_embedding_ranks_first(ranked, library, data_dir, tmp_path):
    shutil.copytree(ranked[0] / "out", tmp_path / "out")  # its runs, without their MLflow store
    own = next((tmp_path / "out").glob("task_embedding-*"))  # the retrieval's own short run, as a library entry
    merge([library], tmp_path / "library")
    (entry, _), *_ = Library.open(tmp_path / "library").add([SourceRun.from_run_dir(own)])
    again = run(compose_retrieve(*args(tmp_path, tmp_path / "library", data_dir)))
    assert again["trained_now"] == 0  # the task embedding run is found finished, and logged from its folder
    (child,) = children(tmp_path)
    assert child.info.status == "FINISHED" and child.data.params["prompt.init"] == "class_labels"
    assert child.data.metrics["best/val_score"] == RunDir(own).result()["best/val_score"]
    first = again["ranking"].iloc[0]
    assert first["entry"] == entry.id and first["task"] == "rte_v1"
    assert first["avg_tokens"] == pytest.approx(1.0) and first["euclidean"] == pytest.approx(0.0)
    assert first["neuron_overlap"] == pytest.approx(1.0)
    assert (first["avg_tokens_rank"], first["euclidean_rank"], first["neuron_overlap_rank"]) == (1, 1, 1)
    embedding = load_prompt(RunDir(own).task_embedding)[0].numpy()
    assert first["per_token"] == pytest.approx(mean_token_cosine(embedding, embedding))


def test_a_displacement_library_ranks_by_displacements(ranked, library, data_dir, tmp_path):
    shutil.copytree(ranked[0] / "out", tmp_path / "out")
    folders = [Path(e.provenance["run_dir"]) for e in Library.open(library).entries]
    write(tmp_path / "library", [SourceRun.from_run_dir(f, task_embedding="displacement") for f in folders])
    again = run(compose_retrieve(*args(tmp_path, tmp_path / "library", data_dir)))
    assert again["trained_now"] == 0  # the same short run: the kind is how its checkpoint is read
    assert json.loads((tmp_path / "out" / "ranking.json").read_text())["task_embedding"] == "displacement"
    own = RunDir(next((tmp_path / "out").glob("task_embedding-*")))
    target = load_prompt(own.task_embedding)[0].numpy() - load_prompt(own.initial_prompt)[0].numpy()
    entries = {e.id: e for e in Library.open(tmp_path / "library").entries}
    for row in again["ranking"].itertuples():
        source = entries[row.entry].checkpoint().numpy() - entries[row.entry].initial_prompt().numpy()
        assert row.avg_tokens == pytest.approx(cosine_of_means(target, source))


def test_hand_made_embeddings_rank_as_known():
    v, w = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    target = np.stack([v, v])  # every token the same: only an equal candidate reaches per-token cosine 1
    mask = np.array([[[True, False, True]]])
    candidates = [
        Candidate("far", "a_v1", 0, 50.0, np.stack([w, w]), np.array([[[False, True, False]]])),
        Candidate("near", "b_v1", 0, 60.0, np.stack([v + w, v]), np.array([[[True, False, False]]])),
        Candidate("same", "c_v1", 0, 70.0, target.copy(), mask.copy()),
    ]
    for by in ("avg_tokens", "per_token", "euclidean", "neuron_overlap"):
        table = rank_library(target, candidates, mask, by)
        assert list(table["entry"]) == ["same", "near", "far"] and list(table["rank"]) == [1, 2, 3]
    table = rank_library(target, candidates, mask).set_index("entry")
    assert table.loc["same", "avg_tokens"] == pytest.approx(1.0) and table.loc["far", "avg_tokens"] == 0.0
    assert table.loc["same", "per_token"] == pytest.approx(1.0) and table.loc["near", "per_token"] == pytest.approx(
        (1 / np.sqrt(2) + 1) / 2
    )
    assert table.loc["same", "neuron_overlap"] == pytest.approx(1.0) and table.loc[
        "near", "neuron_overlap"
    ] == pytest.approx(1 / np.sqrt(2))
    no_masks = rank_library(target, [Candidate("x", "a_v1", 0, 1.0, target)], None)
    assert np.isnan(no_masks["neuron_overlap"].iloc[0]) and no_masks["rank"].iloc[0] == 1
    with pytest.raises(ValueError, match="neuron_overlap needs"):
        rank_library(target, [Candidate("x", "a_v1", 0, 1.0, target)], None, "neuron_overlap")


def test_methods_that_cannot_run_are_skipped_with_why(tmp_path):
    fake = [
        SimpleNamespace(id=f"e{i}", task=t, best_prompt_path=tmp_path / "p")
        for i, t in enumerate(["my_task_v1", "cb_v1"])
    ]
    sources = Sources(fake, prompt_length=4, embedding_step=2, kind="prompt")
    template = RunSpec(model="tiny-llama", task="rte_v1", trainer=TrainerConfig(**TRAINER))
    top = pd.DataFrame({"entry": ["e0", "e1"], "avg_tokens": [0.2, -0.3]})
    selection = SelectionConfig(top_k=2, methods=["weighted_average", "mixture"], train=True)
    runs, skipped = variant_runs(template, sources, top, selection, tmp_path)
    assert runs == [] and set(skipped) == {"weighted_average", "mixture"}
    assert "similarities sum to -0.1" in skipped["weighted_average"]
    assert skipped["mixture"] == "skipped: source task 'my_task_v1' (entry e0) is not a task known here"
    with pytest.raises(SpotError, match="without repeats"):
        SelectionConfig(methods=["mixture", "mixture"])


def test_train_true_trains_every_method_against_the_baseline_and_a_rerun_trains_nothing(tmp_path, library, data_dir):
    overrides = args(tmp_path, library, data_dir, "train=true", "top_k=2")
    summary = run(compose_retrieve(*overrides))
    # the task embedding, the baseline, 2 source runs, the weighted average, the mixture prompt and its target run
    assert summary["trained_now"] == 7 and summary["skipped"] == {}
    results = pd.read_csv(tmp_path / "out" / "results.csv", keep_default_na=False, na_values=[""])
    assert list(results["method"]) == ["baseline", "best_of", "weighted_average", "mixture", "source", "source"]
    base = results.loc[0, "score"]
    for row in results.itertuples():  # the study report's measures, computed by the report's own function
        expected = summarise_row(
            pd.DataFrame({0: [row.score]}, index=["rte_v1"]), pd.Series({"rte_v1": base}), ["rte_v1"]
        )
        assert row.abs == pytest.approx(expected["abs"]) and row.rel == pytest.approx(expected["rel"], nan_ok=True)
    sources = results[results["method"] == "source"]
    best = results[results["method"] == "best_of"].iloc[0]
    assert best["score"] == sources["score"].max() and best["entries"] in set(sources["entries"])
    ranking = summary["ranking"]
    assert list(sources["entries"]) == list(ranking["entry"][:2]) and list(sources["rank"]) == [1, 2]
    # The weighted average started from sum_r a_r P_r over the top 2's best prompts.
    wavg = Path(results.loc[results["method"] == "weighted_average", "out_dir"].iloc[0])
    entries = {e.id: e for e in Library.open(library).entries}
    weights = similarity_weights(list(ranking["avg_tokens"][:2]))
    blend = sum(w * entries[e].best_prompt().numpy() for w, e in zip(weights, ranking["entry"][:2], strict=True))
    np.testing.assert_allclose(load_prompt(RunDir(wavg).initial_prompt)[0].numpy(), blend, rtol=1e-5, atol=1e-6)
    runs = children(tmp_path)
    roles = sorted(r.data.tags["role"] for r in runs)
    assert roles == sorted(
        ["task_embedding", "baseline", "source", "source", "weighted_average", "mixture_prompt", "mixture"]
    )
    assert all(
        r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == summary["parent_run_id"] for r in runs
    )
    mixture = next(r for r in runs if r.data.tags["role"] == "mixture_prompt")
    top_tasks = list(dict.fromkeys(ranking["task"][:2]))
    assert mixture.data.tags["task"] == "+".join([*top_tasks, "rte_v1"])
    assert next(r for r in runs if r.data.tags["role"] == "mixture").data.params["prompt.init"] == "file"
    parent = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(summary["parent_run_id"])
    assert parent.data.metrics["best_of/abs"] == pytest.approx(best["abs"])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["top_k"] == 2 and [r["method"] for r in saved["rows"]] == list(results["method"])

    again = run(compose_retrieve(*overrides))
    assert again["trained_now"] == 0 and len(children(tmp_path)) == len(runs)
    pd.testing.assert_frame_equal(again["results"], summary["results"])


def test_a_mixture_whose_source_data_is_missing_is_skipped_in_one_line(tmp_path, library, data_dir, capsys):
    mirror = tmp_path / "mirror" / "nyu-mll__glue"  # the target's data only
    mirror.mkdir(parents=True)
    (mirror / "rte").symlink_to(data_dir / "nyu-mll__glue" / "rte")
    overrides = args(tmp_path, library, tmp_path / "mirror", "train=true", "top_k=1", "methods=[mixture]")
    summary = run(compose_retrieve(*overrides))
    note = summary["skipped"]["mixture"]
    assert note.startswith("skipped: ") and "\n" not in note
    assert f"mixture: {note}" in capsys.readouterr().out.splitlines()
    results = summary["results"]
    assert list(results["method"]) == ["baseline", "mixture"] and np.isnan(results.loc[1, "score"])
    assert results.loc[1, "note"] == note


@pytest.mark.parametrize(
    "extra, message",
    [
        (["library={tmp}/nowhere"], "nowhere"),
        (["model=tiny-t5"], "has no source prompt for model 'tiny-t5'; it has tiny-llama (3 entries)"),
        (["prompt_length=8"], "prompt_length=8, but the library"),
        (["task=rtee"], "unknown task or mixture 'rtee'. Did you mean: rte_v1"),
        (["data_dir={tmp}/empty"], "task 'rte_v1'"),
        (["top_k=4", "train=true"], "top_k=4, but the library"),
        (["top_k=0"], "top_k must be an integer >= 1"),
        (["methods=[best_of,nope]"], "methods must be one of"),
        (["similarity=euclidean", "train=true"], "similarity=euclidean is a negated distance"),
    ],
)
def test_a_users_error_is_one_line_before_anything_is_written(tmp_path, library, data_dir, extra, message):
    (tmp_path / "empty").mkdir()
    extra = [e.format(tmp=tmp_path) for e in extra]
    overrides = [*args(tmp_path, library, data_dir), *extra]
    with pytest.raises(SpotError) as caught:
        run(compose_retrieve(*overrides))
    assert user_error(caught.value) is caught.value and message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no out_dir, no tracking store


def test_the_entry_point_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    args = ["model=tiny-llama", f"library={tmp_path}/nowhere", "task=rte", f"out_dir={tmp_path}/out"]
    code = run_main(main, monkeypatch, *args, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USER_ERROR and len(err) == 1 and err[0].startswith("error: ")
    assert "nowhere" in err[0] and not any(tmp_path.iterdir())


def test_a_ranking_alone_lists_every_run_whatever_top_k(tmp_path, library, data_dir):
    run(compose_retrieve(*args(tmp_path, library, data_dir, "top_k=5")))
    assert len(pd.read_csv(tmp_path / "out" / "ranking.csv")) == len(SOURCES)
