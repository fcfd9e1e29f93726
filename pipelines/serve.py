"""A library's prompts answering rows of many tasks over HTTP, one frozen model per replica on Ray Serve.

python -m pipelines.serve library=outputs/library/demo             # http://127.0.0.1:8000 until Ctrl-C
python -m pipelines.serve prompts=[a.safetensors,b.safetensors] serve.port=8080
python -m pipelines.serve library=PATH ray=cluster serve.num_replicas=4 serve.gpus_per_replica=1 model.device=cuda

    POST /predict   one row, or {"rows": [row, ...]} -> {"predictions": [{"row": 1, "entry", "task", "prediction",
                    "scores"}, ...]} in the rows' order ("row" counts from 1 within the request; a row's "id" is echoed)
    GET  /entries   the prompts served -> {"model", "entries": [{"id", "task", "score", ...}, ...]}
    GET  /health    -> {"status": "ok", "model", "entries", "cache": {...}, "rows", "batches"}: the replica that
                    answers, its prompt cache and the rows and dynamic batches it has predicted

A row is what `make predict` reads (spot_core.serving.prompts): its `entry` or `task`, and the task's fields or its
`inputs` text. Every row of a request is checked before the request is queued, so a bad row never reaches a batch:
the request is answered 4xx with `{"error": "<one line>", "field": <the field at fault or null>}` (400: not a JSON
object; 413: over serve.max_rows rows or serve.max_body_bytes; 422: a row that cannot be answered, naming it as
"row N") and the server goes on. Checked requests of concurrent calls are gathered into one dynamic batch (up to
serve.max_batch_size requests, waiting at most serve.batch_wait_timeout_s for them) and predicted as one mixed-task
set of rows, in a thread, while the replica goes on accepting calls; the batches that gather meanwhile are predicted
together next, as one set. The prompts and the settings are checked, and a
library verified, before Ray starts: a changed file stops the command in one line.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' parameter types, and through Serve's ingress
# it cannot resolve them from strings (a `request: Request` parameter became a query parameter).
import asyncio
import importlib
import json
import logging
import math
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from omegaconf import DictConfig, OmegaConf
from ray import serve

from pipelines.errors import Terminated, entry_point, one_line, sigterm_raises
from pipelines.predict import check_prompts, load_predictor
from spot_core.config import check_int, check_number
from spot_core.errors import ConfigError
from spot_core.serving import Prediction, RequestError
from spot_core.serving import Request as Row

APP = "spot"  # the Serve application's name
WAITING_BATCHES = 16  # batches Serve may start at once: one predicted, the others waiting to be merged
INT_SETTINGS = ("port", "num_replicas", "max_batch_size", "max_rows", "max_body_bytes")
ONE_ROW_OR_ROWS = 'send one row as a JSON object, or {"rows": [row, ...]}'

app = FastAPI(title="spot serve", docs_url=None, redoc_url=None, openapi_url=None)


class BadCall(Exception):
    """A call refused before its rows are checked: its HTTP status, one line, and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.field = status, field


def refusal(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message), "field": field}, status_code=status)


