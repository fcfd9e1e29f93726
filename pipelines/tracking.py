"""MLflow behind spot_core's Tracker interface, the one run lifecycle of every entry point (`TrackedRun`), and the
checks that run before any training."""

from __future__ import annotations

import difflib
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from pipelines.errors import stop_of
from pipelines.paths import check_writable
from spot_core.errors import SpotError
from spot_core.run_dir import follow_umask

MAX_PARAM = 6000  # MLflow's limit on a param value's length
SQLITE = "sqlite:///"
PARENT_TAG, ERROR_TAG = "mlflow.parentRunId", "error"  # a child run's parent; why a FAILED run failed
MAX_TAG = 5000  # MLflow's limit on a tag value's length
ARTIFACTS = "mlartifacts"  # beside a sqlite store: <folder of the .db>/mlartifacts/<experiment>/<run id>/artifacts
# The MLflow 3 UI opens an experiment of this kind on its runs (without it: on the GenAI traces view)
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
GUESSED_KINDS = ("", "no_inferred_type", "genai_development_inferred", "custom_model_development_inferred")
# The schemes MLflow has a tracking store for (mlflow.tracking._tracking_service.utils: its store registry)
SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


Client = MlflowClient  # the pipelines annotate with this name: MLflow itself is imported here and in the ledger


class TrackingError(SpotError, RuntimeError):
    """The tracking store cannot be used; the message says how to fix it."""


def normalise_uri(uri: str) -> str:
    """Makes a relative sqlite path absolute (Ray workers run in other directories)."""
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        return SQLITE + str(Path(uri[len(SQLITE) :]).resolve())
    return uri


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite store's (normalised) URI; None for other stores."""
    return Path(uri[len(SQLITE) :]) if uri.startswith(SQLITE) else None


def check_store(uri: str) -> None:
    """Fails fast, writing nothing, unless the store can be used: MLflow knows its scheme, an MLflow server answers
    at it, a sqlite store's folder can be written."""
    uri = normalise_uri(uri)
    check_scheme(uri)
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    elif (db := sqlite_file(uri)) is not None:
        check_writable(db.parent, "tracking.uri")


def check_scheme(uri: str) -> None:
    """A TrackingError unless MLflow has a tracking store for the URI's scheme (a plain path has none: a file
    store). `postgresql+psycopg2://` is PostgreSQL's, as MLflow reads it."""
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if not scheme or scheme.split("+")[0] in SCHEMES:
        return
    close = difflib.get_close_matches(scheme, SCHEMES, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise TrackingError(
        f"tracking.uri={uri}: MLflow has no tracking store for the scheme {scheme!r}{hint}: use sqlite:///PATH (a "
        "local file; the default is sqlite:///outputs/mlflow.db), http(s)://HOST:PORT (an MLflow server), file:PATH, "
        "postgresql://..., mysql://... or databricks"
    )


def check_server(uri: str) -> None:
    """A TrackingError unless an MLflow tracking server answers at `uri`: its /health says OK, or (a server whose
    /health lives under a prefix) its REST API lists experiments."""
    try:
        answer = http_get(uri.rstrip("/") + "/health")
        if answer == (200, "OK") or is_mlflow_api(uri):
            return
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        where = urllib.parse.urlsplit(uri)
        host = "127.0.0.1" if where.hostname in ("localhost", "127.0.0.1", "::1") else "0.0.0.0"
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({getattr(reason, 'strerror', None) or reason}): start "
            f"it (mlflow server --backend-store-uri sqlite:///$PWD/outputs/mlflow.db --host {host} --port "
            f"{where.port or 5000}), or track locally (tracking.uri=sqlite:///outputs/mlflow.db, the default)"
        ) from e
    code, text = answer
    raise TrackingError(
        f"{uri} answered, but is not an MLflow tracking server (GET /health: {code} {text[:40]!r}; MLflow's says "
        "200 'OK'): set tracking.uri to the address of an MLflow server (mlflow server ... --port PORT), or track "
        "locally (tracking.uri=sqlite:///outputs/mlflow.db, the default)"
    )


def http_get(url: str) -> tuple[int, str]:
    """(status, the first 64 characters of the body) of a GET; an error status too, which is an answer.

    Raises:
        URLError, OSError: no answer (a closed port, an unknown host, a timeout).
    """
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read(64).decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as e:  # before URLError, its base: the server answered
        return e.code, str(e.reason)


