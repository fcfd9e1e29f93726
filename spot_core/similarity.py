"""Task similarity from task embeddings (SPoT section 3.2) and the ranking of source runs for a target.

A task embedding is a prompt checkpoint [L, H] taken early in prompt tuning (SPoT: 10K steps), or, for runs of a
few steps that start from the same initial prompt (same seed), its displacement from that initial prompt: there the
checkpoint is still mostly its init and every pair of tasks looks alike, while the displacement is the sum of the
task's first updates. Two measures:
    avg_tokens: cos(mean_i e1_i, mean_j e2_j)
    per_token:  (1 / L^2) * sum_i sum_j cos(e1_i, e2_j)
Tasks with several runs: the mean over all run pairs.

Two more transferability indicators (Su et al. 2022) are compared with them in the analysis, not used to retrieve:
    euclidean:       -||e1 - e2||_F, the negated distance of the task embeddings (larger = more alike)
    neuron_overlap:  the cosine of the two prompts' activated-neuron masks (spot_core.neurons)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from itertools import product

import torch
import torch.nn.functional as F

from spot_core.neurons import neuron_overlap


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
    checkpoint: torch.Tensor, initial: torch.Tensor | None, kind: TaskEmbedding | str = TaskEmbedding.PROMPT
) -> torch.Tensor:
    """The task embedding [L, H] of a run from its early checkpoint and (for displacement) its initial prompt."""
    if TaskEmbedding(kind) is TaskEmbedding.PROMPT:
        return checkpoint
    if initial is None or initial.shape != checkpoint.shape:
        shape = None if initial is None else tuple(initial.shape)
        raise ValueError(
            f"a displacement task embedding needs the run's initial prompt of shape "
            f"{tuple(checkpoint.shape)}, got {shape}"
        )
    return checkpoint - initial


def cosine_of_means(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(mean of a's tokens, mean of b's tokens); a [L1, H], b [L2, H]."""
    return float(F.cosine_similarity(a.double().mean(0), b.double().mean(0), dim=0))


def mean_token_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean over all token pairs (i, j) of cos(a_i, b_j); a [L1, H], b [L2, H]."""
    return float((F.normalize(a.double(), dim=1) @ F.normalize(b.double(), dim=1).T).mean())


def negative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """-||a - b||_F over two [L, H] embeddings of the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"the euclidean indicator needs embeddings of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    return -float(torch.linalg.vector_norm(a.double() - b.double()))


def similarity(a: torch.Tensor, b: torch.Tensor, method: Indicator | str = Similarity.AVG_TOKENS) -> float:
    """How alike two runs are by one indicator: task embeddings [L, H], or neuron masks for neuron_overlap."""
    method = Indicator(method)
    if method is Indicator.NEURON_OVERLAP:
        return neuron_overlap(a, b)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"task embeddings must be [L, H] with the same H, got {tuple(a.shape)} and {tuple(b.shape)}")
    if method is Indicator.EUCLIDEAN:
        return negative_distance(a, b)
    return cosine_of_means(a, b) if method is Indicator.AVG_TOKENS else mean_token_cosine(a, b)


def task_similarity(
    runs_a: Sequence[torch.Tensor], runs_b: Sequence[torch.Tensor], method: Indicator | str = Similarity.AVG_TOKENS
) -> float:
    """The mean similarity over all pairs of runs (3 x 3 = 9 pairs for 3 runs each)."""
    pairs = [similarity(a, b, method) for a, b in product(runs_a, runs_b)]
    if not pairs:
        raise ValueError("task_similarity needs at least one run of each task")
    return sum(pairs) / len(pairs)


def rank_sources(
    target_runs: Sequence[torch.Tensor],
    candidates: Mapping[str, torch.Tensor],
    method: Indicator | str = Similarity.AVG_TOKENS,
) -> list[tuple[str, float]]:
    """Source runs (name -> task embedding) by similarity to the target (averaged over its runs), most
    similar first; ties keep the candidates' order."""
    scored = [(name, task_similarity(target_runs, [emb], method)) for name, emb in candidates.items()]
    return sorted(scored, key=lambda item: -item[1])
