"""The stage catalogue: one module per stage of a study, each saying which cells it plans and what they run.

    source, target, transfer, retrieval     SPoT (Vu et al. 2022)
    zero_shot, neurons, cross_model         Su et al. 2022
    attempt                                 ATTEMPT (Asai et al. 2022)
    mpt                                     MPT (Wang et al. 2023)

`catalogue.py` lists them in planning order; the study pipeline, its scheduler and the ledger ask it, and keep
no list of their own. `spot_core/tags.py` holds the names results carry (cell stages, MLflow tags), free of the
model stack so that the analysis can read them too.

Adding a stage: a module here defining `STAGE = StageDef(...)` (base.py says what each field means), its entry
in `catalogue.CATALOGUE` and, if its cells are of a new kind, a `Stage` member in spot_core/tags.py; the name in
`conf/study.yaml`'s `stages`; and the report section that shows its results (spot_core/report/).
"""
