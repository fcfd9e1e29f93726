"""Data is checked, not guessed: a mirror row is read against the fields its task declares, and a bad one is an
error naming the task, the file, the line and the field (issue 14)."""

import json
from pathlib import Path

import pytest

from spot_core.tasks import DataSource, TaskDataError, check_data, get_task, load_examples, task_names

# --- data is checked, not guessed ----------------------------------------------------------------------------------
GOOD = '{"sentence": "a", "label": 1}\n'  # an SST-2 row


def mirror_file(tmp_path, text: str, task: str = "sst2_v1", split: str = "train") -> Path:
    """`text` as the task's `split` file in a mirror under tmp_path; the other split holds GOOD."""
    t = get_task(task)
    for name in ("train", "validation"):
        path = DataSource.of(t, tmp_path).file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text if name == split else GOOD)
    return DataSource.of(t, tmp_path).file(split)


FIX = "Fix or delete that line, or rebuild the mirror (make data)"


BAD_ROWS = [
    (GOOD + '{"sentence": "b", "label": 1\n', "line 2 of {path} is not valid JSON (Expecting ',' delimiter"),
    (GOOD + '\n{"text": "b", "label": 1}\n', "line 3 of {path} lacks field 'sentence' (the row has: text, label)"),
    ('{"sentence": "a", "label": "1"}\n', "line 1 of {path}: field 'label' is \"1\" (a string), but the task reads it"),
    ('{"sentence": 5, "label": 1}\n', "line 1 of {path}: field 'sentence' is 5 (an integer), but the task reads it"),
    ('{"sentence": null, "label": 1}\n', "line 1 of {path}: field 'sentence' is null; the task reads it as a string"),
    (GOOD + '{"sentence": "a", "label": 7}\n', "line 2 of {path}: field 'label' is 7, outside 0..1 (negative, pos"),
    ("[1, 2]\n", "line 1 of {path} holds [1, 2] (a list), not a JSON object (one row per line)"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_ROWS)
def test_a_bad_row_names_the_task_file_line_and_field(tmp_path, text, problem):
    path = mirror_file(tmp_path, text)
    with pytest.raises(TaskDataError) as caught:
        check_data("sst2", tmp_path)
    message = str(caught.value)
    assert message.startswith(f"task 'sst2_v1': {problem.format(path=path)}") and message.endswith(f". {FIX}")
    with pytest.raises(TaskDataError, match="^task 'sst2_v1': line"):  # reading the rows says the same
        load_examples(get_task("sst2"), "train", tmp_path)


def test_nested_fields_are_named_with_their_record(tmp_path):
    row = {"question": "q", "context": "c", "answers": {"answer_start": [0]}}
    path = mirror_file(tmp_path, json.dumps(row) + "\n", task="squad_v1")
    with pytest.raises(TaskDataError) as caught:
        load_examples(get_task("squad"), "train", tmp_path)
    assert f"line 1 of {path} lacks field 'answers.text' ('answers' has: answer_start)" in str(caught.value)


def test_blank_lines_are_skipped_and_lines_keep_their_numbers(tmp_path):
    rows = [{"sentence": f"s{i}", "label": i % 2} for i in range(3)]
    lines = [json.dumps(r) for r in rows]
    path = mirror_file(tmp_path, "\n" + lines[0] + "\n   \n" + lines[1] + "\n\n" + lines[2] + "\n\n")
    examples = load_examples(get_task("sst2"), "train", tmp_path)
    assert [e["inputs"] for e in examples] == ["sst2 sentence: s0", "sst2 sentence: s1", "sst2 sentence: s2"]
    path.write_text("\n" + lines[0] + "\n   \n" + '{"sentence": "x"}' + "\n")
    with pytest.raises(TaskDataError, match=f"line 4 of {path} lacks field 'label'"):
        load_examples(get_task("sst2"), "train", tmp_path)


def test_an_empty_split_is_an_error_before_any_model_loads(tmp_path):
    path = mirror_file(tmp_path, "\n\n")
    with pytest.raises(
        TaskDataError, match=rf"sst2_v1': no rows in its train split \('train' of {path}\)\. Point data_dir"
    ):
        check_data("sst2", tmp_path)


def test_check_data_reads_every_row_while_a_sample_reads_only_its_own(tmp_path):
    path = mirror_file(tmp_path, GOOD * 50 + '{"sentence": "a", "label": 9}\n')
    assert len(load_examples(get_task("sst2"), "train", tmp_path, limit=5)) == 5  # the bad row is not drawn
    with pytest.raises(TaskDataError, match=f"line 51 of {path}: field 'label' is 9"):
        check_data("sst2", tmp_path)


def test_a_split_found_good_is_not_read_again_until_its_file_changes(tmp_path, monkeypatch):
    from spot_core.tasks import loading

    path = mirror_file(tmp_path, GOOD * 3)
    mirror_file(tmp_path, GOOD, split="validation")
    reads = []
    real = loading.read_rows

    def counted(source, role):
        reads.append(role)
        return real(source, role)

    monkeypatch.setattr(loading, "read_rows", counted)
    check_data("sst2", tmp_path)
    check_data("sst2", tmp_path)  # the entry point checked; prepare checks again: nothing is read twice
    assert reads == ["train", "validation"]
    path.write_text(GOOD + '{"sentence": "a", "label": 9}\n')  # changed since: read and refused
    with pytest.raises(TaskDataError, match=f"line 2 of {path}: field 'label' is 9"):
        check_data("sst2", tmp_path)
    assert reads == ["train", "validation", "train"]


def tasks_in_mirror(data_dir: Path) -> list[str]:
    """The registered tasks whose train and validation splits the mirror holds; a skip, saying so, when it holds
    none (the checks below would pass having checked nothing)."""
    names = [n for n in task_names() if DataSource.of(get_task(n), data_dir).availability != "missing"]
    if not names:
        pytest.skip(f"the data mirror at {data_dir} holds no registered task's splits: nothing to check (make data)")
    return names


def test_every_mirror_row_has_the_fields_its_task_declares(data_dir):
    """The declarations (`Task.reads`) hold for the whole mirror: check_data reads every row of every split."""
    for name in tasks_in_mirror(data_dir):
        check_data(name, data_dir)


def test_a_task_reads_no_field_it_does_not_declare(data_dir):
    """A row cut down to the declared fields preprocesses as the whole row does."""
    for name in tasks_in_mirror(data_dir):
        task = get_task(name)
        source = DataSource.of(task, data_dir)
        row = json.loads(source.role_files("validation")[0].read_text().splitlines()[0])
        cut: dict = {}
        for field in task.reads:
            record, _, key = field.partition(".")
            if key:
                cut.setdefault(record, {})[key] = row[record][key]
            else:
                cut[record] = row[record]
        assert task.preprocess(cut) == task.preprocess(row), name


def test_rows_of_joined_files_keep_their_own_places(tmp_path):
    from spot_core.tasks.rows import Rows

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"i": 0}\n\n{"i": 1}\n')
    b.write_text('{"i": 2}\n{"i": 3}\n{"i": 4}\n')
    rows = Rows.concat([Rows.from_file(a), Rows.from_file(b)])
    assert len(rows) == 5 and rows["i"] == [0, 1, 2, 3, 4]
    picked = rows.select([1, 2, 4])
    assert [place for place, _ in picked.located()] == [f"line 3 of {a}", f"line 1 of {b}", f"line 3 of {b}"]
    assert picked["i"] == [1, 2, 4] and len(rows.select([])) == 0


def test_a_hub_row_is_named_by_its_split_and_row(tmp_path):
    import datasets

    from spot_core.tasks.loading import preprocess_rows
    from spot_core.tasks.rows import Rows

    hub = datasets.Dataset.from_list([{"sentence": "a", "label": 1}, {"sentence": None, "label": 0}])
    rows = Rows.from_dataset(hub, "hub nyu-mll/glue (sst2) split 'train'")
    with pytest.raises(TaskDataError) as caught:
        preprocess_rows(get_task("sst2"), rows, "train")
    assert str(caught.value) == (
        "task 'sst2_v1': row 2 of hub nyu-mll/glue (sst2) split 'train': field 'sentence' is null; the task reads it "
        "as a string. The hub's copy is not what the task reads: read the task from a mirror (data_dir=...)"
    )
