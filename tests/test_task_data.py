"""Task data sources, split specs, carve-outs, export, the tokenised cache, the registry and mixtures."""

import dataclasses
import json
from pathlib import Path

import datasets
import pytest

from spot_core.backbones import load_backbone
from spot_core.encoding import Codec
from spot_core.tasks import (
    DataSource,
    Mixture,
    TaskDataError,
    UnknownNameError,
    get,
    get_mixture,
    get_task,
    load_examples,
    mixture_names,
    task_names,
)
from spot_core.tasks import cache as task_cache
from spot_core.tasks.cache import encoded_split
from spot_core.tasks.loading import check_data, sample_rows, slice_rows
from spot_core.tasks.mirror import export_task, update_manifest
from spot_core.tracking import MemoryTracker
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec, data_record, tune_prompt

REPO = Path(__file__).resolve().parents[1]
SPOT_SOURCES = (
    "c4 doc_nli yelp_polarity mnli qqp qnli record cxc squad drop sst2 winogrande hellaswag multirc cosmos_qa race"
)
SPOT_TARGETS = "boolq cola stsb wic cr mrpc rte wsc copa cb"


def hub_shaped(tmp_path, data_dir, task_name: str, rows_per_split: int = 40):
    """A local dataset repository laid out as on the hub (parquet shards + a README declaring the config),
    holding the first rows of each of the task's mirror splits; and the task pointed at it."""
    task = get_task(task_name)
    repo = tmp_path / "hub" / "glue"
    config = task.hub_config
    lines = ["---", "configs:", f"- config_name: {config}", "  data_files:"]
    for split in ("train", "validation"):
        rows = datasets.load_dataset("json", data_files=str(DataSource.of(task, data_dir).file(split)), split="train")
        rows.select(range(rows_per_split)).to_parquet(str(repo / config / f"{split}-00000-of-00001.parquet"))
        lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (repo / "README.md").write_text("\n".join([*lines, "---", ""]))
    return dataclasses.replace(task, hub_id=str(repo))


def tiny_spec(data_dir, tmp_path, task: str, init: str = "sampled_vocab", **limits) -> RunSpec:
    """Two steps of a tiny model on the mirror, tokenised splits cached in tmp_path."""
    return RunSpec(
        model="tiny-llama",
        task=task,
        prompt=PromptConfig(length=4, init=init),
        trainer=TrainerConfig(steps=2, batch_size=4, eval_every=2, eval_batch_size=16, embedding_step=1),
        data_dir=str(data_dir),
        cache_dir=str(tmp_path / "cache"),
        max_input_tokens=32,
        **{"max_train_examples": 8, "max_eval_examples": 8, **limits},
    )


def test_the_spot_study_tasks_and_mixtures_are_registered():
    for name in (SPOT_SOURCES + " " + SPOT_TARGETS).split():
        assert get_task(name).name == f"{name}_v1"  # an unversioned name means the latest version
    assert {"snli_v1", "anli_v1", "goemotions_v1", "sentiment140_v1"} < set(task_names())  # mixture members
    assert mixture_names() == [
        "all_v1", "gem_v1", "glue_v1", "mrqa_v1", "nli_v1", "paraphrase_v1", "rainbow_v1", "sentiment_v1",
        "summarization_v1", "superglue_v1", "translation_v1",
    ]  # fmt: skip
    every = get_mixture("all").tasks  # C4 and SPoT's 55 supervised datasets: each other mixture's, and SQuAD
    assert every[0] == "c4_v1" and len(every) == 56 and len(set(every)) == 56 and "squad_v1" in every
    assert all(set(get_mixture(m).tasks) <= set(every) for m in mixture_names())
    assert get_mixture("glue").tasks == (
        "cola_v1",
        "sst2_v1",
        "mrpc_v1",
        "qqp_v1",
        "stsb_v1",
        "mnli_v1",
        "qnli_v1",
        "rte_v1",
    )
    assert get("nli") is get_mixture("nli_v1") and get("rte") is get_task("rte_v1")


def test_unknown_names_list_the_closest_registered_names():
    with pytest.raises(UnknownNameError, match=r"unknown task 'bolq'. Did you mean: boolq_v1"):
        get_task("bolq")
    with pytest.raises(UnknownNameError, match=r"unknown task or mixture 'superglu'. Did you mean: superglue_v1"):
        get("superglu")
    with pytest.raises(ValueError, match="already registered"):
        from spot_core.tasks.base import register

        register(get_task("rte_v1"))


