"""Command-line stages (Hydra), the only code that imports hydra, omegaconf, ray and mlflow.

The environment defaults of the libraries they start are set here, once, before any of them is imported (a
value already in the environment wins).
"""

import logging
import os

ENVIRONMENT = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # trials keep the driver's working directory: relative paths stay valid
    "RAY_AUTH_MODE": "disabled",
    "RAY_AIR_NEW_OUTPUT": "0",  # the study driver prints its own progress lines
    "MALLOC_ARENA_MAX": "2",  # local trial workers inherit it: fewer heap arenas to bloat
    "TOKENIZERS_PARALLELISM": "false",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
for name, value in ENVIRONMENT.items():
    os.environ.setdefault(name, value)
logging.getLogger("fontTools").setLevel(logging.WARNING)  # one INFO line per font table of every report PDF
