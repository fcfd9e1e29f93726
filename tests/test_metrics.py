"""Metric functions against answers worked out by hand."""

import math

import pytest

from spot_core.metrics import f1, matthews_corr, mean_multiclass_f1, multirc, normalize_answer, squad


@pytest.mark.parametrize(
    ("targets", "preds", "expected"),
    [
        # tp=3 fn=1 fp=1 tn=2: (3*2 - 1*1) / sqrt(4*4*3*3) = 5/12
        (list("1111000"), list("1110100"), 100 * 5 / 12),
        # n=6, correct=4, true counts a3 b2 c1, predicted a2 b2 c2:
        # (4*6 - (3*2+2*2+1*2)) / sqrt((36 - (9+4+1)) * (36 - (4+4+4))) = 12 / sqrt(22*24)
        (list("aaabbc"), list("aabbcc"), 100 * 12 / math.sqrt(528)),
        (list("abcab"), list("abcab"), 100.0),
        (list("1100"), list("0011"), -100.0),
        # constant predictions or constant targets: undefined, reported as 0
        (list("1100"), list("1111"), 0.0),
        (list("1111"), list("1100"), 0.0),
    ],
)
def test_matthews_corr(targets, preds, expected):
    assert matthews_corr(targets, preds)["matthews_corr"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("targets", "preds", "expected"),
    [
        # tp=2, 3 predicted, 3 true: P = R = 2/3
        (["T", "T", "T", "F", "F"], ["T", "T", "F", "T", "F"], 100 * 2 / 3),
        # tp=1, 1 predicted, 3 true: P=1, R=1/3 -> 2 * (1/3) / (4/3) = 0.5
        (["T", "T", "T", "F"], ["T", "F", "F", "F"], 50.0),
        # an unparsed prediction is a negative: tp=1, 1 predicted, 2 true -> 2/3
        (["T", "T", "F"], ["T", "maybe", "maybe"], 100 * 2 / 3),
        (["F", "F"], ["F", "F"], 0.0),
        (["T", "F"], ["F", "T"], 0.0),
    ],
)
def test_f1(targets, preds, expected):
    assert f1(targets, preds, positive="T")["f1"] == pytest.approx(expected)


CB = ["entailment", "contradiction", "neutral"]


@pytest.mark.parametrize(
    ("targets", "preds", "expected"),
    [
        # entailment: tp=2, 2 predicted, 3 true -> 4/5; contradiction: tp=1, 2 predicted, 2 true -> 1/2;
        # neutral: tp=1, 1 predicted, 1 true -> 1; "maybe" counts for no class. (0.8 + 0.5 + 1) / 3
        (
            ["entailment", "entailment", "entailment", "contradiction", "contradiction", "neutral"],
            ["entailment", "entailment", "contradiction", "contradiction", "maybe", "neutral"],
            100 * 2.3 / 3,
        ),
        # neutral never occurs: it scores 0 and still counts in the mean -> (1 + 1 + 0) / 3
        (["entailment", "contradiction"], ["entailment", "contradiction"], 100 * 2 / 3),
    ],
)
def test_mean_multiclass_f1(targets, preds, expected):
    assert mean_multiclass_f1(targets, preds, CB)["mean_multiclass_f1"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Cat!", "cat"),
        ("an apple, a pear", "apple pear"),
        ("  Hello,\tWorld  ", "hello world"),
        ("theater banana", "theater banana"),  # articles only as whole words
        ("A.B.C", "abc"),  # punctuation goes first, so the joined "abc" is no article
        ("the-end", "theend"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("answers", "preds", "em", "f1_"),
    [
        # pred tokens big red dog (3), gold red dog (2), 2 shared: P=2/3, R=1 -> 0.8
        ([["red dog"]], ["the big red dog"], 0.0, 80.0),
        # best gold per metric: "cat" -> 2*1/(2+1) = 2/3, "big red cat" -> 2*2/(2+3) = 0.8
        ([["cat", "big red cat"]], ["red cat"], 0.0, 80.0),
        # Counter overlap: "dog" is shared once, not three times -> 2*1/(3+1)
        ([["dog"]], ["dog dog dog"], 0.0, 50.0),
        # both normalise to "": exact match, but no common token so F1 = 0 (official script)
        ([["The"]], ["the"], 100.0, 0.0),
        # per example (em, f1): (1, 1) via the second gold, (0, 0.8), (0, 0)
        (
            [["red dog", "The big red dog."], ["red dog"], ["Paris"]],
            ["big red dog", "the big red dog", "London"],
            100 / 3,
            100 * 1.8 / 3,
        ),
    ],
)
def test_squad(answers, preds, em, f1_):
    assert squad(answers, preds) == pytest.approx({"em": em, "f1": f1_})


def test_multirc():
    groups = ["q1", "q2", "q1", "q2", "q1"]
    targets = ["True", "False", "False", "True", "True"]
    preds = ["True", "True", "False", "True", "True"]
    # q1 all right, q2 wrong on its first answer -> 1/2 groups;
    # tp=3, 4 predicted True, 3 true True -> 2*3 / (4+3)
    assert multirc(targets, preds, groups) == pytest.approx({"exact_match": 50.0, "f1a": 100 * 6 / 7})
    assert multirc(["1", "0"], ["1", "0"], ["q", "q"], positive="1") == {"exact_match": 100.0, "f1a": 100.0}


def test_multirc_rejects_groups_of_wrong_length():
    with pytest.raises(ValueError):
        multirc(["True", "False"], ["True", "False"], ["q1"])


@pytest.mark.parametrize(
    ("metric", "keys"),
    [
        (lambda: matthews_corr([], []), {"matthews_corr"}),
        (lambda: f1([], [], positive="T"), {"f1"}),
        (lambda: mean_multiclass_f1([], [], CB), {"mean_multiclass_f1"}),
        (lambda: squad([], []), {"em", "f1"}),
        (lambda: multirc([], [], []), {"exact_match", "f1a"}),
    ],
)
def test_empty_input_gives_nan(metric, keys):
    result = metric()
    assert set(result) == keys
    assert all(math.isnan(v) for v in result.values())
