"""The engine's first tasks on real mirror rows, and metrics with known answers."""

import pytest

from spot_core.metrics import accuracy, pearson_spearman, task_score
from spot_core.tasks import DataSource, TaskDataError, get_task, load_examples
from spot_core.tasks.glue import stsb_target


def test_real_rows_preprocess_to_the_t5_formats(data_dir):
    sst2 = load_examples(get_task("sst2_v1"), "validation", data_dir)[0]
    assert sst2 == {"inputs": "sst2 sentence: it 's a charming and often affecting journey . ", "targets": "positive"}
    rte = load_examples(get_task("rte_v1"), "train", data_dir)[0]
    assert rte["inputs"].startswith("rte sentence1: No Weapons of Mass Destruction Found in Iraq Yet. sentence2: ")
    assert rte["targets"] == "not_entailment"
    stsb = load_examples(get_task("stsb_v1"), "train", data_dir)[:2]
    assert [e["targets"] for e in stsb] == ["5.0", "3.8"]


@pytest.mark.parametrize(("score", "target"), [(0.0, "0.0"), (1.85, "1.8"), (1.95, "2.0"), (3.75, "3.8"), (5.0, "5.0")])
def test_stsb_rounds_to_the_nearest_fifth(score, target):
    assert stsb_target(score) == target


def test_label_outside_the_label_set_is_an_error(tmp_path):
    task = get_task("sst2_v1")
    path = DataSource.of(task, tmp_path).file("train")
    path.parent.mkdir(parents=True)
    path.write_text('{"sentence": "x", "label": 7, "idx": 0}\n')
    with pytest.raises(TaskDataError, match=r"sst2_v1.*line 1 of .*train.jsonl: field 'label' is 7, outside 0..1"):
        load_examples(task, "train", tmp_path)
    path.write_text('{"text": "x", "label": 1, "idx": 0}\n')
    with pytest.raises(TaskDataError, match=r"sst2_v1.*line 1 of .*train.jsonl lacks field 'sentence'"):
        load_examples(task, "train", tmp_path)


@pytest.mark.parametrize(
    ("targets", "preds", "expected"),
    [
        (["a", "b", "a", "a"], ["a", "b", "b", "a"], {"accuracy": 75.0}),
        (["1.0", "2.0", "3.0"], ["1.0", "2.0", "3.0"], {"pearson": 100.0, "spearman": 100.0}),
        (["1.0", "2.0", "3.0"], ["3.0", "2.0", "1.0"], {"pearson": -100.0, "spearman": -100.0}),
        (["1.0", "2.0", "3.0", "4.0"], ["1.0", "4.0", "9.0", "16.0"], {"pearson": 98.4374, "spearman": 100.0}),
    ],
)
def test_metrics_table(targets, preds, expected):
    fn = accuracy if "accuracy" in expected else pearson_spearman
    assert fn(targets, preds) == pytest.approx(expected, abs=1e-3)
    assert task_score(expected) == pytest.approx(sum(expected.values()) / len(expected))
