"""GLUE, SuperGLUE, NLI, sentiment, C4 and CxC tasks: formats on real mirror rows (or hand-written hub rows where the
mirror lacks the task), and carve-out splits. Scores and bad input: test_task_scores.py."""

import pytest
from conftest import mirror_rows

from spot_core.tasks import DataSource, get_task, load_examples, read_rows


# --- formats ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "line", "inputs", "targets"),
    [
        (
            "cola_v1",
            0,
            "cola sentence: Our friends won't buy this analysis, let alone the next one we propose.",
            "acceptable",
        ),
        ("sst2_v1", 0, "sst2 sentence: hide new secretions from the parental units ", "negative"),
        (
            "mrpc_v1",
            0,
            'mrpc sentence1: Amrozi accused his brother , whom he called " the witness " , of deliberately distorting '
            'his evidence . sentence2: Referring to him as only " the witness " , Amrozi accused his brother of '
            "deliberately distorting his evidence .",
            "equivalent",
        ),
        (
            "qqp_v1",
            0,
            "qqp question1: How do I get inside University College London being an Indian? question2: Which is better, "
            "masters in computer science at Arizona State University or University College London for a foreigner "
            "(Indian National)?",
            "not_duplicate",
        ),
        ("stsb_v1", 1, "stsb sentence1: A man is playing a large flute. sentence2: A man is playing a flute.", "3.8"),
        (
            "mnli_v1",
            0,
            "mnli hypothesis: We are especially sad this year because we lost a lot of people. premise: Our hearts are "
            "particularly heavy this year as we look back at those we've lost, the Globe writes lovingly.",
            "entailment",
        ),
        (
            "qnli_v1",
            0,
            "qnli question: What sector has expanded radiply by selling outsourcing services to North America and "
            "Europe? sentence: The IT sector has been stimulated by new Egyptian entrepreneurs with government "
            "encouragement.[citation needed]",
            "not_entailment",
        ),
        (
            "rte_v1",
            0,
            "rte sentence1: No Weapons of Mass Destruction Found in Iraq Yet. "
            "sentence2: Weapons of Mass Destruction Found in Iraq.",
            "not_entailment",
        ),
        (
            "cb_v1",
            0,
            "cb hypothesis: the language was peeled down premise: It was a complex language. Not written down but "
            "handed down. One might say it was peeled down.",
            "entailment",
        ),
        (
            "copa_v1",
            0,
            "copa choice1: The sun was rising. choice2: The grass was cut. premise: My body cast a shadow over the "
            "grass. question: cause",
            "choice1",
        ),
        (
            "wic_v1",
            0,
            "wic sentence1: Do you want to come over to my place later? sentence2: A political system with no place "
            "for the less prominent groups. word: place",
            "False",
        ),
        (
            "snli_v1",
            0,
            "snli hypothesis: Two people leave a cave premise: Two people lower themselves into a cave with long "
            "ropes.",
            "contradiction",
        ),
        ("cr_v1", 0, "cr text: it has many great features and very few bad ones .", "positive"),
    ],
)
def test_real_rows(data_dir, name, line, inputs, targets):
    task = get_task(name)
    assert task.preprocess(mirror_rows(task, data_dir)[line]) == {"inputs": inputs, "targets": targets}


@pytest.mark.parametrize(
    ("line", "inputs", "referent", "label"),
    [
        (0, "wsc: Mark told Pete many lies about himself, which Pete included in his book. * He * should have been "
         "more skeptical.", "Mark", False),
        (4, "wsc: I poured water from the bottle into the cup until * it * was full.", "the cup", True),
        (7, "wsc: Pam's parents came home and found her having sex with her boyfriend, Paul. * They * were furious "
         "about it.", "Pam's parents", True),
    ],
)  # fmt: skip
def test_wsc_real_rows_mark_the_pronoun(data_dir, line, inputs, referent, label):
    task = get_task("wsc_v1")
    assert task.preprocess(mirror_rows(task, data_dir)[line]) == {
        "inputs": inputs,
        "targets": referent,
        "references": {"referent": referent, "label": label},
    }


def test_wsc_marks_the_nearest_occurrence_when_the_index_is_off(data_dir):
    task = get_task("wsc_v1")
    row = mirror_rows(task, data_dir, "validation")[42]
    assert row["text"].split(" ")[row["span2_index"]] == "use"  # the mirror's index is one word early
    assert "Some day they might want to use * it * , but really" in task.preprocess(row)["inputs"]


