"""Summarization and GEM (SPoT's summarization and GEM mixtures): rows in each hub dataset's schema, read from a
mirror written here, become T5-format examples; ROUGE by rouge_score with T5's settings against values worked out
by hand; Newsroom, whose data needs a manual download, stops in one line that says how to get it, before anything
is downloaded. Offline: the rows are made up, in the hubs' field layouts."""

import json

import pytest

from spot_core.metrics import named_metric, rouge
from spot_core.tasks import DataSource, Task, TaskDataError, check_data, get, get_task, load_examples
from spot_core.tasks.coverage import task_row

DOC = "The council approved the new park on Monday. Work starts in May."

# task -> (a hub row, the example it becomes)
ROWS = {
    "aeslc_v1": (
        {"email_body": "Please send me the Q3 numbers before the call.\n", "subject_line": "Q3 numbers"},
        ("summarize: Please send me the Q3 numbers before the call.\n", "Q3 numbers"),
    ),
    "cnn_dailymail_v1": (
        {"article": DOC, "highlights": "Council approves park .\nWork starts in May .", "id": "0a1b"},
        (f"summarize: {DOC}", "Council approves park .\nWork starts in May ."),
    ),
    "gigaword_v1": (
        {"document": "the council approved a new park on monday", "summary": "council approves park"},
        ("summarize: the council approved a new park on monday", "council approves park"),
    ),
    "multi_news_v1": (
        {"document": "First report. ||||| Second report.", "summary": "– Two reports agree."},
        ("summarize: First report. ||||| Second report.", "– Two reports agree."),
    ),
    "newsroom_v1": (
        {"text": DOC, "summary": "A park is coming.", "title": "Park", "url": "http://example.com/park",
         "date": "20160601", "density_bin": "abstractive", "coverage_bin": "low", "compression_bin": "high",
         "density": 1.2, "coverage": 0.5, "compression": 12.0},
        (f"summarize: {DOC}", "A park is coming."),
    ),
    "samsum_v1": (
        {"id": "1", "dialogue": "Ann: Lunch?\r\nBen: Sure, at 1.", "summary": "Ann and Ben will have lunch at 1."},
        ("summarize: Ann: Lunch?\r\nBen: Sure, at 1.", "Ann and Ben will have lunch at 1."),
    ),
    "xsum_v1": (
        {"document": DOC, "summary": "A new park gets the go-ahead.", "id": "3001"},
        (f"summarize: {DOC}", "A new park gets the go-ahead."),
    ),
    "wiki_lingua_v1": (
        {"gem_id": "wl-en-1", "gem_parent_id": "wl-en-1", "source_aligned": {"en": "Boil water."},
         "target_aligned": {"en": "Boil."}, "source": "Boil water. Add the pasta.", "target": "Boil, then add pasta.",
         "references": ["Boil, then add pasta."]},
        ("summarize: Boil water. Add the pasta.", "Boil, then add pasta."),
    ),
    "common_gen_v1": (
        {"gem_id": "cg-1", "gem_parent_id": "cg-1", "concept_set_id": 0, "concepts": ["dog", "frisbee", "catch"],
         "target": "The dog jumps to catch the frisbee.", "references": []},
        ("common_gen concepts: dog frisbee catch", "The dog jumps to catch the frisbee."),
    ),
    "dart_v1": (
        {"gem_id": "d-1", "gem_parent_id": "d-1", "dart_id": 0,
         "tripleset": [["Blue Cafe", "food", "Italian"], ["Blue Cafe", "area", "city centre"]],
         "subtree_was_extended": False, "target_sources": ["e2e"], "target": "Blue Cafe serves Italian food.",
         "references": []},
        ("dart triples: Blue Cafe | food | Italian; Blue Cafe | area | city centre", "Blue Cafe serves Italian food."),
    ),
    "e2e_nlg_v1": (
        {"gem_id": "e-1", "gem_parent_id": "e-1", "meaning_representation": "name[Blue Cafe], eatType[pub]",
         "target": "Blue Cafe is a pub.", "references": []},
        ("e2e_nlg meaning_representation: name[Blue Cafe], eatType[pub]", "Blue Cafe is a pub."),
    ),
    "schema_guided_dialog_v1": (
        # acts as ClassLabel indices: 11 OFFER, 13 REQUEST, 3 GOODBYE
        {"gem_id": "s-1", "gem_parent_id": "s-1",
         "dialog_acts": [{"act": 11, "slot": "restaurant_name", "values": ["Sakana", "Koi"]},
                         {"act": 13, "slot": "date", "values": []}, {"act": 3, "slot": "", "values": []}],
         "context": ["I want sushi."], "dialog_id": "1_0001", "service": "Restaurants_1", "turn_id": 1,
         "prompt": "I want sushi.", "target": "How about Sakana or Koi? Which day? Bye.", "references": []},
        ("schema_guided_dialog acts: OFFER(restaurant_name=Sakana|Koi) REQUEST(date) GOODBYE prompt: I want sushi.",
         "How about Sakana or Koi? Which day? Bye."),
    ),
    "web_nlg_v1": (
        {"gem_id": "w-1", "gem_parent_id": "w-1", "input": ["Ada | birthPlace | London", "Ada | field | Maths"],
         "target": "Ada, born in London, worked in maths.", "references": [], "category": "Scientist",
         "webnlg_id": "Id1"},
        ("web_nlg triples: Ada | birthPlace | London; Ada | field | Maths", "Ada, born in London, worked in maths."),
    ),
    "wiki_auto_v1": (
        {"gem_id": "a-1", "gem_parent_id": "a-1", "source": "The feline, which was hungry, consumed its meal.",
         "target": "The hungry cat ate.", "references": []},
        ("wiki_auto source: The feline, which was hungry, consumed its meal.", "The hungry cat ate."),
    ),
    "gem_xsum_v1": (
        {"gem_id": "x-1", "gem_parent_id": "x-1", "xsum_id": "3001", "document": DOC,
         "target": "A new park gets the go-ahead.", "references": ["A new park gets the go-ahead."]},
        (f"summarize: {DOC}", "A new park gets the go-ahead."),
    ),
}  # fmt: skip
SUMMARIZATION = (
    "newsroom_v1", "aeslc_v1", "billsum_v1", "cnn_dailymail_v1", "wiki_lingua_v1", "gigaword_v1", "multi_news_v1",
    "samsum_v1", "xsum_v1",
)  # fmt: skip
GEM = (
    "common_gen_v1", "dart_v1", "e2e_nlg_v1", "schema_guided_dialog_v1", "web_nlg_v1", "wiki_auto_v1", "gem_xsum_v1",
    "wiki_lingua_v1",
)  # fmt: skip