def jsonable(value: Any) -> Any:
    """`value` with NaN and infinities as null (JSON has neither: a prompt file without a score has NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


async def read_json(request: Request, limit: int) -> Any:
    """The body, parsed; BadCall 413 past `limit` bytes (read no further), 400 for anything but JSON."""
    too_large = BadCall(413, f"the body is over {limit} bytes (serve.max_body_bytes): send fewer rows per request")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise BadCall(400, f"the body is not JSON ({e}): {ONE_ROW_OR_ROWS}") from None


def rows_of(body: Any, max_rows: int) -> list[Any]:
    """The rows a body holds: itself (one row), or its "rows" list."""
    if not isinstance(body, dict):
        raise BadCall(400, f"the body must be a JSON object, got {type(body).__name__}: {ONE_ROW_OR_ROWS}")
    if "rows" not in body:
        return [body]
    rows = body["rows"]
    if not isinstance(rows, list):
        raise BadCall(400, f'"rows" must be a list of rows, got {type(rows).__name__}', "rows")
    if len(body) > 1:
        others = ", ".join(sorted(k for k in body if k != "rows"))
        raise BadCall(400, f'a body with "rows" holds nothing else, got also {others}: put them in the rows', "rows")
    if not rows:
        raise BadCall(400, '"rows" is empty: send at least one row', "rows")
    if len(rows) > max_rows:
        raise BadCall(413, f"{len(rows)} rows, over the limit of {max_rows} (serve.max_rows): split them", "rows")
    return rows


@serve.deployment
@serve.ingress(app)
class Server:
    """One replica: the prompts (a library verified again in this process), the model loaded once, and the
    dynamic batches of the requests it is sent.

    Args:
        config: the command's resolved config as plain containers (paths absolute).
    """

    def __init__(self, config: dict[str, Any]):
        cfg = OmegaConf.create(config)
        self.prompts = check_prompts(cfg)
        self.predictor = load_predictor(cfg)
        s = cfg.serve
        self.max_rows, self.max_body_bytes, self.rows = s.max_rows, s.max_body_bytes, 0
        # @serve.batch takes its settings when the class is defined; these are the config's.
        self.answer.set_max_batch_size(s.max_batch_size)
        self.answer.set_batch_wait_timeout_s(s.batch_wait_timeout_s)
        self.waiting: list[tuple[list[list[Row]], asyncio.Future]] = []
        self.lock = asyncio.Lock()

    @app.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        try:
            rows = rows_of(await read_json(request, self.max_body_bytes), self.max_rows)
            checked = [self.prompts.request(r, self.predictor.codec, f"row {i}") for i, r in enumerate(rows, 1)]
        except BadCall as e:
            return refusal(e.status, str(e), e.field)
        except RequestError as e:
            return refusal(422, str(e), e.field)
        predictions = await self.answer(checked)
        self.rows += len(checked)
        return JSONResponse(
            {"predictions": [jsonable(p.to_json(i)) for i, p in enumerate(predictions, 1)]}
        )

    # Serve forms a batch every batch_wait_timeout_s, also while one is being predicted: those wait on the lock, and
    # the next to hold it predicts every waiting batch's rows at once. Under load one predict then takes all the
    # queued rows instead of many small batches in turn; the predictor itself runs one predict at a time.
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, max_concurrent_batches=WAITING_BATCHES)
    async def answer(self, calls: list[list[Row]]) -> list[list[Prediction]]:
        """The predictions of several calls' rows (`answer_waiting`), split back by call."""
        done = asyncio.get_running_loop().create_future()
        self.waiting.append((calls, done))
        async with self.lock:
            if not done.done():
                await self.answer_waiting()
        return await done

    async def answer_waiting(self) -> None:
        """One mixed-task `predict` of every waiting batch's rows, run in a thread (the event loop goes on accepting
        calls meanwhile); each batch's future gets its calls' predictions."""
        taken, self.waiting = self.waiting, []
        rows = [r for calls, _ in taken for call in calls for r in call]
        try:
            predictions = await asyncio.to_thread(self.predictor.predict, rows)
        except Exception as e:  # noqa: BLE001 - every waiting call fails with it, as one batch would
            for _, done in taken:
                done.set_exception(e)
            return
        start = 0
        for calls, done in taken:
            out = []
            for call in calls:
                out.append(predictions[start : start + len(call)])
                start += len(call)
            done.set_result(out)

    @app.get("/entries")
    async def entries(self) -> JSONResponse:
        prompts = self.prompts.prompts.values()
        return JSONResponse(
            jsonable({"model": self.prompts.model, "entries": [{"id": p.id, **p.info} for p in prompts]})
        )

    @app.get("/health")
    async def health(self) -> JSONResponse:
        cache = self.predictor.cache
        stats = {"bytes": cache.bytes, "hits": cache.stats.hits, "misses": cache.stats.misses,
                 "evictions": cache.stats.evictions, "hit_rate": cache.stats.hit_rate}  # fmt: skip
        body = {"status": "ok", "model": self.prompts.model, "entries": len(self.prompts), "cache": stats}
        return JSONResponse(body | {"rows": self.rows, "batches": self.predictor.throughput.calls})


def check_serve(cfg: DictConfig) -> None:
    """The serve.* settings, and the model's device against the replicas' GPUs.

    Raises:
        ConfigError: a bad value, naming the setting.
    """
    s = cfg.serve
    for key in INT_SETTINGS:
        check_int(s[key], f"serve.{key}")
    if s.port > 65535:
        raise ConfigError(f"serve.port must be a port number (1 to 65535), got {s.port}")
    if not isinstance(s.host, str) or not s.host:
        raise ConfigError(f"serve.host must be an address to listen on (127.0.0.1, 0.0.0.0), got {s.host!r}")
    for key in ("cpus_per_replica", "gpus_per_replica", "batch_wait_timeout_s"):
        check_number(s[key], f"serve.{key}")
    cuda = str(cfg.model.device).startswith("cuda")
    if s.gpus_per_replica > 0 and not cuda:
        raise ConfigError(f"serve.gpus_per_replica={s.gpus_per_replica:g} needs model.device=cuda (now "
                          f"{cfg.model.device}): set it, or serve.gpus_per_replica=0 for CPU replicas")  # fmt: skip
    if cuda and not s.gpus_per_replica > 0:
        raise ConfigError("model.device=cuda needs serve.gpus_per_replica > 0 (1, or a fraction to share a GPU): a "
                          "replica sees only the GPUs Ray gives it")  # fmt: skip


