"""Pure analysis of a transfer study's results (SPoT sections 3.2-3.3; Su et al. 2022; Vu et al. 2020).

Inputs are plain tables (see `frames`): the finished runs, their per-evaluation curves, and task embeddings by
run key. Outputs are DataFrames and small dataclasses with documented columns; rendering is someone else's job.

    (spot_core.similarity, outside: the planner ranks with it too) the measures: task embeddings' similarities,
                 distance, activated-neuron overlap; rank_sources
    transfer     transferability matrices, gain, relative error reduction, relative performance
    candidates   task similarity matrix, source runs ranked per target (also per window of layers), true scores
    retrieval    best of top-k, oracle, weighted average / mixture rows, Table 3, search-space reduction
    correlation  Pearson / Spearman, NDCG@k, regret@k
    convergence  steps to reach the baseline's best score, speed-up
    zero_shot    source prompts on targets without training: scores and relative performance
    cross_model  prompts projected into another model: zero-shot, as the init, speed-up
    correlation.indicator_summary  which indicator (embedding similarities, distance, neuron overlap) predicts best
    methods      SPoT, ATTEMPT and MPT against the baseline: scores, gains, costs; ATTEMPT's attention matrix

numpy, pandas and scipy only: task embeddings and neuron masks come in as numpy arrays, run key -> array; the
runs' costs and ATTEMPT's attention as the facts and attention tables.
"""

import importlib

from spot_core.analysis.candidates import (
    embedding_keys,
    neuron_window_rankings,
    rank_candidates,
    score_candidates,
    task_similarity_matrix,
    transfer_seed_scores,
)
from spot_core.analysis.convergence import Convergence, baseline_convergence, convergence, transfer_convergence
from spot_core.analysis.cross_model import cross_model_table, projector_tasks
from spot_core.analysis.frames import check_attention, check_curves, check_facts, check_runs, study_seeds
from spot_core.analysis.methods import (
    attention_matrix,
    attention_ranking,
    method_average,
    method_comparison,
    method_label,
    method_runs,
)
from spot_core.analysis.retrieval import (
    PAPER_KS,
    best_of_top_k,
    pick_best_of_top_k,
    retrieval_summary,
    search_space,
    strategy_runs,
    summarise_row,
    table3,
)
from spot_core.analysis.transfer import (
    TransferMatrices,
    baseline_scores,
    relative_error_reduction,
    relative_performance,
    transfer_matrices,
    transfer_scores,
)
from spot_core.analysis.zero_shot import ZeroShot, best_zero_shot_sources, zero_shot
from spot_core.similarity import (
    Indicator,
    Similarity,
    TaskEmbedding,
    layer_windows,
    neuron_overlap,
    rank_sources,
    task_embedding,
    task_similarity,
)

__all__ = [
    "PAPER_KS",
    "Convergence",
    "Indicator",
    "Similarity",
    "TaskEmbedding",
    "TransferMatrices",
    "attention_matrix",
    "attention_ranking",
    "baseline_convergence",
    "baseline_scores",
    "best_of_top_k",
    "check_attention",
    "check_curves",
    "check_facts",
    "check_runs",
    "convergence",
    "correlate",
    "correlation_points",
    "correlations",
    "embedding_keys",
    "graded_relevance",
    "ndcg",
    "pick_best_of_top_k",
    "rank_candidates",
    "ranking_quality",
    "regret_at_k",
    "relative_error_reduction",
    "relative_performance",
    "retrieval_summary",
    "score_candidates",
    "search_space",
    "strategy_runs",
    "study_seeds",
    "summarise_row",
    "table3",
    "task_similarity_matrix",
    "transfer_convergence",
    "transfer_matrices",
    "transfer_scores",
    "transfer_seed_scores",
    "ZeroShot",
    "best_zero_shot_sources",
    "cross_model_table",
    "indicator_summary",
    "layer_windows",
    "method_average",
    "method_comparison",
    "method_label",
    "method_runs",
    "neuron_overlap",
    "neuron_window_rankings",
    "neuron_window_scores",
    "projector_tasks",
    "rank_sources",
    "task_embedding",
    "task_similarity",
    "zero_shot",
]

# correlation's names are imported on first use (`__getattr__`): it needs scipy.stats, which a Ray trial worker
# (it reads the tables' columns from `frames`) never uses, and which costs it half a second of its start.
CORRELATION = (
    "correlate",
    "correlation_points",
    "correlations",
    "graded_relevance",
    "indicator_summary",
    "ndcg",
    "neuron_window_scores",
    "ranking_quality",
    "regret_at_k",
)


def __getattr__(name: str):
    if name in CORRELATION or name == "correlation":
        module = importlib.import_module("spot_core.analysis.correlation")
        return module if name == "correlation" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
