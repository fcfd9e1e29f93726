"""SPoT's MRQA and RAINBOW mixtures (Table 1): their new tasks' formats on hand-written rows in the hub's schema,
their scores on hand-worked predictions, MRQA's subset filter over one shared dataset (a mirror's files and a
hub-shaped local repository), and both mixtures resolving to their members."""

import dataclasses
import json
import re

import datasets
import pytest

from spot_core.tasks import DataSource, Task, TaskDataError, check_data, get, get_task, load_examples, members
from spot_core.tasks.loading import read_examples, read_rows
from spot_core.tasks.qa import extractive

MRQA = {  # task -> the hub's `subset` value it reads
    "mrqa_squad_v1": "SQuAD",
    "mrqa_newsqa_v1": "NewsQA",
    "mrqa_triviaqa_v1": "TriviaQA-web",
    "mrqa_searchqa_v1": "SearchQA",
    "mrqa_hotpotqa_v1": "HotpotQA",
    "mrqa_natural_questions_v1": "NaturalQuestionsShort",
}
RAINBOW = ("alpha_nli_v1", "cosmos_qa_v1", "hellaswag_v1", "piqa_v1", "social_i_qa_v1", "winogrande_v1")


def mrqa_row(subset: str, question: str, context: str, answers: list[str], qid: str = "q") -> dict:
    """A row of mrqa-workshop/mrqa as the hub serves it (sequences of records as dicts of lists)."""
    words, start = context.split(), context.find(answers[0])
    return {
        "subset": subset,
        "context": context,
        "context_tokens": {"tokens": words, "offsets": [context.index(w) for w in words]},
        "qid": qid,
        "question": question,
        "question_tokens": {"tokens": question.split(), "offsets": [0] * len(question.split())},
        "detected_answers": {
            "text": answers[:1],
            "char_spans": [{"start": [start], "end": [start + len(answers[0]) - 1]}],  # inclusive, as MRQA's
            "token_spans": [{"start": [0], "end": [0]}],
        },
        "answers": answers,
    }


# --- MRQA ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MRQA))
def test_an_mrqa_hub_row_in_squads_format(name):
    task = get_task(name)
    row = mrqa_row(
        MRQA[name], "Where do the otters sleep?", "[PAR] The otters sleep in the reeds.", ["reeds", "the reeds"]
    )
    assert task.preprocess(row) == {
        "inputs": f"{name[:-3]} question: Where do the otters sleep? context: [PAR] The otters sleep in the reeds.",
        "targets": "reeds",
        "references": ["reeds", "the reeds"],
    }
    assert (task.hub_id, task.hub_config, task.row_filter) == (
        "mrqa-workshop/mrqa",
        "plain_text",
        {"subset": MRQA[name]},
    )
    assert dict(task.splits) == {"train": "train", "validation": "validation"} and task.label_words is None
    assert task.reads == {"question": "text", "context": "text", "answers": "texts"}
    with pytest.raises(ValueError, match="answers is empty: no gold answer"):
        task.preprocess({**row, "answers": []})


def test_mrqa_scores_squad_em_and_f1_against_every_gold_answer():
    task = get_task("mrqa_triviaqa_v1")
    references = [["Paris", "the city of Paris"], ["Hudson River"], ["42"]]
    # 1: "City of Paris." normalises to "city of paris", the second gold answer: EM and F1 1.
    # 2: "the Hudson" -> tokens [hudson] against [hudson, river]: precision 1, recall 1/2, F1 2/3; EM 0.
    # 3: "forty-two" shares no token with "42": 0 and 0.
    scores = task.score(references, ["City of Paris.", " the Hudson", "forty-two"])
    assert scores["em"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert scores["score"] == pytest.approx((scores["em"] + scores["f1"]) / 2)


MIXED = [  # a shared split: each task reads only the rows of its subset, in order
    ("SQuAD", "Who wrote it?", "It was written by Ada.", ["Ada"]),
    ("NewsQA", "What closed?", "The bridge closed on Monday.", ["The bridge"]),
    ("SearchQA", "Capital of Peru?", "[DOC] [TLE] Peru [SEP] Its capital is Lima.", ["Lima"]),
    ("NewsQA", "When did it close?", "The bridge closed on Monday.", ["on Monday", "Monday"]),
    ("NewsQA", "Who spoke?", "The mayor spoke first.", ["The mayor"]),
]


def mrqa_mirror(tmp_path, train: list[tuple] = MIXED) -> None:
    """A mirror under tmp_path holding the shared MRQA splits, as `make data` writes them (one folder for six tasks);
    validation holds MIXED."""
    for split, rows in (("train", train), ("validation", MIXED)):
        path = DataSource.of(get_task("mrqa_newsqa_v1"), tmp_path).file(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(mrqa_row(*r, qid=f"{split}{i}")) + "\n" for i, r in enumerate(rows)))