def check_port(host: str, port: int) -> None:
    """The address Serve's HTTP proxy will listen on is free here (else Ray fails late, with a traceback)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a port in TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ConfigError(f"serve.host={host} serve.port={port}: cannot listen there ({e.strerror or e}): "
                              "choose another serve.port, or stop what listens on it") from None  # fmt: skip


def replica_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers for the replicas, its paths absolute (a replica need not run in
    this folder)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    if config["library"]:
        config["library"] = absolute(config["library"])
    config["prompts"] = [absolute(p) for p in config["prompts"] or []]
    if config["model"].get("cache_dir"):
        config["model"]["cache_dir"] = absolute(config["model"]["cache_dir"])
    if tasks := config.get("tasks"):
        tasks["dirs"] = [absolute(d) for d in tasks.get("dirs") or []]
    return config


def absolute(path: str) -> str:
    return str(Path(path).resolve())


def start_ray(r: DictConfig) -> bool:
    """Starts a local Ray, or joins the cluster at ray.address; False where this process is connected already
    (a test session, a notebook: it keeps its own, ray.* aside)."""
    if ray.is_initialized():
        return False
    options = {"include_dashboard": False, "log_to_driver": r.log_to_driver, "logging_level": logging.WARNING}
    if r.address:
        ray.init(address=r.address, **options)
    else:
        ray.init(num_cpus=r.num_cpus, num_gpus=r.num_gpus, **options)
    return True


def check_resources(s: DictConfig) -> None:
    """Replicas that the Ray cluster cannot hold would wait for resources forever: refused here instead."""
    have = ray.cluster_resources()
    for kind, per in (("CPU", s.cpus_per_replica), ("GPU", s.gpus_per_replica)):
        need = per * s.num_replicas
        if need > have.get(kind, 0):
            setting = f"serve.{kind.lower()}s_per_replica"
            raise ConfigError(f"serve.num_replicas={s.num_replicas} x {setting}={per:g} needs {need:g} {kind}s; the "
                              f"Ray cluster has {have.get(kind, 0):g}: lower them, or add nodes")  # fmt: skip


def application(cfg: DictConfig) -> serve.Application:
    """The app: `num_replicas` replicas of `Server` with their resources."""
    s = cfg.serve
    # Under `python -m pipelines.serve` this module is __main__, which Ray would pickle by value: the replicas get
    # the class from the importable module instead.
    server = importlib.import_module("pipelines.serve").Server
    return server.options(
        num_replicas=s.num_replicas,
        # full batches gather and wait while the ones before them are predicted
        max_ongoing_requests=WAITING_BATCHES * s.max_batch_size,
        ray_actor_options={"num_cpus": s.cpus_per_replica, "num_gpus": s.gpus_per_replica},
    ).bind(replica_config(cfg))


def start(cfg: DictConfig) -> str:
    """Checks the prompts (a library verified) and the settings, starts Ray unless this process is connected to one,
    starts Serve and deploys the app; returns the base URL once every replica has loaded the model. A Ray started
    here stays up until `stop(shutdown_ray=True)` or the process's end.

    Raises:
        SpotError: a bad setting or prompt, a changed library file, too few resources; nothing left running.
    """
    check_prompts(cfg)
    return deploy(cfg)


def deploy(cfg: DictConfig) -> str:
    """`start` once the prompts are checked."""
    check_serve(cfg)
    s = cfg.serve
    check_port(s.host, s.port)
    started = start_ray(cfg.ray)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    # Ray's init replaced the SIGTERM handler with one that aborts: a SIGTERM while the replicas load unwinds instead
    with sigterm_raises():
        try:
            check_resources(s)
            serve.start(http_options={"host": s.host, "port": s.port})
            serve.run(application(cfg), name=APP, route_prefix="/")
        except BaseException:
            stop(shutdown_ray=started)
            raise
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::") else s.host
    return f"http://{host}:{s.port}"


def stop(shutdown_ray: bool = False) -> None:
    """Deletes the app (its replicas), then shuts Serve down (its controller, its HTTP proxy) unless other
    applications of the Ray cluster use it; Ray too with `shutdown_ray`."""
    if not ray.is_initialized():
        return
    if APP in serve.status().applications:
        serve.delete(APP)
    if not serve.status().applications:
        serve.shutdown()
    if shutdown_ray:
        ray.shutdown()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Starts the server, prints where it listens, and serves until Ctrl-C or SIGTERM; then shuts it down."""
    prompts = check_prompts(cfg)
    own_ray = not ray.is_initialized()
    url = deploy(cfg)
    try:
        print(f"serving {len(prompts)} entries of {prompts.model} at {url} (POST /predict, GET /entries, GET /health);"
              " Ctrl-C stops", flush=True)  # fmt: skip
        with sigterm_raises():  # again: the handler deploy() left is Ray's
            while True:
                time.sleep(3600)
    except (KeyboardInterrupt, Terminated):
        pass
    finally:
        stop(shutdown_ray=own_ray)
    return {"url": url, "entries": len(prompts), "model": prompts.model}


@entry_point("serve")
def main(cfg: DictConfig) -> None:
    s = run(cfg)
    print(f"stopped: {s['url']} no longer serves", flush=True)


if __name__ == "__main__":
    main()
