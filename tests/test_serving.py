"""Mixed-task prediction (spot_core.serving): a shared batch gives each row what scoring it alone gives, the prompt
cache keeps within its byte bound, and rows are checked field by field."""

import functools
import re

import pytest
import torch

from spot_core.backbones import load_backbone
from spot_core.encoding import Codec, Encoded
from spot_core.evaluation import predict as evaluate_predict
from spot_core.prompted import PromptedLM, PromptStates
from spot_core.prompts import SoftPrompt, random_uniform
from spot_core.scoring import label_scores
from spot_core.serving import Predictor, PromptCache, PromptSet, RequestError, TaskPrompt, size_of
from spot_core.tasks import get_task

WORDS = ["good", "great", "fine", "bad", "awful", "dull", "lovely", "poor", "grim", "warm", "odd", "kind"]
# (task, prompt seed, prompt length): two prompts of SST-2, prompts of two lengths, STS-B's 26 multi-token labels,
# and a generation task
PROMPTS = [("sst2_v1", 0, 4), ("sst2_v1", 1, 4), ("rte_v1", 2, 4), ("stsb_v1", 3, 4), ("rte_v1", 4, 6),
           ("squad_v1", 5, 4)]  # fmt: skip


def row(task: str, i: int) -> dict:
    w, v = WORDS[i % len(WORDS)], WORDS[(3 * i + 1) % len(WORDS)]
    pad = "very " * (i % 5)
    if task == "sst2_v1":
        return {"sentence": f"a {pad}{w} film"}
    if task == "squad_v1":
        return {"question": f"what is {w}?", "context": f"{w} is {pad}{v}."}
    return {"sentence1": f"the {w} cat is {pad}{v}", "sentence2": f"{v} cat"}


@functools.cache
def served_by(name: str):
    """A tiny model, its codec (128 input tokens) and the PROMPTS as a PromptSet."""
    backbone = load_backbone(name)
    codec = Codec(backbone.tokenizer, backbone.is_encoder_decoder, 128, 8)
    prompts = [
        TaskPrompt(f"{task}-{seed}", task, name,
                   random_uniform(length, backbone.hidden_size, 0.5, torch.Generator().manual_seed(seed)))
        for task, seed, length in PROMPTS
    ]  # fmt: skip
    return backbone, codec, PromptSet(name, prompts)


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-t5", "tiny-gemma3"])
def served(request):
    """What the model-dependent tests run on: each tiny family."""
    return served_by(request.param)


@pytest.fixture(scope="module")
def llama():
    """What the row checks run on: they read the tokenizer only."""
    return served_by("tiny-llama")


def mixed_rows(n: int = 30) -> list[dict]:
    """Rows of every prompt, interleaved, each naming its entry."""
    return [{"entry": f"{t}-{s}", **row(t, i), "id": i} for i in range(n) for t, s, _ in [PROMPTS[i % len(PROMPTS)]]]


def alone(backbone, codec, prompt: TaskPrompt, task, ids: list[int]):
    """What today's evaluation gives one row with its prompt alone: the prediction and (labels) the scores."""
    model = PromptedLM(backbone, SoftPrompt(prompt.prompt)).eval()
    pred = evaluate_predict(model, codec, task, [Encoded(ids, [], "")], batch_size=1)[0]
    if task.label_words is None:
        return pred, None
    labels = [codec.encode_target(w) for w in task.label_words]
    return pred, label_scores(model, [ids], labels)[0]


# prompt once (None: the model's default) and concatenated; T5 always concatenates
@pytest.mark.parametrize(
    "family, prompt_once",
    [("tiny-llama", None), ("tiny-llama", False), ("tiny-t5", None), ("tiny-gemma3", None), ("tiny-gemma3", False)],
)
def test_a_mixed_batch_gives_each_row_what_it_gets_alone(family, prompt_once):
    backbone, codec, prompts = served_by(family)
    predictor = Predictor(backbone, codec, batch_size=7, prompt_once=prompt_once)
    rows = mixed_rows()
    requests = [prompts.request(r, codec, f"row {i + 1}") for i, r in enumerate(rows)]
    out = predictor.predict(requests)
    assert [p.id for p in out] == [r["id"] for r in rows]  # in input order
    assert len({p.entry for p in out}) == len(PROMPTS)
    for r, p in zip(requests, out, strict=True):
        want, scores = alone(backbone, codec, r.prompt, r.task, r.input_ids)
        assert (p.entry, p.task) == (r.prompt.id, r.task.name)
        if scores is None:
            assert p.scores is None and p.prediction == want
            continue
        got = torch.tensor([p.scores[w] for w in r.task.label_words])
        torch.testing.assert_close(got, scores, rtol=1e-4, atol=1e-4)
        top = scores.topk(2).values
        if top[0] - top[1] > 1e-4:  # a near tie may go either way under float rounding
            assert p.prediction == want


def test_rows_naming_a_task_get_its_best_prompt(llama):
    backbone, codec, _ = llama
    g = torch.Generator().manual_seed(0)
    worse = TaskPrompt("a", "sst2_v1", "m", random_uniform(4, backbone.hidden_size, 0.5, g), score=60.0)
    better = TaskPrompt("b", "sst2_v1", "m", random_uniform(4, backbone.hidden_size, 0.5, g), score=80.0)
    prompts = PromptSet("m", [worse, better])
    assert prompts.request({"task": "sst2", "sentence": "fine"}, codec, "row 1").prompt.id == "b"
    transfer = prompts.request({"entry": "a", "task": "rte", "sentence1": "x", "sentence2": "y"}, codec, "row 2")
    assert (transfer.prompt.id, transfer.task.name) == ("a", "rte_v1")  # a prompt on another task


