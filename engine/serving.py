"""The API node's HTTP server: Litestar on uvicorn, speaking the Dataiku API node protocol.

``create_app`` builds the app (importable, testable without a process);
``app_from_env`` is the uvicorn factory used by ``nodal serve`` (reads NODAL_API_INFRA).

Routes: ``POST /public/api/v1/{service}/{endpoint}/predict`` and ``predict-multi``,
``GET /isAlive/``, OpenAPI at ``/schema``. Bodies are parsed whatever the Content-Type
(the official client sends none) and an empty body is ``{}``. Errors are
``{"errorType", "message", "detailedMessage"}`` and never echo the request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from engine.apinode import ApiNode, LoadedService
from engine.realtime import InvalidRecord, PredictionEndpoint
from engine.settings import Settings, describe_settings, load_settings
from engine.storage.control import open_store

log = logging.getLogger("nodal.serving")
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_ITEMS = 10_000
_json = msgspec.json.Decoder()
_enc = msgspec.json.Encoder()


def error(status: int, error_type: str, message: str, detail: str = "") -> Response:
    body = {"errorType": error_type, "message": message, "detailedMessage": detail or message}
    return Response(_enc.encode(body), status_code=status, media_type="application/json")


def _ok(body: dict[str, Any]) -> Response:
    return Response(_enc.encode(body), status_code=200, media_type="application/json")


async def _parse(request: Request) -> dict[str, Any] | Response:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        return error(413, "RequestTooLarge", f"request body over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = _json.decode(raw)
    except msgspec.DecodeError:
        return error(400, "InvalidJSON", "the request body is not valid JSON")
    if not isinstance(body, dict):
        return error(400, "InvalidRequest", "the request body must be a JSON object")
    return body


def _endpoint(
    node: ApiNode, service: str, endpoint: str
) -> tuple[LoadedService, PredictionEndpoint] | Response:
    loaded = node.services.get(service)
    if loaded is None:
        return error(
            404, "UnknownService", f"service '{service[:100]}' is not deployed on this node"
        )
    ep = loaded.endpoints.get(endpoint)
    if ep is None:
        return error(
            404, "UnknownEndpoint", f"service '{service[:100]}' has no endpoint '{endpoint[:100]}'"
        )
    return loaded, ep


def _context(loaded: LoadedService, endpoint: str) -> dict[str, str]:
    return {
        "serviceId": loaded.service_id,
        "endpointId": endpoint,
        "serviceGeneration": loaded.version,
    }


def create_app(settings: Settings, infra_id: str, sync: bool = True) -> Litestar:
    """The API node app for ``infra_id``; with ``sync`` it pulls desired state in the background."""
    store = open_store(settings.control_store_url)
    node = ApiNode(settings, store, infra_id)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        task = None
        if sync:
            await asyncio.to_thread(node.sync)

            async def poll() -> None:
                while True:
                    await asyncio.sleep(settings.poll_seconds)
                    try:
                        await asyncio.to_thread(node.sync)
                    except Exception:
                        log.exception("sync with the deployer failed; retrying")

            task = asyncio.create_task(poll())
        try:
            yield
        finally:
            if task:
                task.cancel()

    @get("/isAlive/", sync_to_thread=False, include_in_schema=True)
    def is_alive() -> dict[str, Any]:
        return {"alive": True, "services": {k: v.version for k, v in node.services.items()}}

    @post("/public/api/v1/{service:str}/{endpoint:str}/predict", status_code=200)
    async def predict(request: Request, service: str, endpoint: str) -> Response:
        t0 = time.perf_counter()
        found = _endpoint(node, service, endpoint)
        if isinstance(found, Response):
            return found
        body = await _parse(request)
        if isinstance(body, Response):
            return body
        loaded, ep = found
        try:
            result = ep.predict(body.get("features"))
        except InvalidRecord as exc:
            return error(400, "InvalidRecord", str(exc))
        timing = result.pop("_timing")
        timing["wait"] = 0
        timing["total"] = int((time.perf_counter() - t0) * 1e6)
        return _ok({"result": result, "timing": timing, "apiContext": _context(loaded, endpoint)})

    @post("/public/api/v1/{service:str}/{endpoint:str}/predict-multi", status_code=200)
    async def predict_multi(request: Request, service: str, endpoint: str) -> Response:
        t0 = time.perf_counter()
        found = _endpoint(node, service, endpoint)
        if isinstance(found, Response):
            return found
        body = await _parse(request)
        if isinstance(body, Response):
            return body
        items = body.get("items")
        if not isinstance(items, list):
            return error(400, "InvalidRequest", "'items' must be a list of {\"features\": {...}}")
        if len(items) > MAX_ITEMS:
            return error(413, "RequestTooLarge", f"at most {MAX_ITEMS} items per request")
        loaded, ep = found
        results = ep.predict_multi(items)
        timing = {"total": int((time.perf_counter() - t0) * 1e6)}
        return _ok({"results": results, "timing": timing, "apiContext": _context(loaded, endpoint)})

    def internal_error(_request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            if exc.status_code == 413:
                return error(413, "RequestTooLarge", f"request body over {MAX_BODY_BYTES} bytes")
            return error(
                exc.status_code, type(exc).__name__.removesuffix("Exception"), str(exc.detail)[:200]
            )
        log.exception("internal error")
        return error(500, "InternalError", "the API node failed to answer; see its log")

    app = Litestar(
        route_handlers=[is_alive, predict, predict_multi],
        lifespan=[lifespan],
        exception_handlers={Exception: internal_error},
        openapi_config=OpenAPIConfig(title="nodal API node", version="0.1.0", path="/schema"),
        request_max_body_size=MAX_BODY_BYTES,
    )
    app.state.node = node
    return app


def app_from_env() -> Litestar:
    """uvicorn factory: ``uvicorn --factory engine.serving:app_from_env``."""
    return create_app(load_settings(), os.environ["NODAL_API_INFRA"])


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


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ["NODAL_API_INFRA"] = args.infra
    uvicorn.run(
        "engine.serving:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
