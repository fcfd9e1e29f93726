"""WMT translation (SPoT's translation mixture): T5's formats on hub rows, and BLEU by sacrebleu with T5's settings
against values worked out by hand."""

import math

import pytest

from spot_core.metrics import bleu, named_metric
from spot_core.tasks import get, get_task

ROWS = {
    "wmt_en_de_v1": ({"translation": {"de": "Das ist gut.", "en": "That is good."}}, "German", "Das ist gut."),
    "wmt_en_fr_v1": ({"translation": {"en": "Thank you.", "fr": "Merci."}}, "French", "Merci."),
    "wmt_en_ro_v1": ({"translation": {"en": "Good morning.", "ro": "Bună dimineața."}}, "Romanian", "Bună dimineața."),
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_a_hub_row_in_t5s_format(name):
    row, language, target = ROWS[name]
    task = get_task(name)
    assert task.preprocess(row) == {
        "inputs": f"translate English to {language}: {row['translation']['en']}",
        "targets": target,
    }
    assert task.reads == {"translation.en": "text", f"translation.{name[7:9]}": "text"}  # checked on every row read
    assert task.hub_id in ("wmt/wmt14", "wmt/wmt16") and task.label_words is None  # generated, not classified


def test_bleu_against_hand_computed_values():
    reference = "the cat is on the mat"
    assert bleu([reference], [reference])["bleu"] == pytest.approx(100.0)
    # every n-gram of the shorter hypothesis is in the reference (precisions 1): BLEU is the brevity penalty
    # exp(1 - 6/5) for 5 hypothesis tokens against 6
    assert bleu([reference], ["the cat is on the"])["bleu"] == pytest.approx(100 * math.exp(1 - 6 / 5))
    assert named_metric("bleu") is bleu
    scored = get_task("wmt_en_de_v1").score(["Das ist gut."], [" Das ist gut. "])  # predictions are stripped
    assert scored["score"] == scored["bleu"] == pytest.approx(100.0)


def test_the_translation_mixture():
    assert get("translation").tasks == ("wmt_en_de_v1", "wmt_en_fr_v1", "wmt_en_ro_v1")