@pytest.mark.parametrize(
    ("name", "split", "line", "start", "end", "targets", "references"),
    [
        (
            "boolq_v1",
            "train",
            0,
            "boolq passage: The People's Court -- The losing party does not actually need to pay the judgment, as "
            "such. Instead",
            " question: do litigants on people's court get paid",
            "True",
            None,
        ),
        (
            "multirc_v1",
            "train",
            2,
            "multirc question: What did the high-level effort to persuade Pakistan include? answer: Asking Pakistan "
            "to help the USA paragraph: While this process moved along, diplomacy continued its rounds. Direct",
            None,
            "True",
            {"label": "True", "group": "0-0"},
        ),
        (
            "record_v1",
            "train",
            0,
            "record query: 'They assessed Maria as being at high risk of death or serious harm from @placeholder. "
            "entities: Chivers, Essex, Essex Police, Great Baddow, Marc Chivers, Maria Stubbings, Stubbings "
            "passage: Police took away a mother's panic alarm in a 'huge catalogue' of failings",
            " Essex Coroner  is sending a report about the case to the Government",
            "Chivers",
            ["Chivers", "Marc Chivers"],
        ),
        (
            "c4_v1",
            "train",
            0,
            "c4 text: Beginners BBQ Class Taking Place in Missoula! Do you want to get better at making delicious "
            "BBQ? You",
            None,
            "will have the opportunity, put this on your calendar now. Thursday, September 22nd join World Class BBQ "
            "Champion, Tony Balay from Lonestar Smoke Rangers. He will be teaching a beginner level class",
            [
                "will have the opportunity, put this on your calendar now. Thursday, September 22nd join World Class "
                "BBQ Champion, Tony Balay from Lonestar Smoke Rangers. He will be teaching a beginner level class"
            ],
        ),
    ],
)
def test_long_real_rows(data_dir, name, split, line, start, end, targets, references):
    task = get_task(name)
    ex = task.preprocess(mirror_rows(task, data_dir, split)[line])
    assert ex["inputs"].startswith(start)
    assert ex["inputs"].endswith(end or "")
    assert (ex["targets"], ex.get("references")) == (targets, references)


def test_record_highlights_become_sentences(data_dir):
    task = get_task("record_v1")
    inputs = task.preprocess(mirror_rows(task, data_dir)[0])["inputs"]
    assert "@highlight" not in inputs
    assert (
        "in December 2008. Marc Chivers used a dog lead to murder Maria Stubbings at her home. He had already been "
        "convicted of killing another former partner in 1992. Police gave" in inputs
    )
    row = {
        "passage": 'He said "stop."\n@highlight\nWas it late?\n@highlight\nNo\n@highlight\nMaybe',
        "query": "@placeholder left.",
        "entities": ["Tom", "Ann", "Tom", "Bo"],
        "answers": ["Tom", "Tom"],
    }
    assert task.preprocess(row) == {
        "inputs": 'record query: @placeholder left. entities: Ann, Bo, Tom passage: He said "stop." Was it late? No. '
        "Maybe",
        "targets": "Tom",
        "references": ["Tom", "Tom"],
    }


def test_multirc_removes_markup():
    row = {
        "paragraph": "<b>Sent 1: </b>Tom ran.<br><b>Sent 2: </b>He won.<br>",
        "question": "Did <b>Tom</b> win?",
        "answer": "yes",
        "idx": {"paragraph": 3, "question": 7, "answer": 0},
        "label": 1,
    }
    assert get_task("multirc_v1").preprocess(row) == {
        "inputs": "multirc question: Did Tom win? answer: yes paragraph: Sent 1: Tom ran. Sent 2: He won. ",
        "targets": "True",
        "references": {"label": "True", "group": "3-7"},
    }


def test_c4_cut_is_deterministic_and_splits_consecutive_words(data_dir):
    task = get_task("c4_v1")
    rows = mirror_rows(task, data_dir)
    for row in rows:
        ex = task.preprocess(row)
        assert ex == task.preprocess(dict(row))
        prefix, target = ex["inputs"].removeprefix("c4 text: ").split(), ex["targets"].split()
        assert 1 <= len(prefix) <= 96 and 1 <= len(target) <= 32
        assert row["text"].split()[: len(prefix) + len(target)] == prefix + target
    assert task.preprocess({"text": "  lonely\n"}) is None


