"""The tags a study's results carry, free of the model stack so that the analysis can read them.

`Stage` is the `stage` tag of a cell's MLflow run and the `stage` column of the analysis' runs table, in the order
the report lists them. `TAGS` is the cell's tags in that table: the MLflow tag and the column it becomes.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """What a cell is (SPoT section 3; Su et al. 2022)."""

    SOURCE = "source"  # prompt tuning on a source task or mixture
    TARGET = "target"  # prompt tuning on a target from scratch: the baseline
    TRANSFER = "transfer"  # a target prompt started from a source prompt
    RETRIEVAL_MIXTURE = "retrieval_mixture"  # a prompt trained on the top-k source tasks plus the target
    RETRIEVAL = "retrieval"  # a target prompt started from a retrieved init
    ZERO_SHOT = "zero_shot"  # a source prompt scored on a target, no training
    NEURONS = "neurons"  # the FFN neurons a run's task-embedding prompt activates
    CROSS_SOURCE = "cross_source"  # the other model's own prompt on a task (from scratch)
    PROJECTOR = "projector"  # the MLP from the study model's prompts into the other model
    CROSS_ZERO_SHOT = "cross_zero_shot"  # a projected prompt scored on the other model, no training
    CROSS_TRANSFER = "cross_transfer"  # the other model trained from a projected prompt
    ATTEMPT = "attempt"  # ATTEMPT: a target prompt and an attention over frozen source prompts (Asai et al. 2022)
    MPT_SOURCE = "mpt_source"  # MPT: the shared prompt and each source's factors, on the sources together
    MPT = "mpt"  # MPT: a target prompt from the shared prompt, times factors of its own (Wang et al. 2023)
    MODEL_TUNING = "model_tuning"  # every weight fine-tuned on a target (SPoT's MODELTUNING baseline)
    MT_SOURCE = "mt_source"  # every weight fine-tuned on a source task or mixture (MULTI-TASK MODELTUNING's first step)
    MT_TARGET = "mt_target"  # every weight fine-tuned on a target, from the source-tuned model (its second step)


class Retrieval(StrEnum):
    """SPoT's retrieval strategies that need runs of their own (best-of-top-k reads the transfer grid)."""

    WEIGHTED_AVERAGE = "weighted_average"  # the similarity-weighted average of the top-k source prompts
    MIXTURE = "mixture"  # a prompt trained on the mixture of the top-k source tasks plus the target


# What stages' runs leave for the report (`StudyResults.artifacts`): their names
ATTENTION = "attention"  # ATTEMPT's mean attention over the prompts (spot_core.analysis.frames: ATTENTION_COLUMNS)
NEURONS = "neurons"  # run key -> the activated-neuron mask of its task-embedding prompt
OTHER_MODEL = "other_model"  # the cross-model stage's other model

# SPoT's benchmarks (Table 1): their tasks, the members of the glue_v1 and superglue_v1 mixtures too
# (spot_core/tasks/mixtures.py); GLUE without WNLI, and RTE in both
BENCHMARK_TASKS = {
    "GLUE": ("cola_v1", "sst2_v1", "mrpc_v1", "qqp_v1", "stsb_v1", "mnli_v1", "qnli_v1", "rte_v1"),
    "SuperGLUE": ("boolq_v1", "cb_v1", "copa_v1", "multirc_v1", "record_v1", "rte_v1", "wic_v1", "wsc_v1"),
}

OWN_PROMPT = "target"  # ATTEMPT: the target's own prompt among the prompts its attention weighs (attention.json)

STRATEGY_TAG = "retrieval"  # the tag of a retrieval run's strategy (its column: `retrieval` too)

# MLflow tag -> runs-table column, for the tags a cell's run carries besides study and model.
TAGS = {
    "cell_key": "key",
    "stage": "stage",
    "task": "task",
    "source": "source",  # transfer: the source task; retrieval: "wavg-top{k}" / "mix-top{k}"; "attempt-all",
    # "attempt-top{k}", "mpt" (display)
    "source_key": "source_key",  # the source run a transfer, zero-shot or cross-model run starts from
    "target": "target",
    "seed": "seed",
    "k": "k",  # retrieval, ATTEMPT: how many top-ranked source runs
    STRATEGY_TAG: "retrieval",  # retrieval: a Retrieval value
}