def is_mlflow_api(uri: str) -> bool:
    """Whether MLflow's REST API answers at `uri` with its JSON (a server that did not pass the /health check)."""
    code, text = http_get(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
    return code == 200 and text.startswith("{")


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: beside a sqlite store (MLflow's default, ./mlruns, is relative to
    the directory the run starts in); None (the store's default) for the others."""
    db = sqlite_file(uri)
    if db is None:
        return None
    return (db.parent / ARTIFACTS / re.sub(r"[^A-Za-z0-9._-]", "_", experiment)).as_uri()


def open_store(uri: str, experiment: str, create: bool = True) -> tuple[MlflowClient, str]:
    """Checks the store is usable, creates it and the experiment if needed (`create=False`: a TrackingError if
    they do not exist, and nothing is written); returns (client, experiment id). Experiments are tagged as model
    training, so that the MLflow UI opens them on their runs."""
    uri = normalise_uri(uri)
    check_store(uri)
    db = sqlite_file(uri)
    if not create and db is not None and not db.is_file():
        raise TrackingError(f"no tracking store at {db}: run a study first, or pass its tracking.uri=sqlite:///PATH")
    new = db is not None and not db.exists()
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)  # creates a new sqlite store's file
    if new and db.is_file():
        follow_umask(db)  # sqlite creates it 0644 whatever the umask: 0664 under 002, as every other file spot writes
    if found is None and not create:
        raise TrackingError(
            f"no experiment {experiment!r} in the tracking store {uri}: run a study first, or pass the "
            "tracking.uri and tracking.experiment it logged to"
        )
    if found is None:
        location = artifact_location(uri, experiment)
        return client, client.create_experiment(experiment, location, tags={KIND_TAG: MODEL_TRAINING})
    if create and found.tags.get(KIND_TAG, "") in GUESSED_KINDS:  # an experiment made before spot tagged them
        client.set_experiment_tag(found.experiment_id, KIND_TAG, MODEL_TRAINING)
    return client, found.experiment_id


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


class TrackedRun:
    """One MLflow run's lifecycle, as a context: FINISHED when its block ends normally; FAILED, with its `error`
    tag, when an Exception leaves it; KILLED when the process is stopped (Ctrl-C's KeyboardInterrupt, SIGTERM's
    `pipelines.errors.Terminated`): a re-run resumes what it left. The exception goes on. `end` closes the run
    earlier (a packed cell that leaves its pack), and the block's end then leaves it as it is."""

    def __init__(self, client: Client, run_id: str):
        self.client, self.run_id, self.open = client, run_id, True
        self.tracker = MlflowTracker(client, run_id)

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: Any) -> None:
        self.end(error)

    def end(self, error: BaseException | None = None) -> None:
        """Ends the run, once, by how its work ended: `error` None (FINISHED), an Exception (FAILED) or a stop."""
        failed = error is not None and stop_of(error) is None
        if self.open and failed:
            self.tag(ERROR_TAG, f"{type(error).__name__}: {error}")
        self.close("FINISHED" if error is None else "FAILED" if failed else "KILLED")

    def close(self, status: str) -> None:
        """Ends the run, once, as `status` (a study some of whose cells failed: FAILED, with no error of its own)."""
        if self.open:
            self.open = False
            self.client.set_terminated(self.run_id, status)

    def tag(self, name: str, value: Any) -> None:
        self.client.set_tag(self.run_id, name, str(value)[:MAX_TAG])


def tracked_run(
    client: Client, experiment_id: str, *, name: str, tags: dict[str, str], parent_id: str | None = None
) -> TrackedRun:
    """A new run, RUNNING (a child of `parent_id`'s, if given), as a TrackedRun context."""
    tags = {**tags, PARENT_TAG: parent_id} if parent_id else tags
    return TrackedRun(client, client.create_run(experiment_id, run_name=name, tags=tags).info.run_id)


def resumed_run(client: Client, run_id: str) -> TrackedRun:
    """An existing run (a study's or a retrieval's parent, which every re-run reuses), RUNNING again, as a
    TrackedRun context."""
    client.update_run(run_id, status="RUNNING")
    return TrackedRun(client, run_id)


def connect(uri: str) -> Client:
    """A client of a store that is already open (a Ray worker's: the driver checked and opened it)."""
    return MlflowClient(uri)
