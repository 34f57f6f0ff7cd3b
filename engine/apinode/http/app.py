"""The API node's HTTP server: Litestar on uvicorn, speaking the Dataiku API node protocol.

``create_app`` builds the app (importable, testable without a process);
``app_from_env`` is the uvicorn factory used by ``nodal serve`` (reads NODAL_API_INFRA).

Routes under ``/public/api/v1/{service}/{endpoint}/``: ``predict``, ``predict-multi``,
``lookup``, ``lookup-multi`` (Dataiku) and ``invocations`` (MLflow; also ``POST
/invocations`` when the node serves exactly one prediction endpoint); ``GET /isAlive/``,
``GET /metrics`` (Prometheus), OpenAPI at ``/schema``. Bodies are parsed as JSON whatever
the Content-Type (the official client sends none) and an empty body is ``{}``; the MLflow
routes also read ``text/csv`` (a header row, then records). Errors are
``{"errorType", "message", "detailedMessage"}`` and never echo the request. Every query is
appended to the audit log (engine/apinode/querylog.py) before its answer is returned.

The query routes are the hot path. ``create_app`` returns a :class:`QueryLane`, an ASGI app
that answers them without Litestar's per-request machinery (Litestar serves the rest and
declares the query routes for the schema); ``nodal serve`` runs it on uvicorn with uvloop,
httptools and :class:`engine.apinode.http.protocol.ApiNodeProtocol`, which answers queries inside
the protocol (:func:`server_options`); bench/bench_serving.py measures the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp

from engine.apinode import querylog
from engine.apinode.http.handlers import METHODS, Handlers
from engine.apinode.http.lane import QueryLane, StaticNode
from engine.apinode.http.limits import ConnectionLimits
from engine.apinode.http.messages import (
    MAX_BODY_BYTES,
    Answer,
    ApiError,
    Query,
    QueryRequest,
    error,
    error_body,
    json_encoder,
    parse_body,
    route_names,
    short_name,
)
from engine.apinode.node import ApiNode, LoadedService, ServedService
from engine.apinode.online_state import StateStoreUnavailable
from engine.apinode.realtime import InvalidRecord, LookupFailed
from engine.core.settings import Settings, load_settings
from engine.storage.control import open_store
from engine.storage.objects import open_store as open_objects

log = logging.getLogger("nodal.serving")


DEV_INFRA = "design-dev"


def create_dev_app(settings: Settings, service_id: str, endpoints: dict[str, Any]) -> QueryLane:
    """An app serving a design project's service as generation ``dev`` (query log: design-dev)."""
    loaded = LoadedService(service_id, "dev", {}, endpoints)
    served = ServedService(service_id, {"dev": loaded}, ((1.0, "dev"),), "dev", "public", "dev")
    return create_app(settings, DEV_INFRA, sync=False, node=StaticNode({service_id: served}))


UNKNOWN = "_unknown"
REFUSED_CONTEXT_BYTES = 1024  # what the audit log keeps of a refused request's context


def small(context: Any) -> Any:
    """A refused request's ``context`` if it is small (a request id), else its size."""
    if context is None:
        return None
    size = len(json_encoder.encode(context))
    return context if size <= REFUSED_CONTEXT_BYTES else {"omitted_bytes": size}


def metric_labels(node: ApiNode, q: Query) -> tuple[str, str, str]:
    """(service, endpoint, generation) labels of a query: names this node declares, else
    ``_unknown``, so made-up names in URLs cannot grow the metrics without bound."""
    served = node.services.get(q.service)
    if served is None:
        return UNKNOWN, UNKNOWN, ""
    if not any(q.endpoint in g.endpoints for g in served.generations.values()):
        return q.service, UNKNOWN, ""
    return q.service, q.endpoint, q.generation if q.generation in served.generations else ""