def test_an_mrqa_task_reads_only_its_subset_of_the_shared_mirror_split(tmp_path):
    mrqa_mirror(tmp_path)
    newsqa, searchqa = get_task("mrqa_newsqa_v1"), get_task("mrqa_searchqa_v1")
    assert DataSource.of(newsqa, tmp_path).file("train") == DataSource.of(searchqa, tmp_path).file("train")
    train = load_examples(newsqa, "train", tmp_path)
    assert [e["targets"] for e in train] == ["The bridge", "on Monday", "The mayor"]
    assert [e["references"] for e in load_examples(searchqa, "validation", tmp_path)] == [["Lima"]]
    assert len(read_rows(DataSource.of(newsqa, tmp_path), "train")) == 3
    for name in ("mrqa_squad_v1", "mrqa_newsqa_v1", "mrqa_searchqa_v1"):  # the subsets both splits hold
        check_data(name, tmp_path)
    # A split spec slices the rows kept.
    sliced = dataclasses.replace(newsqa, splits={"train": "train[1:]", "validation": "validation[:1]"})
    assert [e["targets"] for e in load_examples(sliced, "train", tmp_path)] == ["on Monday", "The mayor"]
    assert [e["targets"] for e in load_examples(sliced, "validation", tmp_path)] == ["The bridge"]


def test_a_row_limit_samples_the_subset_not_the_whole_split(tmp_path):
    mrqa_mirror(tmp_path, train=MIXED + [("SQuAD", f"Question {i}?", "Some context.", ["Some"]) for i in range(20)])
    sample = read_examples(DataSource.of(get_task("mrqa_newsqa_v1"), tmp_path), "train", limit=3)
    assert sorted(e["targets"] for e in sample) == ["The bridge", "The mayor", "on Monday"]


def test_a_bad_row_of_the_subset_is_named_by_its_line_in_the_whole_file(tmp_path):
    mrqa_mirror(tmp_path)
    path = DataSource.of(get_task("mrqa_newsqa_v1"), tmp_path).file("train")
    lines = path.read_text().splitlines()
    bad = json.loads(lines[3])
    bad["question"] = None
    path.write_text("\n".join([*lines[:3], json.dumps(bad), *lines[4:]]) + "\n")
    with pytest.raises(TaskDataError, match=f"line 4 of {path}: field 'question' is null"):
        load_examples(get_task("mrqa_newsqa_v1"), "train", tmp_path)
    assert len(load_examples(get_task("mrqa_squad_v1"), "train", tmp_path)) == 1  # other subsets are not read


def test_a_split_without_the_subset_or_without_the_field_is_an_error(tmp_path):
    mrqa_mirror(tmp_path)
    with pytest.raises(TaskDataError, match=r"none of the 5 rows of .*train.jsonl holds subset 'HotpotQA'"):
        load_examples(get_task("mrqa_hotpotqa_v1"), "train", tmp_path)
    path = DataSource.of(get_task("mrqa_newsqa_v1"), tmp_path).file("validation")
    path.write_text(path.read_text() + json.dumps({"question": "q", "context": "c", "answers": ["a"]}) + "\n")
    with pytest.raises(TaskDataError, match=f"line 6 of {path} lacks field 'subset'.*Fix or delete that line"):
        load_examples(get_task("mrqa_newsqa_v1"), "validation", tmp_path)


