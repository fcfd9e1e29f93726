"""MLflow behind spot_core's Tracker interface, and the checks that run before any training."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

MAX_PARAM = 6000  # MLflow's limit on a param value's length


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says how to fix it."""


def normalise_uri(uri: str) -> str:
    """Makes a relative sqlite path absolute (Ray workers run in other directories)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def open_store(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """Checks the store is usable, creates it and the experiment if needed; returns (client, experiment id)."""
    uri = normalise_uri(uri)
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
        except (urllib.error.URLError, OSError) as e:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({e}). Start it with "
                "`mlflow server --backend-store-uri sqlite:///$PWD/outputs/mlflow.db --host 127.0.0.1 --port 5000`, "
                "or use the local store (tracking=local)."
            ) from e
    elif uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client, found.experiment_id if found else client.create_experiment(experiment)


class MlflowTracker:
    """spot_core's Tracker, writing to one MLflow run."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:MAX_PARAM]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self.run_id, str(path))
