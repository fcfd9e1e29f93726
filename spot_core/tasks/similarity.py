"""CxC (Crisscrossed Captions) semantic similarity, SPoT's paraphrase/similarity source.

CxC has no Hugging Face copy: its release holds MS-COCO caption ids and scores, not caption text. Build the
mirror files yourself (COCO captions joined with CxC's sentence-sentence scores) as rows
`{"sentence1", "sentence2", "label"}` (label: the mean score, 0-5) at
`<data_dir>/google-research-datasets__Crisscrossed-Captions/sts/{train,validation,test}.jsonl`.
Format and metric as STS-B.
"""

from __future__ import annotations

from spot_core.metrics import pearson_spearman
from spot_core.tasks.base import Example, Task, reads, register
from spot_core.tasks.formats import fields
from spot_core.tasks.glue import STSB_LABELS, stsb_target


@reads({"sentence1": "text", "sentence2": "text", "label": "number"})
def _cxc(row: dict) -> Example:
    return {"inputs": fields("cxc", row, ("sentence1", "sentence2")), "targets": stsb_target(row["label"])}


register(
    Task(
        name="cxc_v1",
        hub_id="google-research-datasets/Crisscrossed-Captions",
        hub_config="sts",
        splits={"train": "train", "validation": "validation", "test": "test"},
        preprocess=_cxc,
        metrics=(pearson_spearman,),
        label_words=STSB_LABELS,
        on_hub=False,
        family="similarity",
        notes="No Hugging Face copy: mirror files only (see spot_core/tasks/similarity.py for their layout).",
    )
)
