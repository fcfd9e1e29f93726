"""SPoT's source mixtures (Table 1) whose members are registered here: examples-proportional, cap 2^19."""

from __future__ import annotations

from spot_core.tags import BENCHMARK_TASKS
from spot_core.tasks import glue, nli, sentiment, similarity, superglue, translation  # noqa: F401  (members first)
from spot_core.tasks.base import Mixture, register

register(Mixture("glue_v1", BENCHMARK_TASKS["GLUE"]))
register(Mixture("superglue_v1", BENCHMARK_TASKS["SuperGLUE"], notes="RTE is GLUE's copy of the same data."))
register(Mixture("nli_v1", ("anli_v1", "cb_v1", "doc_nli_v1", "mnli_v1", "qnli_v1", "rte_v1", "snli_v1")))
register(Mixture("paraphrase_v1", ("cxc_v1", "mrpc_v1", "qqp_v1", "stsb_v1")))
register(Mixture("translation_v1", ("wmt_en_de_v1", "wmt_en_fr_v1", "wmt_en_ro_v1")))
register(Mixture("sentiment_v1", ("cr_v1", "goemotions_v1", "sentiment140_v1", "sst2_v1", "yelp_polarity_v1")))
