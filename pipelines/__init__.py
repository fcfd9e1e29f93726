"""Command-line stages (Hydra), the only code that imports hydra, omegaconf, ray and mlflow."""

import os

# Set before mlflow / ray are imported anywhere in the pipelines.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
