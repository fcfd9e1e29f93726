"""Extractive QA and multiple-choice tasks: formats on real mirror rows (or hand-written hub rows), labels, scores."""

import json

import pytest

import spot_core.tasks.multiple_choice
import spot_core.tasks.qa  # noqa: F401  (registrations)
from spot_core.tasks import DataSource, check_data, get_task, load_examples

SQUAD_CONTEXT_0 = (
    "Super Bowl 50 was an American football game to determine the champion of the National Football League (NFL) "
    "for the 2015 season."
)


def test_squad_real_rows_keep_every_gold_answer(data_dir):
    task = get_task("squad_v1")
    train = load_examples(task, "train", data_dir)[0]
    assert train["inputs"].startswith(
        "squad question: To whom did the Virgin Mary allegedly appear in 1858 in Lourdes France? "
        "context: Architecturally, the school has a Catholic character. "
    )
    assert train["inputs"].endswith("is a simple, modern stone statue of Mary.")
    assert (train["targets"], train["references"]) == ("Saint Bernadette Soubirous", ["Saint Bernadette Soubirous"])
    val = load_examples(task, "validation", data_dir)[0]
    assert val["inputs"].startswith(
        f"squad question: Which NFL team represented the AFC at Super Bowl 50? context: {SQUAD_CONTEXT_0} "
    )
    assert (val["targets"], val["references"]) == ("Denver Broncos", ["Denver Broncos"] * 3)


def test_drop_hub_row():
    row = {
        "section_id": "nfl_1184",
        "query_id": "q1",
        "passage": "The Raiders scored first with a 15-yard pass to Chaz Schilens.",
        "question": "Who caught the first touchdown?",
        "answers_spans": {"spans": ["Chaz Schilens", "Schilens"], "types": ["span", "span"]},
    }
    assert get_task("drop_v1").preprocess(row) == {
        "inputs": "drop question: Who caught the first touchdown? "
        "passage: The Raiders scored first with a 15-yard pass to Chaz Schilens.",
        "targets": "Chaz Schilens",
        "references": ["Chaz Schilens", "Schilens"],
    }
    with pytest.raises(ValueError, match="no gold answer"):
        get_task("drop_v1").preprocess({**row, "answers_spans": {"spans": [], "types": []}})


def test_squad_score_takes_the_best_gold_answer():
    task = get_task("squad_v1")
    references = [["Denver Broncos", "Broncos"], ["Carolina Panthers"]]
    perfect = task.score(references, ["Denver Broncos", "the Carolina Panthers."])
    assert perfect == {"em": 100.0, "f1": 100.0, "score": 100.0}
    # "Broncos" matches the second gold answer exactly; "Panthers" has token F1 2/3 with "Carolina Panthers".
    scores = task.score(references, [" Broncos", "Panthers"])
    assert scores["em"] == 50.0
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert scores["score"] == pytest.approx((50.0 + 100 * (1 + 2 / 3) / 2) / 2)


def test_cosmos_qa_real_row(data_dir):
    task = get_task("cosmos_qa_v1")
    path = DataSource.of(task, data_dir).file("validation")
    row = json.loads(path.read_text().splitlines()[0])
    ex = task.preprocess(row)
    assert ex["inputs"] == (
        f"cosmos_qa context: {row['context']} question: Why is this person asking about divorce ? "
        "answer0: If he gets married in the church he wo nt have to get a divorce . "
        "answer1: He wants to get married to a different person . "
        "answer2: He wants to know if he does nt like this girl can he divorce her ? "
        "answer3: None of the above choices ."
    )
    assert ex["targets"] == "answer1"


def test_cosmos_qa_carve_out_splits_the_mirror_validation_file_in_halves(data_dir):
    task = get_task("cosmos_qa_v1")
    assert DataSource.of(task, data_dir).splits == {"train": "validation[:50%]", "validation": "validation[50%:]"}
    assert DataSource.of(task, None).splits == {"train": "train", "validation": "validation"}
    n_rows = len(DataSource.of(task, data_dir).file("validation").read_text().splitlines())
    train = load_examples(task, "train", data_dir)
    val = load_examples(task, "validation", data_dir)
    assert len(train) + len(val) == n_rows
    assert abs(len(train) - len(val)) <= 1
    assert not {e["inputs"] for e in train} & {e["inputs"] for e in val}


def test_winogrande_hub_row():
    row = {"sentence": "Sarah was a better surgeon than Maria so _ got the harder cases.", "option1": "Sarah"}
    row |= {"option2": "Maria", "answer": "1"}
    assert get_task("winogrande_v1").preprocess(row) == {
        "inputs": "winogrande sentence: Sarah was a better surgeon than Maria so _ got the harder cases. "
        "option1: Sarah option2: Maria",
        "targets": "option1",
    }
    assert get_task("winogrande_v1").preprocess({**row, "answer": "2"})["targets"] == "option2"


def test_hellaswag_hub_row():
    row = {
        "ind": 4,
        "activity_label": "Removing ice from car",
        "ctx_a": "A man is standing next to a car.",
        "ctx_b": "he",
        "ctx": "A man is standing next to a car. he",
        "endings": ["scrapes the ice.", "eats a sandwich.", "sings.", "drives off."],
        "source_id": "activitynet~v_-1IBHYS3L-Y",
        "split": "train",
        "split_type": "indomain",
        "label": "0",
    }
    assert get_task("hellaswag_v1").preprocess(row) == {
        "inputs": "hellaswag context: A man is standing next to a car. he ending0: scrapes the ice. "
        "ending1: eats a sandwich. ending2: sings. ending3: drives off.",
        "targets": "ending0",
    }
    assert get_task("hellaswag_v1").preprocess({**row, "label": "3"})["targets"] == "ending3"