def test_mixture_rates_are_examples_proportional_with_a_cap():
    mix = Mixture("m_v1", ("a", "b", "c"), cap=1000)
    rates = mix.rates({"a": 100, "b": 5000, "c": 900})  # capped: 100, 1000, 900 of 2000
    assert rates == pytest.approx({"a": 0.05, "b": 0.5, "c": 0.45})
    assert get_mixture("glue_v1").cap == 2**19
    assert get_mixture("glue_v1").rates({t: 10 for t in get_mixture("glue_v1").tasks})["rte_v1"] == 1 / 8
    with pytest.raises(ValueError, match="no size for"):
        mix.rates({"a": 1})
    with pytest.raises(ValueError, match="two or more distinct tasks"):
        Mixture("m_v1", ("a", "a"))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("train", list(range(10))),
        ("train[:50%]", [0, 1, 2, 3, 4]),
        ("train[50%:]", [5, 6, 7, 8, 9]),
        ("train[-3:]", [7, 8, 9]),
        ("train[2:4]", [2, 3]),
        ("train[:-8]", [0, 1]),
        ("train[90%:]", [9]),
    ],
)
def test_split_slices(spec, expected):
    rows = datasets.Dataset.from_dict({"i": list(range(10))})
    assert slice_rows(rows, spec)["i"] == expected


def test_a_row_limit_samples_the_split_instead_of_taking_its_first_rows(data_dir):
    # CR's test split (its validation) is sorted by label: the first 48 rows are all negative.
    cr = get_task("cr_v1")
    sample = load_examples(cr, "validation", data_dir, limit=48)
    assert {e["targets"] for e in sample} == {"negative", "positive"}
    assert sample == load_examples(cr, "validation", data_dir, limit=48)  # the same rows every time
    rows = datasets.Dataset.from_dict({"i": list(range(100))})
    kept = sample_rows(rows, 10)["i"]
    assert kept == sorted(kept) and len(set(kept)) == 10 and sample_rows(rows, 100)["i"] == list(range(100))


def test_a_bad_split_spec_is_an_error():
    with pytest.raises(ValueError, match="bad split spec"):
        slice_rows(datasets.Dataset.from_dict({"i": [1]}), "train[1:2:3]")


def test_carve_outs_apply_only_where_the_mirror_lacks_a_split(data_dir, tmp_path):
    mnli = get_task("mnli_v1")
    assert DataSource.of(mnli, None).splits == {"train": "train", "validation": "validation_matched"}  # the hub
    assert DataSource.of(mnli, data_dir).splits == {"train": "train[:90%]", "validation": "train[90%:]"}
    assert DataSource.of(mnli, data_dir).availability == "carve-out"
    assert DataSource.of(get_task("rte_v1"), data_dir).availability == "official splits"
    assert DataSource.of(get_task("doc_nli_v1"), data_dir).availability == "missing"
    # With every official split present, the carve-out is not used.
    for split in ("train", "validation_matched"):
        path = DataSource.of(mnli, tmp_path).file(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"premise": "p", "hypothesis": "h", "label": 0, "idx": 0}\n')
    assert DataSource.of(mnli, tmp_path).splits == dict(mnli.splits)


def winogrande_mirror(root: Path, config: str, who: str) -> Path:
    """A mirror holding WinoGrande's `config` folder: 3 training and 2 validation questions about `who`."""
    for split, n in (("train", 3), ("validation", 2)):
        path = root / "allenai__winogrande" / config / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"sentence": f"{who} {i} met _.", "option1": who, "option2": "Bo", "answer": "1"} for i in range(n)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_a_mirror_without_winogrande_xl_is_read_from_winogrande_l(tmp_path):
    task = get_task("winogrande_v1")
    assert (task.hub_config, task.fallback_configs) == ("winogrande_xl", ("winogrande_l",))
    with pytest.raises(TaskDataError, match=r"winogrande_xl/train.jsonl \(nor a folder of .* winogrande_l beside it"):
        load_examples(task, "train", tmp_path)
    mirror = winogrande_mirror(tmp_path / "l", "winogrande_l", "Al")
    on_l = DataSource.of(task, mirror)
    assert on_l.config == "winogrande_l" and on_l.reads_fallback and DataSource.of(task, None).config == "winogrande_xl"
    assert on_l.file("train") == mirror / "allenai__winogrande/winogrande_l/train.jsonl"
    assert on_l.availability == "official splits"
    own = DataSource.at(task, mirror, task.hub_config)  # where a mirror of the task's own configuration is written
    assert own.file("train").parent.name == "winogrande_xl" and not own.reads_fallback
    check_data("winogrande_v1", mirror)
    assert [e["inputs"].split(" met")[0] for e in load_examples(task, "train", mirror)] == [
        "winogrande sentence: Al 0",
        "winogrande sentence: Al 1",
        "winogrande sentence: Al 2",
    ]
    spec = RunSpec(model="tiny-llama", task="winogrande", data_dir=str(mirror))
    assert data_record(spec)["data_config"] == "winogrande_l"
    mixed = RunSpec(model="tiny-llama", task="winogrande_v1+rte_v1", data_dir=str(mirror))
    assert data_record(mixed)["data_config"] == "winogrande_v1=winogrande_l"
    codec = Codec(load_backbone("tiny-llama").tokenizer, False, 64, 8)
    key_on_l = task_cache.cache_key(on_l, "train", codec, None)
    # With both folders, the task's own configuration is read (and the tokenised cache is another entry).
    winogrande_mirror(mirror, "winogrande_xl", "Cy")
    assert DataSource.of(task, mirror).config == "winogrande_xl" and "data_config" not in data_record(spec)
    assert load_examples(task, "validation", mirror)[0]["inputs"].startswith("winogrande sentence: Cy 0")
    assert task_cache.cache_key(DataSource.of(task, mirror), "train", codec, None) != key_on_l
    assert DataSource.of(get_task("rte_v1"), mirror).config == "rte"  # without fallbacks: its own, present or not
    with pytest.raises(ValueError, match="fallback_configs must be a tuple"):
        dataclasses.replace(task, fallback_configs="winogrande_l")


