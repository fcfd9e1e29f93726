"""GLUE, SuperGLUE, NLI, sentiment, C4 and CxC tasks: scores (perfect, partial, WSC's referent rules) and bad input
(hidden or unknown labels, missing fields)."""

import json
import re

import pytest
from conftest import mirror_rows

from spot_core.tasks import DataSource, TaskDataError, get_task, load_examples
from spot_core.tasks.superglue import names_referent

# --- scores ----------------------------------------------------------------------------------------------
CLOSED = (
    "cola_v1 sst2_v1 mrpc_v1 qqp_v1 stsb_v1 mnli_v1 qnli_v1 rte_v1 boolq_v1 cb_v1 copa_v1 wic_v1 multirc_v1 "
    "snli_v1 anli_v1 doc_nli_v1 cr_v1 yelp_polarity_v1 sentiment140_v1 cxc_v1"
).split()


@pytest.mark.parametrize("name", CLOSED)
def test_perfect_predictions_score_100(name):
    task = get_task(name)
    words = list(task.label_words)
    references = [{"label": w, "group": f"g{w}"} for w in words] if name == "multirc_v1" else words
    scores = task.score(references, [f" {w}\n" for w in words])
    assert scores == pytest.approx(dict.fromkeys(scores, 100.0))


def test_cb_scores_mean_multiclass_f1_and_accuracy():
    targets = ["entailment", "contradiction", "neutral", "neutral"]
    # per class F1: entailment 2/3 (tp 1, 2 predicted), contradiction 1, neutral 2/3 (tp 1, 2 true)
    scores = get_task("cb_v1").score(targets, ["entailment", "contradiction", "neutral", "entailment"])
    assert scores == pytest.approx({"mean_multiclass_f1": 100 * 7 / 9, "accuracy": 75.0, "score": (700 / 9 + 75) / 2})


def test_multirc_exact_match_over_question_groups():
    labels = ["True", "False", "True", "True", "False"]
    references = [{"label": label, "group": group} for label, group in zip(labels, "aabbb", strict=True)]
    # group a all right, group b one answer wrong: EM 1/2; answer F1: tp 2, 2 predicted, 3 true -> 0.8
    scores = get_task("multirc_v1").score(references, ["True", "False", "True", "False", "False"])
    assert scores == pytest.approx({"exact_match": 50.0, "f1a": 80.0, "score": 65.0})


@pytest.mark.parametrize(
    ("prediction", "referent", "expected"),
    [
        ("the cup", "cup", True),
        ("Cup", "the cup", True),
        ("gentleman", "the young gentleman", True),
        ("the young gentleman in the hedge", "young gentleman", True),
        ("his parents", "Pam's parents", False),
        ("Pam's parents", "Pam's parents", True),
        ("Pam", "Pam's parents", False),
        ("the bottle", "the cup", False),
    ],
)
def test_wsc_names_referent(prediction, referent, expected):
    assert names_referent(prediction, referent) is expected


@pytest.mark.parametrize(
    ("predictions", "accuracy"),
    [(["cup", "the cup"], 100.0), (["the bottle", "bottle"], 0.0), (["the cup", "Bottle"], 50.0)],
)
def test_wsc_accuracy_counts_a_false_referent_right_when_not_named(predictions, accuracy):
    references = [{"referent": "the cup", "label": True}, {"referent": "the bottle", "label": False}]
    assert get_task("wsc_v1").score(references, predictions) == {"accuracy": accuracy, "score": accuracy}


def test_wsc_empty_prediction_is_wrong_for_either_label():
    # T5's wsc_simple scores an empty prediction -1, wrong for either label.
    references = [{"referent": "the bottle", "label": False}, {"referent": "the bottle", "label": True}]
    assert get_task("wsc_v1").score(references, ["", "the"])["accuracy"] == 0.0


@pytest.mark.parametrize(
    ("text", "index", "expected"),
    [
        ("Tom hid in the hedge and he cried.", 4, "Tom hid in the hedge and * he * cried."),  # not inside "hedge"
        ("Tom  met Bob and he smiled.", 4, "Tom  met Bob and * he * smiled."),  # a double space
        ("Tom met Bob and he, smiling, left.", 4, "Tom met Bob and * he *, smiling, left."),
    ],
)
def test_wsc_marks_the_whole_word_nearest_to_its_index(text, index, expected):
    from spot_core.tasks.superglue import _mark_span

    assert _mark_span(text, "he", index) == expected