def test_an_mrqa_task_reads_its_subset_from_a_hub_shaped_repository(tmp_path):
    """The hub path: a local dataset repository laid out as on the hub (parquet + a README declaring the config)."""
    repo = tmp_path / "hub" / "mrqa"
    lines = ["---", "configs:", "- config_name: plain_text", "  data_files:"]
    for split in ("train", "validation"):
        rows = [mrqa_row(*r, qid=f"{split}{i}") for i, r in enumerate(MIXED)]
        if split == "validation":
            rows[1]["question"] = None  # row 2: NewsQA's first
        datasets.Dataset.from_list(rows).to_parquet(str(repo / "plain_text" / f"{split}-00000-of-00001.parquet"))
        lines += [f"  - split: {split}", f"    path: plain_text/{split}-*"]
    (repo / "README.md").write_text("\n".join([*lines, "---", ""]))
    task = dataclasses.replace(get_task("mrqa_newsqa_v1"), hub_id=str(repo))
    assert DataSource.of(task, None).from_hub
    assert [e["targets"] for e in load_examples(task, "train", None)] == ["The bridge", "on Monday", "The mayor"]
    with pytest.raises(TaskDataError, match=r"row 2 of hub .*split 'validation': field 'question' is null"):
        load_examples(task, "validation", None)
    searchqa = dataclasses.replace(get_task("mrqa_searchqa_v1"), hub_id=str(repo))
    assert [e["targets"] for e in load_examples(searchqa, "train", None)] == ["Lima"]


def test_a_row_filter_maps_field_names_to_strings():
    preprocess = extractive("x", ("question",), "answers")
    with pytest.raises(ValueError, match="row_filter must map field names to strings"):
        Task("x_v1", "h", None, {"train": "train", "validation": "validation"}, preprocess, (), row_filter={"a": 1})


# --- RAINBOW -------------------------------------------------------------------------------------------------------
ALPHA_NLI_ROW = {
    "observation_1": "Kim left her bike outside overnight.",
    "observation_2": "In the morning the bike was gone.",
    "hypothesis_1": "Kim painted the bike blue.",
    "hypothesis_2": "Someone took the unlocked bike.",
    "label": 2,
}
PIQA_ROW = {"goal": "Keep bread fresh longer.", "sol1": "Store it in a sealed bag.", "sol2": "Leave it in the sun."}
SOCIAL_I_QA_ROW = {
    "context": "Jordan lent Sam an umbrella before the storm.",
    "question": "How would Sam feel afterwards?",
    "answerA": "annoyed",
    "answerB": "grateful",
    "answerC": "sleepy",
    "label": "2",
}


def test_alpha_nli_hub_row():
    task = get_task("alpha_nli_v1")
    assert task.preprocess(ALPHA_NLI_ROW) == {
        "inputs": "alpha_nli observation_1: Kim left her bike outside overnight. "
        "observation_2: In the morning the bike was gone. hypothesis_1: Kim painted the bike blue. "
        "hypothesis_2: Someone took the unlocked bike.",
        "targets": "hypothesis_2",
    }
    assert task.preprocess({**ALPHA_NLI_ROW, "label": 1})["targets"] == "hypothesis_1"
    assert (task.hub_id, task.hub_config, task.revision) == ("allenai/art", "anli", None)
    assert get_task("anli_v1").hub_id == "facebook/anli"  # anli_v1 is Adversarial NLI, another task


def test_piqa_hub_row():
    task = get_task("piqa_v1")
    assert task.preprocess({**PIQA_ROW, "label": 0}) == {
        "inputs": "piqa goal: Keep bread fresh longer. sol1: Store it in a sealed bag. sol2: Leave it in the sun.",
        "targets": "sol1",
    }
    assert task.preprocess({**PIQA_ROW, "label": 1})["targets"] == "sol2"
    # The hub's main branch is a loading script that datasets >= 4 refuses; its Parquet conversion is read.
    assert (task.hub_id, task.hub_config, task.revision) == ("ybisk/piqa", None, "refs/convert/parquet")


def test_social_i_qa_hub_row():
    task = get_task("social_i_qa_v1")
    assert task.preprocess(SOCIAL_I_QA_ROW) == {
        "inputs": "social_i_qa context: Jordan lent Sam an umbrella before the storm. "
        "question: How would Sam feel afterwards? answerA: annoyed answerB: grateful answerC: sleepy",
        "targets": "answerB",
    }
    assert [task.preprocess({**SOCIAL_I_QA_ROW, "label": k})["targets"] for k in "13"] == ["answerA", "answerC"]
    assert (task.hub_id, task.hub_config, task.revision) == ("allenai/social_i_qa", None, "refs/convert/parquet")


