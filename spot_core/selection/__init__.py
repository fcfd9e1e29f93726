"""Which library source prompts a new task should start from (SPoT section 3.2-3.3, for one target outside any
study): the library's source runs of the model ranked against the target's task embedding by every
transferability indicator, the top k by one of them, and the runs that train the target from those:

    best_of           a run from each of the top-k source prompts (init=file); the best is reported
    weighted_average  a run from sum_r a_r P_r, a_r = sim_r / sum_l sim_l over the top k (`prompts.similarity_weights`)
    mixture           a prompt trained on the top-k source tasks plus the target (examples-proportional), then the
                      target from its final prompt (as `spot_core.stages.retrieval` builds it)

each against the baseline: the target's own prompt from the target init, scored by the study report's measures
(score, abs. gain, relative error reduction: `spot_core.analysis`). A library source task with several runs is
ranked once per run, as SPoT ranks runs. A run's folder is named by a hash of what determines its result (never
paths): a re-run finds it finished, a changed ranking or setting gets new folders.
"""

from spot_core.selection.ranking import (
    INDICATORS,
    Candidate,
    Method,
    SelectionConfig,
    Sources,
    library_sources,
    rank_library,
    ranking_columns,
)
from spot_core.selection.runs import (
    PlannedRun,
    Role,
    baseline_run,
    compare,
    embedding_run,
    mixture_runs,
    prompt_from,
    records,
    target_spec,
    trained,
    variant_runs,
)

__all__ = [
    "Candidate",
    "INDICATORS",
    "Method",
    "PlannedRun",
    "Role",
    "SelectionConfig",
    "Sources",
    "baseline_run",
    "compare",
    "embedding_run",
    "library_sources",
    "mixture_runs",
    "prompt_from",
    "rank_library",
    "ranking_columns",
    "records",
    "target_spec",
    "trained",
    "variant_runs",
]