@pytest.mark.parametrize(
    "row, field, says",
    [
        ({"sentence": "fine"}, "entry", "names no entry and no task"),
        ({"entry": "nope", "sentence": "x"}, "entry", "no entry 'nope'"),
        ({"entry": "other", "sentence": "x"}, "entry", "a prompt for model gemma"),
        ({"task": "mnli", "premise": "x", "hypothesis": "y"}, "task", "no prompt of task 'mnli_v1'"),
        ({"task": "rtee", "sentence1": "x"}, "task", "unknown task"),
        ({"entry": "sst2_v1-0", "task": "glue_v1", "sentence": "x"}, "task", "name one of its tasks"),
        ({"entry": "rte_v1-2", "sentence1": "x"}, "sentence2", "lacks field 'sentence2'"),
        ({"entry": "rte_v1-2", "sentence1": "x", "sentence2": 3}, "sentence2", "is 3 (an integer)"),
        ({"entry": 7, "sentence": "x"}, "entry", "must be a string"),
        ({"entry": "sst2_v1-0", "inputs": "word " * 200}, "inputs", "over the limit of 128"),
    ],
)
def test_a_bad_row_is_refused_naming_its_field(llama, row, field, says):
    backbone, codec, prompts = llama
    prompts = PromptSet(prompts.model, list(prompts.prompts.values()), {"other": "gemma"})
    with pytest.raises(RequestError, match=re.escape(says)) as caught:
        prompts.request(row, codec, "row 3")
    assert caught.value.field == field
    assert str(caught.value).startswith("row 3")


def test_labels_are_not_needed_and_inputs_are_the_tasks_format(llama):
    backbone, codec, prompts = llama
    full = {"sentence1": "a b", "sentence2": "c", "label": 1}
    task = get_task("rte_v1")
    with_label = prompts.request({"entry": "rte_v1-2", **full}, codec, "row 1")
    without = prompts.request({"entry": "rte_v1-2", "sentence1": "a b", "sentence2": "c"}, codec, "row 1")
    assert with_label.input_ids == without.input_ids == codec.input_ids(task.preprocess(full)["inputs"])
    text = prompts.request({"entry": "rte_v1-2", "inputs": "rte sentence1: a b sentence2: c"}, codec, "row 1")
    assert text.input_ids == without.input_ids


def states(n: int, length: int = 2) -> PromptStates:
    """Prompt states of `n` float32 values per layer tensor (2 layers, keys and values): 16n bytes."""
    t = [torch.zeros(1, 1, length, n // length) for _ in range(2)]
    return PromptStates(length, t, [x.clone() for x in t], torch.float32)


def test_the_prompt_cache_keeps_within_its_bound_least_recently_used_out():
    cache = PromptCache(max_bytes=3 * 16 * 10)  # three prompts of 160 bytes
    computed = []

    def get(key):
        return cache.get(key, lambda: computed.append(key) or states(10))

    assert size_of(states(10)) == 160
    for key in "abc":
        get(key)
    get("a")  # a is now the most recent: b is the least
    get("d")
    assert cache.keys() == ["c", "a", "d"] and cache.bytes == 480
    get("b")  # computed again, evicting c
    assert computed == ["a", "b", "c", "d", "b"]
    assert cache.keys() == ["a", "d", "b"] and cache.bytes <= cache.max_bytes
    assert (cache.stats.hits, cache.stats.misses, cache.stats.evictions) == (1, 5, 2)
    big = cache.get("huge", lambda: states(100))  # larger than the bound: served, not kept
    assert size_of(big) == 1600 and "huge" not in cache and cache.bytes == 480


def test_the_predictor_computes_each_prompts_states_once_while_they_fit(served):
    backbone, codec, prompts = served
    predictor = Predictor(backbone, codec, batch_size=4)
    requests = [prompts.request(r, codec, "row") for r in mixed_rows(24)]
    predictor.predict(requests)
    predictor.predict(requests)
    stats = predictor.cache.stats
    assert stats.misses == len(PROMPTS) and stats.evictions == 0 and stats.hits > 0
    one = size_of(predictor.states(prompts.prompts["rte_v1-2"]))
    small = Predictor(backbone, codec, batch_size=4, cache_bytes=2 * one)
    first = small.predict(requests)
    assert small.cache.bytes <= 2 * one and small.cache.stats.evictions > 0
    assert [p.prediction for p in first] == [p.prediction for p in predictor.predict(requests)]


def test_a_batch_that_runs_out_of_gpu_memory_is_taken_again_in_halves(served, monkeypatch):
    from spot_core.serving import engine

    backbone, codec, prompts = served
    requests = [prompts.request(r, codec, "row") for r in mixed_rows(12) if "question" not in r]
    expected = Predictor(backbone, codec, batch_size=8).predict(requests)
    real, sizes = engine.label_scores_per_row, []

    def fits_three(model, inputs, *args):
        sizes.append(len(inputs))
        if len(inputs) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, inputs, *args)

    monkeypatch.setattr(engine, "label_scores_per_row", fits_three)
    predictor = Predictor(backbone, codec, batch_size=8)
    got = predictor.predict(requests)
    scores = [torch.tensor(list(p.scores.values())) for p in (*got, *expected)]
    torch.testing.assert_close(scores[: len(got)], scores[len(got) :], rtol=1e-4, atol=1e-4)
    assert sizes[:2] == [8, 4] and max(sizes[2:]) <= 2 and predictor.batch_size == 2