def test_hub_and_mirror_give_the_same_examples_and_export_round_trips(data_dir, tmp_path):
    task = hub_shaped(tmp_path, data_dir, "rte_v1")
    for role in ("train", "validation"):
        from_hub = load_examples(task, role, None)
        assert from_hub == load_examples(get_task("rte_v1"), role, data_dir)[:40]
        assert len(from_hub) == 40
    files, missing = export_task(task, tmp_path / "out")  # from the (local) hub into the mirror layout
    assert missing == [] and [f.split for f in files] == ["train", "validation"] and files[0].rows == 40
    assert load_examples(task, "validation", tmp_path / "out") == load_examples(task, "validation", None)
    update_manifest(tmp_path / "out", files)
    manifest = json.loads((tmp_path / "out" / "MANIFEST.json").read_text())
    assert [f["split"] for f in manifest["files"]] == ["train", "validation"]
    assert manifest["files"][0]["sha256"] == files[0].sha256


def test_export_from_a_mirror_links_its_files_and_reports_what_it_lacks(data_dir, tmp_path):
    files, missing = export_task(get_task("mnli_v1"), tmp_path, data_dir)
    assert [f.split for f in files] == ["train"] and missing == ["validation_matched"]
    linked = DataSource.of(get_task("mnli_v1"), tmp_path).file("train")
    assert linked.is_symlink() and files[0].rows == 9999 and files[0].completeness == "sample"
    assert DataSource.of(get_task("mnli_v1"), tmp_path).availability == "carve-out"


def test_missing_data_names_the_task_the_path_and_both_remedies(tmp_path):
    with pytest.raises(
        TaskDataError,
        match=r"'cb_v1': no data for its 'train' split at .*aps__super_glue/cb/train"
        r".jsonl.*make data.*Hugging Face hub",
    ):
        load_examples(get_task("cb_v1"), "train", tmp_path)


def test_an_unreachable_hub_and_a_task_without_a_hub_copy_fail_with_remedies():
    offline = dataclasses.replace(get_task("rte_v1"), hub_id="no-such-org/no-such-dataset")
    with pytest.raises(TaskDataError, match=r"rte_v1.*could not load no-such-org/no-such-dataset.*make data"):
        load_examples(offline, "train", None)
    with pytest.raises(TaskDataError, match=r"cxc_v1.*no Hugging Face copy.*Crisscrossed-Captions/sts/train.jsonl"):
        load_examples(get_task("cxc_v1"), "train", None)