@pytest.mark.parametrize(
    ("name", "row", "message"),
    [
        ("alpha_nli_v1", {**ALPHA_NLI_ROW, "label": 0}, r"label is 0, not one of \[1, 2\]"),
        ("piqa_v1", {**PIQA_ROW, "label": -1}, "label is -1, a hidden test label"),
        ("piqa_v1", {**PIQA_ROW, "label": 2}, "label is 2, outside 0..1"),
        ("social_i_qa_v1", {**SOCIAL_I_QA_ROW, "label": "4"}, r"label is '4', not one of \['1', '2', '3'\]"),
        ("social_i_qa_v1", {**SOCIAL_I_QA_ROW, "label": "1\n"}, re.escape("label is '1\\n', not one of")),
    ],
)
def test_unknown_or_hidden_labels_are_errors(name, row, message):
    with pytest.raises(ValueError, match=message):
        get_task(name).preprocess(row)


def test_a_rainbow_row_of_the_wrong_kind_is_a_data_error(tmp_path):
    task = get_task("social_i_qa_v1")
    for split in ("train", "validation"):
        path = DataSource.of(task, tmp_path).file(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(SOCIAL_I_QA_ROW) + "\n" + json.dumps({**SOCIAL_I_QA_ROW, "label": 2}) + "\n")
    path = DataSource.of(task, tmp_path).file("train")
    assert path.parent.name == "default"  # the hub's Parquet conversion has one `default` configuration
    with pytest.raises(TaskDataError, match=f"line 2 of {path}: field 'label' is 2 \\(an integer\\)"):
        check_data("social_i_qa", tmp_path)


@pytest.mark.parametrize(
    ("name", "targets", "predictions", "accuracy"),
    [
        # 2 of 4 right: a prediction is stripped before scoring; the other label and any other word are wrong.
        (
            "alpha_nli_v1",
            ["hypothesis_1", "hypothesis_2"] * 2,
            ["hypothesis_1", " hypothesis_2 ", "hypothesis_2", "x"],
            50,
        ),
        ("piqa_v1", ["sol1", "sol2", "sol2"], ["sol1", "sol1", "sol2"], 200 / 3),  # 2 of 3
        # 2 of 4: "C" is a letter, not the label word answerC.
        ("social_i_qa_v1", ["answerA", "answerB", "answerC", "answerC"], ["answerC", "answerB", "answerC", "C"], 50),
    ],
)
def test_rainbow_tasks_score_accuracy(name, targets, predictions, accuracy):
    task = get_task(name)
    assert task.family == "multiple_choice" and task.metrics[0].__name__ == "accuracy"
    scores = task.score(targets, predictions)
    assert scores["accuracy"] == pytest.approx(accuracy) and scores["score"] == pytest.approx(accuracy)
    assert task.score(list(task.label_words), list(task.label_words))["accuracy"] == 100.0


# --- the mixtures --------------------------------------------------------------------------------------------------
def test_the_mrqa_and_rainbow_mixtures_resolve_to_their_members():
    assert get("mrqa").name == "mrqa_v1" and get("rainbow").name == "rainbow_v1"
    assert get("mrqa").tasks == tuple(MRQA)
    assert {t.name: t.row_filter["subset"] for t in members("mrqa_v1")} == MRQA
    assert "squad_v1" not in get("mrqa").tasks  # MRQA's own SQuAD, not rajpurkar/squad
    assert get_task("squad_v1").hub_id == "rajpurkar/squad" and not get_task("squad_v1").row_filter
    assert get("rainbow").tasks == RAINBOW
    assert [t.name for t in members("rainbow")] == list(RAINBOW)
    assert {t.family for t in members("rainbow")} == {"multiple_choice"}
    assert {t.family for t in members("mrqa")} == {"qa"}
    sizes = dict.fromkeys(MRQA, 10) | {"mrqa_searchqa_v1": 2**20}  # the cap of 2^19 applies to each member
    assert get("mrqa").counts(sizes)["mrqa_searchqa_v1"] == 2**19
