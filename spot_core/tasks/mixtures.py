"""SPoT's source mixtures (Table 1): examples-proportional, cap 2^19. The single-task sources (C4, MNLI, SQuAD) are
tasks."""

from __future__ import annotations

from spot_core.tags import BENCHMARK_TASKS
from spot_core.tasks import (  # noqa: F401  (members first)
    gem,
    glue,
    language_modeling,
    multiple_choice,
    nli,
    qa,
    sentiment,
    similarity,
    summarization,
    superglue,
    translation,
)
from spot_core.tasks.base import Mixture, get_mixture, mixture_names, register

register(Mixture("glue_v1", BENCHMARK_TASKS["GLUE"]))
register(Mixture("superglue_v1", BENCHMARK_TASKS["SuperGLUE"], notes="RTE is GLUE's copy of the same data."))
register(Mixture("nli_v1", ("anli_v1", "cb_v1", "doc_nli_v1", "mnli_v1", "qnli_v1", "rte_v1", "snli_v1")))
register(Mixture("paraphrase_v1", ("cxc_v1", "mrpc_v1", "qqp_v1", "stsb_v1")))
register(Mixture("translation_v1", ("wmt_en_de_v1", "wmt_en_fr_v1", "wmt_en_ro_v1")))
register(Mixture("sentiment_v1", ("cr_v1", "goemotions_v1", "sentiment140_v1", "sst2_v1", "yelp_polarity_v1")))
# MRQA is the shared task's six in-domain training sets in one hub dataset, so its SQuAD member is MRQA's SQuAD
# (`mrqa_squad_v1`: the same source, revision and processing as the other five), not `squad_v1` (rajpurkar/squad),
# the transferability study's single-task SQuAD source.
register(Mixture("mrqa_v1", tuple(f"{name}_v1" for name in qa.MRQA_SUBSETS)))
register(
    Mixture(
        "rainbow_v1", ("alpha_nli_v1", "cosmos_qa_v1", "hellaswag_v1", "piqa_v1", "social_i_qa_v1", "winogrande_v1")
    )
)
# Newsroom first: its data needs a manual download, and the checks read a mixture's members in order, so a missing
# copy stops them before any other member is downloaded.
register(
    Mixture(
        "summarization_v1",
        (
            "newsroom_v1",
            "aeslc_v1",
            "billsum_v1",
            "cnn_dailymail_v1",
            "wiki_lingua_v1",
            "gigaword_v1",
            "multi_news_v1",
            "samsum_v1",
            "xsum_v1",
        ),
    )
)
# GEM's WikiLingua is the summarization mixture's task; its XSum is GEM's filtered subset (`gem_xsum_v1`).
register(
    Mixture(
        "gem_v1",
        (
            "common_gen_v1",
            "dart_v1",
            "e2e_nlg_v1",
            "schema_guided_dialog_v1",
            "web_nlg_v1",
            "wiki_auto_v1",
            "gem_xsum_v1",
            "wiki_lingua_v1",
        ),
    )
)
# All: C4 and every supervised task above, with the single-task SQuAD source beside MRQA's: the 55 supervised
# datasets SPoT counts. Newsroom needs a manual download, so All does too.
SUPERVISED = tuple(dict.fromkeys(task for name in mixture_names() for task in get_mixture(name).tasks)) + ("squad_v1",)
register(Mixture("all_v1", ("c4_v1", *SUPERVISED), notes="C4 and SPoT's 55 supervised datasets."))
