"""Metric functions: (targets, predictions) -> {name: value in 0-100}, as T5's glue_utils and SQuAD's script."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

_PUNCTUATION = frozenset(string.punctuation)


def accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    t, p = np.asarray(targets, dtype=object), np.asarray(predictions, dtype=object)
    return {"accuracy": 100.0 * float(np.mean(t == p)) if len(t) else float("nan")}


def _floats(values: Sequence[str], default: float = -1.0) -> np.ndarray:
    """Numeric strings -> floats; an unparsable prediction becomes `default` (T5's string_to_float)."""

    def parse(v: str) -> float:
        try:
            return float(v)
        except ValueError:
            return default

    return np.asarray([parse(v) for v in values], dtype=np.float64)


def pearson_spearman(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Pearson and Spearman correlation x 100 of numeric strings (STS-B); constant input -> 0."""
    t, p = _floats(targets), _floats(predictions)
    if np.std(t) == 0 or np.std(p) == 0:
        return {"pearson": 0.0, "spearman": 0.0}
    spearman = pd.Series(t).rank().corr(pd.Series(p).rank())
    return {"pearson": 100.0 * float(np.corrcoef(t, p)[0, 1]), "spearman": 100.0 * float(spearman)}


def task_score(metrics: dict[str, float]) -> float:
    """A task's score: the mean of its metrics (SPoT / T5)."""
    return float(np.mean(list(metrics.values())))


def _f1(true_pos: int, n_pred: int, n_true: int) -> float:
    # 2PR / (P + R) == 2tp / (predicted + true); 0 when both are empty (sklearn's zero_division=0).
    return 2.0 * true_pos / (n_pred + n_true) if n_pred + n_true else 0.0


def matthews_corr(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Matthews correlation x 100, multi-class as sklearn's matthews_corrcoef; undefined (constant) -> 0."""
    n = len(targets)
    if not n:
        return {"matthews_corr": float("nan")}
    t, p = Counter(targets), Counter(predictions)
    correct = sum(a == b for a, b in zip(targets, predictions, strict=True))
    # Python ints: cov_tt * cov_pp grows as n^4 and would overflow int64 past n ~ 55k.
    cov_tp = correct * n - sum(t[k] * p[k] for k in t)
    cov_tt = n * n - sum(v * v for v in t.values())
    cov_pp = n * n - sum(v * v for v in p.values())
    if cov_tt == 0 or cov_pp == 0:
        return {"matthews_corr": 0.0}
    return {"matthews_corr": 100.0 * cov_tp / math.sqrt(cov_tt * cov_pp)}


def f1(targets: Sequence[str], predictions: Sequence[str], positive: str) -> dict[str, float]:
    """Binary F1 x 100 of the `positive` label; any other prediction counts as negative."""
    if not len(targets):
        return {"f1": float("nan")}
    true_pos = sum(a == b == positive for a, b in zip(targets, predictions, strict=True))
    return {"f1": 100.0 * _f1(true_pos, list(predictions).count(positive), list(targets).count(positive))}


def mean_multiclass_f1(targets: Sequence[str], predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Unweighted mean x 100 of each label's one-vs-rest F1 (CB); a prediction outside `labels` is always wrong."""
    if not len(targets):
        return {"mean_multiclass_f1": float("nan")}
    pairs = list(zip(targets, predictions, strict=True))
    t, p = Counter(targets), Counter(predictions)
    scores = [_f1(sum(a == b == label for a, b in pairs), p[label], t[label]) for label in labels]
    return {"mean_multiclass_f1": 100.0 * float(np.mean(scores))}


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _token_f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    # Counter intersection: a repeated token matches at most as often as it occurs in both.
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    return 2.0 * same / (len(pred_tokens) + len(gold_tokens)) if same else 0.0


def squad(answers: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
    """SQuAD v1.1 exact match and token F1 x 100, each the best over an example's gold answers."""
    if not len(answers):
        return {"em": float("nan"), "f1": float("nan")}
    pairs = list(zip(answers, predictions, strict=True))
    em = [max(normalize_answer(p) == normalize_answer(g) for g in golds) for golds, p in pairs]
    f1s = [max(_token_f1(p, g) for g in golds) for golds, p in pairs]
    return {"em": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f1s))}


def multirc(
    targets: Sequence[str], predictions: Sequence[str], groups: Sequence[str], positive: str = "True"
) -> dict[str, float]:
    """MultiRC as T5: exact match x 100 over question groups and F1 x 100 of `positive` over all answers."""
    if not len(targets):
        return {"exact_match": float("nan"), "f1a": float("nan")}
    # Indexing by group makes pandas reject a `groups` of the wrong length.
    correct = pd.Series([a == b for a, b in zip(targets, predictions, strict=True)], index=list(groups))
    exact_match = 100.0 * float(correct.groupby(level=0).all().mean())
    return {"exact_match": exact_match, "f1a": f1(targets, predictions, positive)["f1"]}


def bleu(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU by sacrebleu with T5's settings (t5.evaluation.metrics.bleu: exponential smoothing at 0,
    international tokenisation, case kept, no effective order), one reference per example, 0-100."""
    import sacrebleu  # only translation tasks score with it

    score = sacrebleu.corpus_bleu(
        list(predictions), [list(targets)], smooth_method="exp", smooth_value=0.0, force=False, lowercase=False,
        tokenize="intl", use_effective_order=False,
    )  # fmt: skip
    return {"bleu": float(score.score)}


ROUGE_KEYS = ("rouge1", "rouge2", "rougeLsum")


def rouge(targets: Sequence[str], predictions: Sequence[str], use_stemmer: bool = False) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-Lsum F-measure x 100 (rouge_score), with T5's settings
    (t5.evaluation.metrics.rouge): the package's tokeniser (lower-cased runs of letters and digits), no stemming,
    and for ROUGE-Lsum one sentence per line, a " . " also ending one. Each is the mean over examples; T5 reports
    the median of a bootstrap over that mean instead (random, and the same value up to its resampling noise)."""
    from rouge_score import rouge_scorer  # only generation tasks score with it

    if not len(targets):
        return dict.fromkeys(ROUGE_KEYS, float("nan"))
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=use_stemmer)
    scores = [
        scorer.score(target=t.replace(" . ", " .\n"), prediction=p.replace(" . ", " .\n"))
        for t, p in zip(targets, predictions, strict=True)
    ]
    return {key: 100.0 * float(np.mean([s[key].fmeasure for s in scores])) for key in ROUGE_KEYS}


def named_metric(name: str, label_words: Sequence[str] | None = None):
    """A metric function by its name, as a task file names it (`metrics: [accuracy, f1]`); `f1` and
    `mean_multiclass_f1` take the label set from `label_words` (`f1`'s positive class is the last word, as `True`
    in MRPC's `(False, True)`); `squad` scores a target string as the one gold answer.

    Raises:
        KeyError: an unknown name, or a label-set metric for a task without label words (the message says which).
    """
    words = tuple(label_words or ())
    if name in LABEL_METRICS and len(words) < 2:
        raise KeyError(f"metric {name!r} needs label words (a classification task)")
    metrics = {
        "accuracy": accuracy,
        "matthews_corr": matthews_corr,
        "pearson_spearman": pearson_spearman,
        "squad": lambda t, p: squad([[x] if isinstance(x, str) else list(x) for x in t], p),
        "bleu": bleu,
        "rouge": rouge,
        "f1": lambda t, p: f1(t, p, words[-1]),
        "mean_multiclass_f1": lambda t, p: mean_multiclass_f1(t, p, words),
    }
    if name not in metrics:
        raise KeyError(f"unknown metric {name!r}; choose from {', '.join(METRIC_NAMES)}")
    return metrics[name]


LABEL_METRICS = ("f1", "mean_multiclass_f1")
METRIC_NAMES = ("accuracy", "matthews_corr", "pearson_spearman", "squad", "bleu", "rouge", *LABEL_METRICS)
