"""Task similarity from task embeddings (SPoT section 3.2), the other transferability indicators, and the ranking
of source runs for a target; numpy only (the pipelines turn loaded tensors into arrays).

A task embedding is a prompt checkpoint [L, H] taken early in prompt tuning (SPoT: 10K steps), or, for runs of a
few steps that start from the same initial prompt (same seed), its displacement from that initial prompt: there the
checkpoint is still mostly its init and every pair of tasks looks alike, while the displacement is the sum of the
task's first updates. Two measures:
    avg_tokens: cos(mean_i e1_i, mean_j e2_j)
    per_token:  (1 / L^2) * sum_i sum_j cos(e1_i, e2_j)
Tasks with several runs: the mean over all run pairs.

Two more transferability indicators (Su et al. 2022) are compared with them in the analysis, not used to retrieve:
    euclidean:       -||e1 - e2||_F, the negated distance of the task embeddings (larger = more alike)
    neuron_overlap:  the cosine of the two prompts' activated-neuron masks [layers, P, I] (spot_core.neurons
                     records them), over all layers or a window of layers

Every measure computes in float64 whatever the input's dtype, with plain numpy (means, norms, matrix products) and
the formulas of the torch implementation these replaced, zero-norm floors included. numpy sums in another order
than torch's CPU kernels, so a value may differ from the old torch one in the last bit or so (about 1e-16
relative); this float64 numpy code is the reference now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from itertools import product

import numpy as np

COSINE_EPS = 1e-8  # torch.nn.functional.cosine_similarity's floor on each norm
NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's


class Similarity(StrEnum):
    AVG_TOKENS = "avg_tokens"
    PER_TOKEN = "per_token"


class Indicator(StrEnum):
    """What the analysis ranks source runs by: the retrieval similarities and two more of Su et al.'s."""

    AVG_TOKENS = "avg_tokens"
    PER_TOKEN = "per_token"
    EUCLIDEAN = "euclidean"
    NEURON_OVERLAP = "neuron_overlap"  # compares activated-neuron masks [layers, L, I], not task embeddings


class TaskEmbedding(StrEnum):
    PROMPT = "prompt"  # SPoT: the prompt checkpoint itself
    DISPLACEMENT = "displacement"  # the checkpoint minus the initial prompt


def task_embedding(
    checkpoint: np.ndarray, initial: np.ndarray | None, kind: TaskEmbedding | str = TaskEmbedding.PROMPT
) -> np.ndarray:
    """The task embedding [L, H] of a run from its early checkpoint and (for displacement) its initial prompt,
    in the checkpoint's dtype."""
    if TaskEmbedding(kind) is TaskEmbedding.PROMPT:
        return checkpoint
    if initial is None or initial.shape != checkpoint.shape:
        shape = None if initial is None else tuple(initial.shape)
        raise ValueError(
            f"a displacement task embedding needs the run's initial prompt of shape "
            f"{tuple(checkpoint.shape)}, got {shape}"
        )
    return checkpoint - initial


def cosine_of_means(a: np.ndarray, b: np.ndarray) -> float:
    """cos(mean of a's tokens, mean of b's tokens); a [L1, H], b [L2, H]."""
    x, y = (np.mean(np.asarray(m, np.float64), axis=0) for m in (a, b))
    return float(np.dot(x / max(np.linalg.norm(x), COSINE_EPS), y / max(np.linalg.norm(y), COSINE_EPS)))


def mean_token_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The mean over all token pairs (i, j) of cos(a_i, b_j); a [L1, H], b [L2, H]."""
    return float(np.mean(_unit_rows(a) @ _unit_rows(b).T))


def negative_distance(a: np.ndarray, b: np.ndarray) -> float:
    """-||a - b||_F over two [L, H] embeddings of the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"the euclidean indicator needs embeddings of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    return -float(np.linalg.norm((np.asarray(a, np.float64) - np.asarray(b, np.float64)).ravel()))


def neuron_overlap(a: np.ndarray, b: np.ndarray, layers: slice | Sequence[int] | None = None) -> float:
    """Cosine similarity of two activation masks, flattened over the chosen layers.

    Args:
        a, b: bool masks of the same shape [layers, P, I].
        layers: layers to compare (a slice or indices along axis 0); default all.

    Returns:
        cos in [0, 1]; 0.0 when either selection activates no neuron (the reference's cosine eps gives the same).
    """
    if a.shape != b.shape:
        raise ValueError(f"activation masks must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    x, y = (_select(m, layers).astype(bool) for m in (a, b))
    # As 0/1 vectors: x . y and |x|^2 are counts, exact in any order of summation.
    scale = np.sqrt(float(np.count_nonzero(x))) * np.sqrt(float(np.count_nonzero(y)))
    return float(np.count_nonzero(x & y) / scale) if scale > 0 else 0.0


def layer_windows(n_layers: int, count: int) -> list[slice]:
    """`count` consecutive windows of layers of near-equal size (as numpy.array_split: the first windows one layer
    longer when `count` does not divide `n_layers`); empty windows (more windows than layers) are dropped.
    The windowed overlap is `neuron_overlap(a, b, window)` (Su et al. compare windows of 3 layers)."""
    if count < 1:
        raise ValueError(f"the number of layer windows must be >= 1, got {count}")
    bounds = np.cumsum([0] + [len(part) for part in np.array_split(np.arange(n_layers), count)])
    return [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]


def similarity(a: np.ndarray, b: np.ndarray, method: Indicator | str = Similarity.AVG_TOKENS) -> float:
    """How alike two runs are by one indicator: task embeddings [L, H], or neuron masks for neuron_overlap."""
    method = Indicator(method)
    if method is Indicator.NEURON_OVERLAP:
        return neuron_overlap(a, b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"task embeddings must be [L, H] with the same H, got {tuple(a.shape)} and {tuple(b.shape)}")
    if method is Indicator.EUCLIDEAN:
        return negative_distance(a, b)
    return cosine_of_means(a, b) if method is Indicator.AVG_TOKENS else mean_token_cosine(a, b)


def task_similarity(
    runs_a: Sequence[np.ndarray], runs_b: Sequence[np.ndarray], method: Indicator | str = Similarity.AVG_TOKENS
) -> float:
    """The mean similarity over all pairs of runs (3 x 3 = 9 pairs for 3 runs each)."""
    pairs = [similarity(a, b, method) for a, b in product(runs_a, runs_b)]
    if not pairs:
        raise ValueError("task_similarity needs at least one run of each task")
    return sum(pairs) / len(pairs)


def rank_sources(
    target_runs: Sequence[np.ndarray],
    candidates: Mapping[str, np.ndarray],
    method: Indicator | str = Similarity.AVG_TOKENS,
) -> list[tuple[str, float]]:
    """Source runs (name -> task embedding, or neuron mask for neuron_overlap) by similarity to the target
    (averaged over its runs), most similar first; ties keep the candidates' order."""
    scored = [(name, task_similarity(target_runs, [emb], method)) for name, emb in candidates.items()]
    return sorted(scored, key=lambda item: -item[1])


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """[L, H] -> each row over its 2-norm (floored at NORMALIZE_EPS), in float64."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), NORMALIZE_EPS)


def _select(mask: np.ndarray, layers: slice | Sequence[int] | None) -> np.ndarray:
    if layers is None:
        return mask
    return mask[layers] if isinstance(layers, slice) else mask[np.asarray(list(layers), dtype=np.int64)]