@pytest.mark.parametrize(
    ("name", "row", "inputs", "targets"),
    [
        (
            "anli_v1",
            {"uid": "a1", "premise": "A cat sat.", "hypothesis": "An animal sat.", "label": 0, "reason": ""},
            "anli hypothesis: An animal sat. premise: A cat sat.",
            "entailment",
        ),
        (
            "anli_v1",
            {"premise": "A cat sat.", "hypothesis": "A dog sat.", "label": 2},
            "anli hypothesis: A dog sat. premise: A cat sat.",
            "contradiction",
        ),
        (
            "doc_nli_v1",
            {"premise": "Long document.", "hypothesis": "Short claim.", "label": "not_entailment"},
            "doc_nli hypothesis: Short claim. premise: Long document.",
            "not_entailment",
        ),
        (
            "yelp_polarity_v1",
            {"text": "Great tacos, rude staff.", "label": 1},
            "yelp_polarity text: Great tacos, rude staff.",
            "positive",
        ),
        (
            "goemotions_v1",
            {"text": "Thanks, I love it!", "labels": [18, 15, 18], "id": "ed00q6i"},
            "goemotions text: Thanks, I love it!",
            "gratitude, love",
        ),
        ("goemotions_v1", {"text": "ok", "labels": [27], "id": "x"}, "goemotions text: ok", "neutral"),
        (
            "sentiment140_v1",
            {"text": "@bob so sad :(", "date": "Mon Apr 06", "user": "amy", "sentiment": 0, "query": "NO_QUERY"},
            "sentiment140 text: @bob so sad :(",
            "negative",
        ),
        ("sentiment140_v1", {"text": "yay", "sentiment": 4}, "sentiment140 text: yay", "positive"),
        (
            "cxc_v1",
            {"sentence1": "A dog runs.", "sentence2": "A puppy is running.", "label": 3.85},
            "cxc sentence1: A dog runs. sentence2: A puppy is running.",
            "3.8",
        ),
    ],
)
def test_hub_rows_of_tasks_the_mirror_lacks(name, row, inputs, targets):
    assert get_task(name).preprocess(row) == {"inputs": inputs, "targets": targets}


# --- splits ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "key"), [("mnli_v1", "premise"), ("qqp_v1", "question1"), ("snli_v1", "premise")])
def test_carve_outs_split_the_train_file_90_10(data_dir, name, key):
    task = get_task(name)
    source = DataSource.of(task, data_dir)
    assert (source.splits["train"], source.splits["validation"]) == ("train[:90%]", "train[90%:]")
    file = [row[key] for row in mirror_rows(task, data_dir)]
    train, val = (list(read_rows(source, role)[key]) for role in ("train", "validation"))
    cut = round(0.9 * len(file))
    assert (train, val) == (file[:cut], file[cut:])  # consecutive positions: disjoint, adding up to the file
    assert len(load_examples(task, "train", data_dir)) + len(load_examples(task, "validation", data_dir)) == len(file)


def test_c4_carve_out(data_dir):
    task = get_task("c4_v1")
    file = [row["url"] for row in mirror_rows(task, data_dir)]
    train, val = (list(read_rows(DataSource.of(task, data_dir), role)["url"]) for role in ("train", "validation"))
    assert (len(train), len(val)) == (900, 100)
    assert train + val == file and not set(train) & set(val)


def test_record_carve_out_then_one_training_example_per_answer(data_dir):
    task = get_task("record_v1")
    source = DataSource.of(task, data_dir)
    assert source.splits == {"train": "train[:32]", "validation": "train[32:]"}
    rows = mirror_rows(task, data_dir)
    assert [len(read_rows(source, role)) for role in ("train", "validation")] == [32, 32]
    train = load_examples(task, "train", data_dir)
    assert len(train) == sum(len(set(row["answers"])) for row in rows[:32])
    assert [ex["targets"] for ex in train[:2]] == ["Chivers", "Marc Chivers"]
    assert len(load_examples(task, "validation", data_dir)) == 32
    example = {"inputs": "q", "targets": "Tom", "references": ["Tom", "Ann", "Tom"]}
    assert [ex["targets"] for ex in task.train_filter(example)] == ["Tom", "Ann"]


def test_wsc_trains_on_correct_referents_only(data_dir):
    task = get_task("wsc_v1")
    train = load_examples(task, "train", data_dir)
    assert len(train) == sum(row["label"] == 1 for row in mirror_rows(task, data_dir)) == 259
    assert all(ex["references"]["label"] for ex in train)
    val = load_examples(task, "validation", data_dir)
    assert len(val) == 104 and {ex["references"]["label"] for ex in val} == {True, False}


def test_snli_drops_pairs_without_a_gold_label():
    task = get_task("snli_v1")
    assert task.preprocess({"premise": "p", "hypothesis": "h", "label": -1}) is None
    assert task.preprocess({"premise": "p", "hypothesis": "h", "label": 1})["targets"] == "neutral"