def mirror(tmp_path, task: Task, splits: dict[str, list[dict]]):
    """Writes rows as a mirror's split files of `task` (where a DataSource of `tmp_path` reads them)."""
    source = DataSource.at(task, tmp_path, task.hub_config)
    for split, rows in splits.items():
        path = source.file(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return tmp_path


@pytest.mark.parametrize("name", sorted(ROWS))
def test_a_hub_row_read_from_a_mirror_becomes_its_example(tmp_path, name):
    task = get_task(name)
    row, (inputs, targets) = ROWS[name]
    data_dir = mirror(tmp_path, task, {"train": [row], "validation": [row]})
    examples = load_examples(task, "validation", data_dir)  # every field the task reads is checked on the way
    assert examples == [{"inputs": inputs, "targets": targets}]
    assert task.label_words is None and task.max_target_tokens >= 32  # generated, and room for a summary


def test_billsum_validation_is_the_last_twentieth_of_train(tmp_path):
    task = get_task("billsum_v1")
    rows = [{"text": f"SECTION 1. Bill {i}.", "summary": f"Summary {i}.", "title": f"Act {i}"} for i in range(20)]
    data_dir = mirror(tmp_path, task, {"train": rows})
    assert [ex["targets"] for ex in load_examples(task, "validation", data_dir)] == ["Summary 19."]
    train = load_examples(task, "train", data_dir)
    assert len(train) == 19 and train[0] == {"inputs": "summarize: SECTION 1. Bill 0.", "targets": "Summary 0."}


def test_rows_without_a_document_or_a_target_are_dropped(tmp_path):
    xsum, dart = get_task("xsum_v1"), get_task("dart_v1")
    assert xsum.preprocess({"document": "  ", "summary": "s", "id": "1"}) is None
    assert xsum.preprocess({"document": "d", "summary": "", "id": "1"}) is None
    dart_row = {**ROWS["dart_v1"][0], "target": ""}  # a DART test row: no annotation
    assert dart.preprocess(dart_row) is None


@pytest.mark.parametrize(
    "name, field, bad",
    [
        ("dart_v1", "tripleset", {"tripleset": "Blue Cafe | food | Italian"}),
        ("schema_guided_dialog_v1", "dialog_acts", {"dialog_acts": "OFFER"}),
        ("common_gen_v1", "concepts", {"concepts": "dog frisbee"}),
    ],
)
def test_a_malformed_structured_input_names_the_task_line_and_field(tmp_path, name, field, bad):
    task = get_task(name)
    data_dir = mirror(tmp_path, task, {"train": [ROWS[name][0]], "validation": [{**ROWS[name][0], **bad}]})
    with pytest.raises(TaskDataError) as caught:
        load_examples(task, "validation", data_dir)
    message = str(caught.value)
    assert name in message and "line 1 of" in message and field in message


def test_sgd_acts_stored_as_columns_read_the_same():
    task = get_task("schema_guided_dialog_v1")
    row, (inputs, _) = ROWS["schema_guided_dialog_v1"]
    acts = row["dialog_acts"]
    columns = {key: [act[key] for act in acts] for key in ("act", "slot", "values")}  # a Sequence feature's layout
    assert task.preprocess({**row, "dialog_acts": columns})["inputs"] == inputs


def test_the_hub_copies_read():
    """Script datasets read the hub's parquet export; GEM's tasks its GEM/gem configurations."""
    exported = {
        "gigaword_v1": ("Harvard/gigaword", "default"),
        "multi_news_v1": ("alexfabbri/multi_news", "default"),
        "samsum_v1": ("Samsung/samsum", "default"),
        "xsum_v1": ("EdinburghNLP/xsum", "default"),
        "wiki_lingua_v1": ("GEM/gem", "wiki_lingua_english_en"),
        "common_gen_v1": ("GEM/gem", "common_gen"),
        "dart_v1": ("GEM/gem", "dart"),
        "e2e_nlg_v1": ("GEM/gem", "e2e_nlg"),
        "schema_guided_dialog_v1": ("GEM/gem", "schema_guided_dialog"),
        "web_nlg_v1": ("GEM/gem", "web_nlg_en"),
        "wiki_auto_v1": ("GEM/gem", "wiki_auto_asset_turk"),
        "gem_xsum_v1": ("GEM/gem", "xsum"),
    }
    for name, (hub_id, folder) in exported.items():
        task = get_task(name)
        assert (task.hub_id, task.revision) == (hub_id, "refs/convert/parquet"), name
        assert task.hub_data_files == {s: f"{folder}/{s}/*.parquet" for s in ("train", "validation")}, name
        assert "refs/convert/parquet" in task.notes, name
    for name, hub_id, config in (
        ("aeslc_v1", "Yale-LILY/aeslc", None),
        ("billsum_v1", "FiscalNote/billsum", None),
        ("cnn_dailymail_v1", "abisee/cnn_dailymail", "3.0.0"),
    ):  # parquet on their main branch
        task = get_task(name)
        assert (task.hub_id, task.hub_config, task.revision, dict(task.hub_data_files)) == (hub_id, config, None, {})


def test_rouge_against_hand_worked_values():
    same = rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeLsum": 100.0})
    # 6 tokens each, 5 shared unigrams (the x2, cat, on, mat), 3 of 5 bigrams (the cat, on the, the mat), and a
    # longest common subsequence of 5 (the cat on the mat): F = P = R
    partial = rouge(["the cat sat on the mat"], ["the cat is on the mat"])
    assert partial == pytest.approx({"rouge1": 500 / 6, "rouge2": 60.0, "rougeLsum": 500 / 6})
    # per-example F-measures are averaged: "a b" against "a b c d" has unigram P 1, R 1/2, F 2/3 and bigram
    # P 1, R 1/3, F 1/2
    two = rouge(["a b c d", "x y"], ["a b", "x y"])
    assert two["rouge1"] == pytest.approx((200 / 3 + 100) / 2) and two["rouge2"] == pytest.approx((50 + 100) / 2)
    # ROUGE-Lsum: " . " ends a sentence (T5), so swapped sentences still match whole; no stemming (T5): cat != cats
    swapped = rouge(["a b . c d"], ["c d . a b"])
    assert swapped["rougeLsum"] == pytest.approx(100.0) and swapped["rouge2"] == pytest.approx(200 / 3)
    assert rouge(["cats"], ["cat"])["rouge1"] == 0.0
    assert named_metric("rouge") is rouge
    scored = get_task("xsum_v1").score(["A new park."], [" A new park. "])  # predictions are stripped
    assert scored["score"] == pytest.approx(100.0) and set(scored) == {"rouge1", "rouge2", "rougeLsum", "score"}


def test_gem_data_to_text_scores_by_bleu_and_summaries_by_rouge():
    summaries = {"gem_xsum_v1", "wiki_lingua_v1"}
    for name in GEM:
        keys = set(get_task(name).score(["a b c d e"], ["a b c d e"]))
        assert keys == ({"rouge1", "rouge2", "rougeLsum", "score"} if name in summaries else {"bleu", "score"}), name


def test_newsroom_asked_for_from_the_hub_stops_in_one_line_with_the_remedy(monkeypatch, tmp_path):
    import datasets

    def no_download(*args, **kwargs):
        raise AssertionError("nothing may be downloaded before the manual-download task is refused")

    monkeypatch.setattr(datasets, "load_dataset", no_download)
    # from the hub, or from a data directory without its files; a mixture before any other member, All too
    for name, data_dir in (("newsroom_v1", None), ("summarization_v1", None), ("all_v1", None), ("newsroom", tmp_path)):
        with pytest.raises(TaskDataError) as caught:
            check_data(name, data_dir)
        message = str(caught.value)
        assert "\n" not in message and message.startswith("task 'newsroom_v1' needs a manual download: ")
        assert "https://lil.nlp.cornell.edu/newsroom/" in message
        assert "<data_dir>/lil-lab__newsroom/default/" in message and "set data_dir" in message
    assert not get_task("newsroom_v1").on_hub
    assert task_row(get_task("newsroom_v1"), tmp_path)["hub"] == "manual download (`lil-lab/newsroom`)"
    assert task_row(get_task("xsum_v1"), tmp_path)["hub"] == "`EdinburghNLP/xsum`"
    with pytest.raises(ValueError, match="one line"):
        Task("x_v1", "a/b", None, {"train": "train", "validation": "validation"}, str, (), manual_download="a\nb")


def test_the_mixtures_resolve_to_their_members():
    assert get("summarization").name == "summarization_v1" and set(get("summarization_v1").tasks) == set(SUMMARIZATION)
    assert get("summarization_v1").tasks[0] == "newsroom_v1"  # checked first: see test above
    assert get("gem").name == "gem_v1" and set(get("gem_v1").tasks) == set(GEM)
    assert len(get("summarization_v1").tasks) == 9 and len(get("gem_v1").tasks) == 8
    for name in (*SUMMARIZATION, *GEM):
        assert get_task(name).name == name