def create_app(
    settings: Settings,
    infra_id: str,
    sync: bool = True,
    node: Any = None,
    freeze_gc: bool = False,
) -> QueryLane:
    """The API node app for ``infra_id``; with ``sync`` it pulls desired state in the background.

    ``freeze_gc`` (for a process of its own, as ``nodal serve`` runs it): after start-up,
    move every object into the garbage collector's permanent generation.
    """
    if node is None:
        node = ApiNode(settings, open_store(settings.control_store_url), infra_id)
    handlers = Handlers(node)
    qlog = querylog.QueryLog(settings.home, infra_id)
    metrics = querylog.Metrics(settings.home, infra_id, qlog.worker)
    objects = open_objects(settings)  # compacted query logs go there (NODAL_STORE_URL)

    def answer(req: QueryRequest, service: str, endpoint: str, method: str) -> Answer:
        t0 = time.perf_counter()
        q = Query(service, endpoint, method)
        status, error_type = 200, None
        try:
            body = parse_body(req, mlflow=method == "invocations")
            if method == "invocations" and not service:
                q.service, q.endpoint = handlers.only_prediction_endpoint()
            content = METHODS[method](handlers, req, q, body, t0)
        except (ApiError, StateStoreUnavailable) as exc:  # the latter: 503, retry it
            status, error_type, content = (
                exc.status,
                exc.error_type,
                error_body(exc.error_type, exc.message),
            )
        except InvalidRecord as exc:
            error_type = "LookupFailed" if isinstance(exc, LookupFailed) else "InvalidRecord"
            status, content = 400, error_body(error_type, str(exc))
        except Exception:
            log.exception(
                "internal error answering %s %s/%s",
                method,
                short_name(service),
                short_name(endpoint),
            )
            status, error_type = 500, "InternalError"
            content = error_body(error_type, "the API node failed to answer; see its log")
        if error_type and method == "invocations":
            content["error_code"] = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
        payload = json_encoder.encode(content)
        seconds = time.perf_counter() - t0
        service, endpoint, generation = metric_labels(node, q)
        refused = status >= 400
        qlog.record(
            service=short_name(q.service),
            endpoint=short_name(q.endpoint),
            generation=q.generation,
            method=method,
            status=status,
            error_type=error_type,
            duration_us=int(seconds * 1e6),
            n_records=q.n_records,
            # A refused request leaves a summary, not its body: a client cannot fill the
            # audit log (and Monitoring) with whatever it posts.
            features={"refused": True, "n_records": q.n_records} if refused else q.features,
            context=small(q.context) if refused else q.context,
            result=q.result,
        )
        metrics.observe(service, endpoint, generation, method, status, seconds)
        return Answer(status, payload, q.extra_headers)

    async def housekeeping() -> None:
        """Rotate and compact the query log, publish metrics (on the event loop: no races)."""
        qlog.rotate_if_due()
        metrics.snapshot()
        await asyncio.to_thread(querylog.compact, settings.home, infra_id)
        await asyncio.to_thread(querylog.publish_compacted, settings.home, infra_id, objects)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        task = None
        if sync:
            await asyncio.to_thread(node.sync)
        if freeze_gc:
            # What is loaded by now (libraries, the models) lives as long as the worker: keep
            # it out of the garbage collector's full passes, which walked ~200k objects every
            # few hundred requests (~9 µs a request on average, measured in process).
            gc.freeze()
        if sync:

            async def poll() -> None:
                while True:
                    await asyncio.sleep(settings.poll_seconds)
                    try:
                        await asyncio.to_thread(node.sync)
                    except Exception:
                        log.exception("sync with the deployer failed; retrying")
                    try:
                        await housekeeping()
                    except Exception:
                        log.exception("query log housekeeping failed; retrying")

            task = asyncio.create_task(poll())
        try:
            yield
        finally:
            if task:
                task.cancel()
            qlog.close()
            metrics.snapshot()
            with contextlib.suppress(Exception):
                querylog.compact(settings.home, infra_id)
                querylog.publish_compacted(settings.home, infra_id, objects)

    @get("/isAlive/", sync_to_thread=False, summary="Liveness: the generations this worker serves")
    def is_alive() -> dict[str, Any]:
        return {
            "alive": True,
            "services": {k: v.primary for k, v in node.services.items()},
            "generations": {k: list(v.generations) for k, v in node.services.items()},
        }

    @get(
        "/metrics",
        sync_to_thread=False,
        media_type="text/plain; version=0.0.4",
        summary="Prometheus metrics",
    )
    def metrics_route() -> str:
        return metrics.render()

    @get("/ping", sync_to_thread=False, include_in_schema=False)
    def ping() -> str:
        return "\n"

    prefix = "/public/api/v1/{service:str}/{endpoint:str}"

    @post(f"{prefix}/predict", status_code=200, summary="Score one record (Dataiku predict)")
    async def predict(request: Request) -> ASGIApp:
        return answer(await QueryRequest.from_litestar(request), *route_names(request), "predict")

    @post(f"{prefix}/predict-multi", status_code=200, summary="Score several records")
    async def predict_multi(request: Request) -> ASGIApp:
        return answer(
            await QueryRequest.from_litestar(request), *route_names(request), "predict-multi"
        )

    @post(f"{prefix}/lookup", status_code=200, summary="Look one record up in a dataset")
    async def lookup(request: Request) -> ASGIApp:
        return answer(await QueryRequest.from_litestar(request), *route_names(request), "lookup")

    @post(f"{prefix}/lookup-multi", status_code=200, summary="Look several records up")
    async def lookup_multi(request: Request) -> ASGIApp:
        return answer(
            await QueryRequest.from_litestar(request), *route_names(request), "lookup-multi"
        )

    @post(f"{prefix}/invocations", status_code=200, summary="MLflow scoring protocol")
    async def invocations(request: Request) -> ASGIApp:
        return answer(
            await QueryRequest.from_litestar(request), *route_names(request), "invocations"
        )

    @post(
        "/invocations", status_code=200, summary="MLflow scoring protocol (the node's only model)"
    )
    async def bare_invocations(request: Request) -> ASGIApp:
        return answer(await QueryRequest.from_litestar(request), "", "", "invocations")

    def internal_error(_request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            if exc.status_code == 413:
                return error(413, "RequestTooLarge", f"request body over {MAX_BODY_BYTES} bytes")
            name = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code)
            return error(
                exc.status_code,
                name or type(exc).__name__.removesuffix("Exception"),
                str(exc.detail)[:200],
            )
        log.exception("internal error")
        return error(500, "InternalError", "the API node failed to answer; see its log")

    app = Litestar(
        route_handlers=[
            is_alive,
            metrics_route,
            ping,
            predict,
            predict_multi,
            lookup,
            lookup_multi,
            invocations,
            bare_invocations,
        ],
        lifespan=[lifespan],
        exception_handlers={Exception: internal_error},
        openapi_config=OpenAPIConfig(title="nodal API node", version="0.2.0", path="/schema"),
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # keep the process's JSON log lines (configure_logging)
    )
    app.state.node = node
    app.state.querylog = qlog
    app.state.housekeeping = housekeeping
    return QueryLane(app, answer, ConnectionLimits.from_settings(settings))


def app_from_env() -> QueryLane:
    """uvicorn factory: ``uvicorn --factory engine.apinode.http.app:app_from_env``."""
    if not logging.getLogger().handlers:  # a worker process spawned by uvicorn
        configure_logging()
    return create_app(load_settings(), os.environ["NODAL_API_INFRA"], freeze_gc=True)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line (ts, level, logger, message, pid, exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def server_options() -> dict[str, str]:
    """uvicorn's event loop and HTTP parser for the API node: uvloop and httptools (C code,
    runtime dependencies; with them one worker answered ~60 % more predicts a second here
    than on asyncio's loop and the pure-Python h11 parser). Falls back to those where the C
    packages are missing (uvloop has no Windows build), with a warning."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if (loop, http) != ("uvloop", "httptools"):
        log.warning(
            "serving with loop=%s http=%s: install uvloop and httptools to go faster", loop, http
        )
    if http == "httptools":  # one write per answer, queries answered in the protocol
        from engine.apinode.http import protocol

        http = protocol.IMPORT_PATH
    return {"loop": loop, "http": http}
