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
appended to the audit log (engine/querylog.py) before its answer is returned.

The query routes are the hot path. ``create_app`` returns a :class:`QueryLane`, an ASGI app
that answers them without Litestar's per-request machinery (Litestar serves the rest and
declares the query routes for the schema); ``nodal serve`` runs it on uvicorn with uvloop,
httptools and :class:`engine.http_protocol.ApiNodeProtocol`, which answers queries inside
the protocol (:func:`server_options`); bench/bench_serving.py measures the result.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import gc
import importlib.util
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp, Receive, Scope, Send

from engine import querylog
from engine.apikeys import KeyChecker
from engine.apinode import ApiNode, LoadedService, ServedService, UnknownGeneration
from engine.realtime import InvalidRecord, LookupFailed, csv_records, invocation_records
from engine.settings import Settings, describe_settings, load_settings
from engine.storage.control import open_store

log = logging.getLogger("nodal.serving")
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_ITEMS = 10_000
MAX_EXPLANATIONS = 20
_json = msgspec.json.Decoder()
_enc = msgspec.json.Encoder()
_HEADERS = {"content-type": "application/json"}
_JSON = (b"content-type", b"application/json")


class ApiError(Exception):
    """A refused query: HTTP status, errorType and a message that echoes nothing."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def error_body(error_type: str, message: str) -> dict[str, str]:
    return {"errorType": error_type, "message": message, "detailedMessage": message}


def error(status: int, error_type: str, message: str) -> Response:
    return Response(
        _enc.encode(error_body(error_type, message)), status_code=status, headers=_HEADERS
    )


class Answer:
    """A finished answer: sent as two ASGI messages, or written whole by the protocol's
    direct lane (status, headers and body are what it reads).

    The query routes return this instead of a Litestar ``Response``: the body is already
    JSON bytes, so Litestar's response machinery (headers objects, media-type handling,
    serialisation) would only add work: 20–50 µs of CPU a request, measured in process.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.status, self.body = status, body
        self.headers = [_JSON, (b"content-length", str(len(body)).encode())]
        if extra:
            self.headers += [(k.encode(), v.encode()) for k, v in extra.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


@dataclass(slots=True)
class Query:
    """What the audit log records about one query, filled in while it is answered."""

    service: str
    endpoint: str
    method: str
    generation: str | None = None
    n_records: int = 0
    features: Any = None
    context: Any = None
    result: Any = None
    extra_headers: dict[str, str] | None = None


def _names(request: Request) -> tuple[str, str]:
    params = request.path_params
    return params["service"], params["endpoint"]


def _short(name: str) -> str:
    return name[:100]


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 µs more
class QueryRequest:
    """What the query methods read of an HTTP request: its body and two headers.

    ``body`` is None when the body was over :data:`MAX_BODY_BYTES` (it was not read whole).
    """

    body: bytes | None
    content_type: str = ""
    authorization: str | None = None

    @classmethod
    async def from_litestar(cls, request: Request) -> QueryRequest:
        try:
            body: bytes | None = await request.body()
        except HTTPException as exc:
            if exc.status_code != 413:
                raise
            body = None
        headers = request.headers
        return cls(body, headers.get("content-type", ""), headers.get("authorization"))


def parse_body(req: QueryRequest, mlflow: bool = False) -> dict[str, Any]:
    """The body as a JSON object whatever the Content-Type (the official client sends none);
    for MLflow's ``/invocations`` (``mlflow``), a ``text/csv`` body is read as CSV."""
    raw = req.body
    if raw is None or len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "RequestTooLarge", f"request body over {MAX_BODY_BYTES} bytes")
    if mlflow and req.content_type.startswith("text/csv"):
        try:
            return {"dataframe_records": csv_records(raw.decode())}
        except UnicodeDecodeError:
            raise ApiError(400, "InvalidCSV", "the CSV body is not UTF-8 text") from None
    if not raw.strip():
        return {}
    try:
        body = _json.decode(raw)
    except RecursionError:
        raise ApiError(400, "InvalidJSON", "the request body is nested too deeply") from None
    except msgspec.DecodeError:
        # Python's json accepts NaN/Infinity, which some clients send; validation refuses them.
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            hint = " (/invocations takes application/json or text/csv)" if mlflow else ""
            raise ApiError(
                400, "InvalidJSON", f"the request body is not valid JSON{hint}"
            ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidRequest", "the request body must be a JSON object")
    return body


def api_key_of(authorization: str | None) -> str | None:
    """The key sent as HTTP Basic user name (empty password) or as a Bearer token."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user.split(":", 1)[0] or None
    return None


def _items(body: dict[str, Any], what: str) -> list[Any]:
    items = body.get("items")
    if not isinstance(items, list):
        raise ApiError(400, "InvalidRequest", f"'items' must be a list of {{\"{what}\": {{...}}}}")
    if len(items) > MAX_ITEMS:
        raise ApiError(413, "RequestTooLarge", f"at most {MAX_ITEMS} items per request")
    return items


def _n_explanations(body: dict[str, Any]) -> int:
    spec = body.get("explanations")
    if not isinstance(spec, dict) or spec.get("enabled") is not True:
        return 0
    n = spec.get("nExplanations")
    if n is None:
        return 3
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ApiError(
            400, "InvalidRequest", "'explanations.nExplanations' must be a positive integer"
        )
    return min(n, MAX_EXPLANATIONS)


def _api_context(loaded: LoadedService, endpoint: str) -> dict[str, str]:
    return {
        "serviceId": loaded.service_id,
        "endpointId": endpoint,
        "serviceGeneration": loaded.version,
    }


class Handlers:
    """The query methods of one API node worker (each returns the answer's body)."""

    def __init__(self, node: ApiNode) -> None:
        self.node = node

    def resolve(
        self, req: QueryRequest, q: Query, body: dict[str, Any], kind: str
    ) -> tuple[LoadedService, Any]:
        served: ServedService | None = self.node.services.get(q.service)
        if served is None:
            raise ApiError(
                404, "UnknownService", f"service '{_short(q.service)}' is not deployed on this node"
            )
        if served.access_mode == "keys":
            key = api_key_of(req.authorization)
            if not self.node.keys.allows(key, q.service):
                q.extra_headers = {"www-authenticate": 'Basic realm="nodal"'}
                message = (
                    "this service needs an API key (HTTP Basic user name, or Bearer token)"
                    if key is None
                    else "this API key is not valid for this service"
                )
                raise ApiError(401, "Unauthorized", message)
        try:
            loaded = served.pick(body.get("dispatch"))
        except UnknownGeneration as exc:
            raise ApiError(
                404,
                "UnknownGeneration",
                f"this node serves no generation '{exc}' of '{_short(q.service)}'",
            ) from None
        q.generation = loaded.version
        ep = loaded.endpoints.get(q.endpoint)
        if ep is None:
            raise ApiError(
                404,
                "UnknownEndpoint",
                f"service '{_short(q.service)}' has no endpoint '{_short(q.endpoint)}'",
            )
        if ep.kind != kind:
            raise ApiError(
                400,
                "WrongEndpointType",
                f"endpoint '{_short(q.endpoint)}' is a {ep.kind} endpoint, not a {kind} one",
            )
        return loaded, ep

    def predict(
        self, req: QueryRequest, q: Query, body: dict[str, Any], t0: float
    ) -> dict[str, Any]:
        q.features, q.context, q.n_records = body.get("features"), body.get("context"), 1
        n_expl = _n_explanations(body)
        loaded, ep = self.resolve(req, q, body, "prediction")
        result = ep.predict(q.features, n_expl)
        timing = result.pop("_timing")
        q.result = result
        timing["wait"] = 0
        timing["total"] = int((time.perf_counter() - t0) * 1e6)
        return {"result": result, "timing": timing, "apiContext": _api_context(loaded, q.endpoint)}

    def predict_multi(
        self, req: QueryRequest, q: Query, body: dict[str, Any], t0: float
    ) -> dict[str, Any]:
        items = _items(body, "features")
        q.features = [i.get("features") if isinstance(i, dict) else i for i in items]
        q.context = [i.get("context") if isinstance(i, dict) else None for i in items]
        q.n_records = len(items)
        n_expl = _n_explanations(body)
        loaded, ep = self.resolve(req, q, body, "prediction")
        results = ep.predict_multi(items, n_expl)
        q.result = results
        timing = {"total": int((time.perf_counter() - t0) * 1e6)}
        return {
            "results": results,
            "timing": timing,
            "apiContext": _api_context(loaded, q.endpoint),
        }

    def lookup(
        self, req: QueryRequest, q: Query, body: dict[str, Any], t0: float
    ) -> dict[str, Any]:
        q.features, q.context, q.n_records = body.get("data"), body.get("context"), 1
        loaded, ep = self.resolve(req, q, body, "lookup")
        result = ep.lookup(q.features)
        q.result = [result]
        timing = {"total": int((time.perf_counter() - t0) * 1e6)}
        return {
            "results": [result],
            "timing": timing,
            "apiContext": _api_context(loaded, q.endpoint),
        }

    def lookup_multi(
        self, req: QueryRequest, q: Query, body: dict[str, Any], t0: float
    ) -> dict[str, Any]:
        items = _items(body, "data")
        q.features = [i.get("data") if isinstance(i, dict) else i for i in items]
        q.n_records = len(items)
        loaded, ep = self.resolve(req, q, body, "lookup")
        results = ep.lookup_multi(items)
        q.result = results
        timing = {"total": int((time.perf_counter() - t0) * 1e6)}
        return {
            "results": results,
            "timing": timing,
            "apiContext": _api_context(loaded, q.endpoint),
        }

    def invocations(
        self, req: QueryRequest, q: Query, body: dict[str, Any], t0: float
    ) -> dict[str, Any]:
        records = invocation_records(body)
        if len(records) > MAX_ITEMS:
            raise ApiError(413, "RequestTooLarge", f"at most {MAX_ITEMS} records per request")
        q.features, q.n_records = records, len(records)
        _, ep = self.resolve(req, q, body, "prediction")
        predictions = ep.predict_records(records)
        q.result = predictions
        return {"predictions": predictions}

    def only_prediction_endpoint(self) -> tuple[str, str]:
        """(service, endpoint) for the bare MLflow route: the node's one prediction endpoint."""
        found = [
            (name, ep_id)
            for name, served in self.node.services.items()
            for ep_id, ep in served.generations[served.primary].endpoints.items()
            if ep.kind == "prediction"
        ]
        if len(found) != 1:
            raise ApiError(
                404,
                "AmbiguousEndpoint",
                f"this node serves {len(found)} prediction endpoints; "
                "POST to /public/api/v1/{service}/{endpoint}/invocations instead",
            )
        return found[0]


METHODS = {
    "predict": Handlers.predict,
    "predict-multi": Handlers.predict_multi,
    "lookup": Handlers.lookup,
    "lookup-multi": Handlers.lookup_multi,
    "invocations": Handlers.invocations,
}


_QUERY_PREFIX = "/public/api/v1/"


def query_route(path: str) -> tuple[str, str, str] | None:
    """(service, endpoint, method) when ``path`` is a query route, else None.

    The same paths the Litestar routes below declare: ``/public/api/v1/{service}/{endpoint}/
    {method}`` and ``/invocations`` (a trailing slash allowed, as Litestar allows it).
    """
    if path.endswith("/"):
        path = path[:-1]
    if path == "/invocations":
        return "", "", "invocations"
    if not path.startswith(_QUERY_PREFIX):
        return None
    parts = path[len(_QUERY_PREFIX) :].split("/")
    if len(parts) != 3 or parts[2] not in METHODS or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1], parts[2]


def declared_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The request's Content-Length (0 when absent or not a number)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


class QueryLane:
    """The API node's ASGI app: query routes go straight to the answering function, every
    other request (liveness, metrics, OpenAPI, wrong methods, unknown paths) to Litestar.

    A query's work is a few tens of microseconds; Litestar's per-request machinery (routing,
    connection and signature objects, header parsing, body streaming) took about a quarter of
    a worker's CPU under load (py-spy, bench/bench_serving.py). The lane reads the body and the
    two headers the query methods use, calls the same function the Litestar routes call
    (which stay declared: they are the OpenAPI schema, and they answer alike: a test holds
    the two paths equal), and sends the answer as the routes would.

    ``route`` and ``respond`` are also what :class:`engine.http_protocol.ApiNodeProtocol`
    calls to answer a query inside the HTTP protocol, without an ASGI round.
    """

    max_body = MAX_BODY_BYTES

    def __init__(self, app: Litestar, answer: Callable[[QueryRequest, str, str, str], Answer]):
        self.app, self.answer = app, answer

    @property
    def state(self) -> Any:  # the Litestar app's state (node, query log, housekeeping)
        return self.app.state

    @staticmethod
    def route(method: str, path: str) -> tuple[str, str, str] | None:
        """(service, endpoint, method) of a query request, None for anything else."""
        return query_route(path) if method == "POST" else None

    def respond(
        self, route: tuple[str, str, str], headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> Answer:
        """The answer to a query (``headers`` as ASGI gives them; ``body`` None: too large)."""
        content_type, authorization = "", None
        for name, value in headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        return self.answer(QueryRequest(body, content_type, authorization), *route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.route(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        body: bytes | None = None
        if declared_length(scope["headers"]) <= MAX_BODY_BYTES:
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client left: nothing to answer
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    break
                chunks.append(chunk)
                if not message.get("more_body", False):
                    body = b"".join(chunks)
                    break
        await self.respond(route, scope["headers"], body)(scope, receive, send)


class StaticNode:
    """A node whose services are given, not pulled (the Studio's dev server)."""

    def __init__(self, services: dict[str, ServedService]) -> None:
        self.services = services
        self.keys = KeyChecker()

    def sync(self) -> None:
        return None


DEV_INFRA = "design-dev"


def create_dev_app(settings: Settings, service_id: str, endpoints: dict[str, Any]) -> QueryLane:
    """An app serving a design project's service as generation ``dev`` (query log: design-dev)."""
    loaded = LoadedService(service_id, "dev", {}, endpoints)
    served = ServedService(service_id, {"dev": loaded}, ((1.0, "dev"),), "dev", "public", "dev")
    return create_app(settings, DEV_INFRA, sync=False, node=StaticNode({service_id: served}))


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

    def answer(req: QueryRequest, service: str, endpoint: str, method: str) -> Answer:
        t0 = time.perf_counter()
        q = Query(service, endpoint, method)
        status, error_type = 200, None
        try:
            body = parse_body(req, mlflow=method == "invocations")
            if method == "invocations" and not service:
                q.service, q.endpoint = handlers.only_prediction_endpoint()
            content = METHODS[method](handlers, req, q, body, t0)
        except ApiError as exc:
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
                "internal error answering %s %s/%s", method, _short(service), _short(endpoint)
            )
            status, error_type = 500, "InternalError"
            content = error_body(error_type, "the API node failed to answer; see its log")
        if error_type and method == "invocations":
            content["error_code"] = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
        payload = _enc.encode(content)
        seconds = time.perf_counter() - t0
        known = q.service in node.services
        qlog.record(
            service=_short(q.service),
            endpoint=_short(q.endpoint),
            generation=q.generation,
            method=method,
            status=status,
            error_type=error_type,
            duration_us=int(seconds * 1e6),
            n_records=q.n_records,
            features=q.features,
            context=q.context,
            result=q.result,
        )
        metrics.observe(
            q.service if known else "_unknown",
            q.endpoint if known else "_unknown",
            q.generation or "",
            method,
            status,
            seconds,
        )
        return Answer(status, payload, q.extra_headers)

    async def housekeeping() -> None:
        """Rotate and compact the query log, publish metrics (on the event loop: no races)."""
        qlog.rotate_if_due()
        metrics.snapshot()
        await asyncio.to_thread(querylog.compact, settings.home, infra_id)

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
        return answer(await QueryRequest.from_litestar(request), *_names(request), "predict")

    @post(f"{prefix}/predict-multi", status_code=200, summary="Score several records")
    async def predict_multi(request: Request) -> ASGIApp:
        return answer(await QueryRequest.from_litestar(request), *_names(request), "predict-multi")

    @post(f"{prefix}/lookup", status_code=200, summary="Look one record up in a dataset")
    async def lookup(request: Request) -> ASGIApp:
        return answer(await QueryRequest.from_litestar(request), *_names(request), "lookup")

    @post(f"{prefix}/lookup-multi", status_code=200, summary="Look several records up")
    async def lookup_multi(request: Request) -> ASGIApp:
        return answer(await QueryRequest.from_litestar(request), *_names(request), "lookup-multi")

    @post(f"{prefix}/invocations", status_code=200, summary="MLflow scoring protocol")
    async def invocations(request: Request) -> ASGIApp:
        return answer(await QueryRequest.from_litestar(request), *_names(request), "invocations")

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
    return QueryLane(app, answer)


def app_from_env() -> QueryLane:
    """uvicorn factory: ``uvicorn --factory engine.serving:app_from_env``."""
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodal serve",
        description="Run an API node: serve the API services deployed to one apinode infrastructure.",
        epilog="Settings (environment):\n" + describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--infra", required=True, help="apinode infrastructure id, e.g. api-prod")
    parser.add_argument("--port", type=int, default=12000, help="TCP port (default 12000)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    return parser


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
        from engine import http_protocol

        http = http_protocol.IMPORT_PATH
    return {"loop": loop, "http": http}


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    configure_logging()
    os.environ["NODAL_API_INFRA"] = args.infra
    uvicorn.run(
        "engine.serving:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        log_config=None,
        # No X-Forwarded-* rewriting (nothing here uses the client address), so uvicorn hands
        # the protocol the app itself and queries take the direct lane (http_protocol.py).
        proxy_headers=False,
        **server_options(),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