def test_tokenised_splits_are_cached_by_task_data_tokenizer_and_lengths(data_dir, tmp_path, monkeypatch):
    backbone = load_backbone("tiny-llama")
    codec = Codec(backbone.tokenizer, False, 64, 8)
    task = get_task("squad_v1")
    first = encoded_split(task, "validation", data_dir, codec, 20, tmp_path)
    expected = load_examples(task, "validation", data_dir, 20)
    assert [e.reference for e in first] == [e["references"] for e in expected] and len(first[0].reference) == 3
    monkeypatch.setattr(task_cache, "encode_examples", lambda *a: pytest.fail("tokenised again"))
    again = encoded_split(task, "validation", data_dir, codec, 20, tmp_path)
    assert again == first
    entries = lambda: sorted(p.name for p in (tmp_path / "tokenized" / "squad_v1").iterdir())  # noqa: E731
    assert len(entries()) == 1
    monkeypatch.undo()
    encoded_split(task, "validation", data_dir, Codec(backbone.tokenizer, False, 32, 8), 20, tmp_path)
    encoded_split(task, "validation", data_dir, codec, 10, tmp_path)
    assert len(entries()) == 3  # another max length, another row limit: new entries
    # Other data under the same path is another entry too (the key hashes the file's contents).
    mirror = tmp_path / "mirror"
    path = DataSource.of(task, mirror).file("validation")
    path.parent.mkdir(parents=True)
    path.write_text(DataSource.of(task, data_dir).file("validation").read_text().split("\n", 1)[0] + "\n")
    one = encoded_split(task, "validation", mirror, codec, 20, tmp_path)
    path.write_text(DataSource.of(task, data_dir).file("validation").read_text().split("\n", 2)[1] + "\n")
    other = encoded_split(task, "validation", mirror, codec, 20, tmp_path)
    assert one[0].reference != other[0].reference and len(entries()) == 5


def test_a_run_records_the_task_version_and_the_carve_out_it_used(data_dir, tmp_path):
    spec = tiny_spec(data_dir, tmp_path, "cosmos_qa", init="class_labels")
    tracker = MemoryTracker()
    result = tune_prompt(spec, tmp_path / "run", tracker)
    assert result["final/step"] == 2
    assert tracker.params["task_version"] == "cosmos_qa_v1"
    assert tracker.params["train_split"] == "validation[:50%]"
    assert tracker.params["validation_split"] == "validation[50%:]"
    assert tracker.params["data_source"] == f"mirror {data_dir}"


def test_the_coverage_table_lists_every_task_with_its_offline_status(data_dir):
    from spot_core.tasks.coverage import task_row

    doc = (REPO / "docs" / "tasks.md").read_text()
    for name in task_names():
        assert f"| `{name}` |" in doc, f"docs/tasks.md lacks {name}: run `make docs`"
    row = task_row(get_task("rte_v1"), data_dir)
    assert row["offline here"] == "official splits" and row["mirror rows"].startswith("train 2,490 (train)")
    assert row["example (first mirror row)"].startswith("`rte sentence1: No Weapons of Mass Destruction Found")
    assert (
        task_row(get_task("mnli_v1"), data_dir)["mirror rows"]
        == "train 8,999 (train[:90%]); validation 1,000 (train[90%:])"
    )
    assert task_row(get_task("doc_nli_v1"), data_dir)["offline here"] == "missing"


def test_a_mixture_trains_on_capped_examples_of_each_task_and_scores_their_mean(data_dir, tmp_path):
    from spot_core.evaluation import MixtureData, TaskData
    from spot_core.tuning import prepare

    spec = tiny_spec(data_dir, tmp_path, "glue", max_train_examples=6, max_eval_examples=4)
    _, data = prepare(spec)
    assert isinstance(data, MixtureData) and [p.name for p in data.parts] == list(get_mixture("glue_v1").tasks)
    assert len(data.train) == 8 * 6 and len(data.validation) == 8 * 4
    capped = MixtureData(dataclasses.replace(data.mixture, cap=2), data.parts)
    assert len(capped.train) == 16 and capped.train[2] is data.parts[1].train[0]
    # training draws each task at its Mixture.rates: a task under the cap and one over it
    pair = [data.parts[0], dataclasses.replace(data.parts[1], train=data.parts[1].train[:3])]
    mixed = MixtureData(Mixture("pair_v1", tuple(p.name for p in pair), cap=5), pair)
    owner = {id(ex): p.name for p in pair for ex in p.train}
    drawn = {p.name: sum(owner[id(ex)] == p.name for ex in mixed.train) / len(mixed.train) for p in pair}
    rates = mixed.mixture.rates({p.name: len(p.train) for p in pair})
    assert drawn == rates == {pair[0].name: 5 / 8, pair[1].name: 3 / 8}
    tracker = MemoryTracker()
    result = tune_prompt(spec, tmp_path / "run", tracker)
    step, last = [(s, m) for s, m in tracker.metrics if "val/score" in m][-1]
    scores = [last[f"val/{task}/score"] for task in get_mixture("glue_v1").tasks]
    assert step == 2 and last["val/score"] == pytest.approx(sum(scores) / 8) == result["final/val_score"]
    assert tracker.params["task"] == "glue_v1" and tracker.params["train_split"].startswith("cola_v1=train; ")
    assert "mnli_v1=train[90%:]" in tracker.params["validation_split"]
    assert isinstance(data.parts[0], TaskData)
