"""The stage catalogue: one module per stage of a study, each saying which cells it plans and what they run.

    source, target, transfer, retrieval     SPoT (Vu et al. 2022)
    zero_shot, neurons, cross_model         Su et al. 2022
    attempt                                 ATTEMPT (Asai et al. 2022)
    mpt                                     MPT (Wang et al. 2023)
    model_tuning, multitask_model_tuning    SPoT's model-tuning baselines (every weight trained; section 2)

`catalogue.py` lists them in planning order; the study driver, its plan and cost estimate, the scheduler, the
ledger and the report ask it, and keep no list of their own. `spot_core/tags.py` holds the names results carry (cell
stages, MLflow tags, the artifacts stages leave for the report), free of the model stack so that the analysis can
read them too.

Adding a stage: a module defining `STAGE = StageDef(...)` (base.py says what each field means: the cells it plans,
now and from finished runs, what they run and cost, what they leave for the report and its report section). Built
in: listed in `catalogue.CATALOGUE`, a `Stage` member per cell kind in spot_core/tags.py, its name in
`conf/study.yaml`'s `stages`. From outside the package: `stage_modules=[my_pkg.my_stage]` (docs/stages.md).
"""