def hellaswag_rows(n: int, start: int = 0) -> str:
    """`n` HellaSwag rows as the mirror holds them (string labels, four endings), each with its own context."""
    rows = [
        {"activity_label": "a", "ctx": f"context {i}", "endings": ["w", "x", "y", "z"], "label": str(i % 4)}
        for i in range(start, start + n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_hellaswag_trains_on_the_first_half_of_a_validation_only_mirror(tmp_path):
    task = get_task("hellaswag_v1")
    path = DataSource.of(task, tmp_path).file("validation")
    path.parent.mkdir(parents=True)
    path.write_text(hellaswag_rows(10))
    source = DataSource.of(task, tmp_path)
    assert source.availability == "carve-out" and source.config is None
    train, val = load_examples(task, "train", tmp_path), load_examples(task, "validation", tmp_path)
    assert [e["inputs"].split(" ending0")[0] for e in train] == [f"hellaswag context: context {i}" for i in range(5)]
    assert [e["inputs"].split(" ending0")[0] for e in val] == [f"hellaswag context: context {i}" for i in range(5, 10)]
    assert [e["targets"] for e in val] == ["ending1", "ending2", "ending3", "ending0", "ending1"]
    # With a train split in the mirror, the official splits.
    DataSource.of(task, tmp_path).file("train").write_text(hellaswag_rows(3, start=100))
    assert DataSource.of(task, tmp_path).splits == {"train": "train", "validation": "validation"}
    assert len(load_examples(task, "train", tmp_path)) == 3 and len(load_examples(task, "validation", tmp_path)) == 10


def test_winogrande_and_hellaswag_run_from_the_offline_mirror(data_dir):
    """The shared mirror's WinoGrande L and HellaSwag validation parse whole; HellaSwag's halves are disjoint."""
    for name in ("winogrande_v1", "hellaswag_v1"):
        check_data(name, data_dir)
    winogrande = get_task("winogrande_v1")
    if not DataSource.at(winogrande, data_dir, winogrande.hub_config).file("train").is_file():
        assert DataSource.of(winogrande, data_dir).config == "winogrande_l"
        assert len(load_examples(winogrande, "train", data_dir)) == 10234
    task = get_task("hellaswag_v1")
    assert DataSource.of(task, data_dir).splits == {"train": "validation[:50%]", "validation": "validation[50%:]"}
    train, val = load_examples(task, "train", data_dir), load_examples(task, "validation", data_dir)
    assert len(train) == len(val) == 5021
    assert not {e["inputs"] for e in train} & {e["inputs"] for e in val}


def test_race_hub_row():
    row = {
        "example_id": "high132.txt",
        "article": "Tom lives in Paris.",
        "question": "Where does Tom live?",
        "options": ["London", "Paris", "Rome", "Berlin"],
        "answer": "B",
    }
    assert get_task("race_v1").preprocess(row) == {
        "inputs": "race article: Tom lives in Paris. question: Where does Tom live? "
        "options: (A) London (B) Paris (C) Rome (D) Berlin",
        "targets": "B",
    }
    assert set(get_task("race_v1").splits) == {"train", "validation", "test"}


@pytest.mark.parametrize(
    ("name", "row", "message"),
    [
        ("winogrande_v1", {"sentence": "_", "option1": "a", "option2": "b", "answer": ""}, "answer is '', .*hidden"),
        ("winogrande_v1", {"sentence": "_", "option1": "a", "option2": "b", "answer": "3"}, "answer is '3', .*hidden"),
        ("hellaswag_v1", {"ctx": "c", "endings": ["a", "b", "c", "d"], "label": ""}, "label is '', .*hidden"),
        ("hellaswag_v1", {"ctx": "c", "endings": ["a", "b", "c"], "label": "0"}, "endings has 3 options, not 4"),
        ("race_v1", {"article": "a", "question": "q", "options": ["a", "b", "c", "d"], "answer": "E"}, "answer is 'E'"),
        ("cosmos_qa_v1", {**{f"answer{i}": "x" for i in range(4)}, "context": "c", "question": "q", "label": -1}, "-1"),
    ],
)
def test_hidden_or_unknown_labels_are_errors(name, row, message):
    with pytest.raises(ValueError, match=message):
        get_task(name).preprocess(row)


@pytest.mark.parametrize("name", ["winogrande_v1", "hellaswag_v1", "cosmos_qa_v1", "race_v1"])
def test_multiple_choice_scores_accuracy_over_the_label_set(name):
    task = get_task(name)
    assert task.family == "multiple_choice"
    words = list(task.label_words)
    assert task.score(words, words) == {"accuracy": 100.0, "score": 100.0}
    assert task.score(words, [words[0]] * len(words))["score"] == pytest.approx(100 / len(words))


def test_families_and_hidden_test_splits():
    assert {get_task(n).family for n in ("squad_v1", "drop_v1")} == {"qa"}
    assert all(get_task(n).label_words is None and get_task(n).max_target_tokens == 32 for n in ("squad_v1", "drop_v1"))
    for name in ("winogrande_v1", "hellaswag_v1", "cosmos_qa_v1"):
        assert "test" not in get_task(name).splits