def test_goemotions_set_accuracy_ignores_order():
    task = get_task("goemotions_v1")
    assert task.score(["joy, love", "anger"], ["love,joy", "anger"])["accuracy"] == 100.0
    assert task.score(["joy, love", "anger"], ["love", "anger"])["accuracy"] == 50.0


def test_record_and_c4_score_against_every_reference():
    assert get_task("record_v1").score([["Chivers", "Marc Chivers"]], ["Marc Chivers"])["score"] == 100.0
    assert get_task("c4_v1").score([["will have the"]], ["will have the"])["score"] == 100.0


# --- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cola_v1", "sst2_v1", "stsb_v1", "boolq_v1", "cb_v1", "copa_v1", "wic_v1", "wsc_v1"])
def test_hidden_test_labels_of_real_rows_are_errors(data_dir, name):
    task = get_task(name)
    with pytest.raises(ValueError, match="hidden"):
        task.preprocess(mirror_rows(task, data_dir, "test")[0])


@pytest.mark.parametrize(
    ("name", "row", "message"),
    [
        ("mnli_v1", {"premise": "p", "hypothesis": "h", "label": -1}, "hidden"),
        ("anli_v1", {"premise": "p", "hypothesis": "h", "label": -1}, "hidden"),
        ("multirc_v1", {"paragraph": "p", "question": "q", "answer": "a", "idx": {}, "label": -1}, "hidden"),
        ("record_v1", {"passage": "p", "query": "q", "entities": ["e"], "answers": []}, "hidden"),
        ("rte_v1", {"sentence1": "a", "sentence2": "b", "label": 2}, "label is 2, outside 0..1"),
        ("copa_v1", {"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 2}, "outside"),
        ("anli_v1", {"premise": "p", "hypothesis": "h", "label": 3}, "label is 3, outside 0..2"),
        ("doc_nli_v1", {"premise": "p", "hypothesis": "h", "label": "neutral"}, "label is 'neutral', not one of"),
        ("goemotions_v1", {"text": "t", "labels": [28]}, r"labels are \[28\], outside 0..27"),
        ("goemotions_v1", {"text": "t", "labels": []}, "no labels"),
        ("sentiment140_v1", {"text": "t", "sentiment": 2}, "sentiment is 2, not 0"),
        ("cxc_v1", {"sentence1": "a", "sentence2": "b", "label": -1.0}, "hidden"),
    ],
)
def test_hidden_or_unknown_labels_of_hand_written_rows_are_errors(name, row, message):
    with pytest.raises(ValueError, match=message):
        get_task(name).preprocess(row)


@pytest.mark.parametrize(
    ("name", "row", "field"),
    [
        ("mnli_v1", {"premise": "p", "label": 0, "idx": 0}, "hypothesis"),
        ("boolq_v1", {"passage": "p", "label": 1, "idx": 0}, "question"),
        ("multirc_v1", {"paragraph": "p", "question": "q", "idx": {"paragraph": 0}, "label": 0}, "answer"),
        ("record_v1", {"passage": "p", "query": "q", "answers": ["e"]}, "entities"),
        ("wsc_v1", {"text": "He ran.", "span1_text": "Tom", "span2_index": 0, "label": 1}, "span2_text"),
        ("snli_v1", {"premise": "p", "label": 0}, "hypothesis"),
        ("c4_v1", {"url": "u"}, "text"),
        ("cxc_v1", {"sentence1": "a", "label": 1.0}, "sentence2"),
    ],
)
def test_missing_field_names_task_file_and_field(tmp_path, name, row, field):
    task = get_task(name)
    path = DataSource.of(task, tmp_path).file("train")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(TaskDataError) as error:
        load_examples(task, "train", tmp_path)
    message = str(error.value)
    assert re.search(rf"'{name}'.*{re.escape(str(path))}.*lacks field '{field}'", message), message
