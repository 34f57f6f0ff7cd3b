"""The query handlers: predict, predict-multi, lookup, lookup-multi and MLflow's
invocations, each from a parsed body to an :class:`Answer`; the audit log records each."""

from __future__ import annotations

import logging
import time
from typing import Any

from engine.apinode.http.messages import (
    MAX_ITEMS,
    ApiError,
    Query,
    QueryRequest,
    api_context,
    api_key_of,
    items_of,
    n_explanations,
    short_name,
)
from engine.apinode.node import ApiNode, LoadedService, ServedService, UnknownGeneration
from engine.apinode.realtime import CSV_TEXT, TooManyRecords, invocation_records

log = logging.getLogger("nodal.serving")


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
                404,
                "UnknownService",
                f"service '{short_name(q.service)}' is not deployed on this node",
            )
        if served.access_mode not in ("public", "keys"):  # none recorded: nobody, not everybody
            raise ApiError(
                403,
                "AccessNotConfigured",
                f"service '{short_name(q.service)}' has no access mode recorded on this node's "
                "infrastructure: every request is refused until ops set one (public or keys)",
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
                f"this node serves no generation '{exc}' of '{short_name(q.service)}'",
            ) from None
        q.generation = loaded.version
        ep = loaded.endpoints.get(q.endpoint)
        if ep is None:
            raise ApiError(
                404,
                "UnknownEndpoint",
                f"service '{short_name(q.service)}' has no endpoint '{short_name(q.endpoint)}'",
            )
        if ep.kind != kind:
            raise ApiError(
                400,
                "WrongEndpointType",
                f"endpoint '{short_name(q.endpoint)}' is a {ep.kind} endpoint, not a {kind} one",
            )
        return loaded, ep

    def predict(
        self, req: QueryRequest, q: Query, body: dict[str, Any], t0: float
    ) -> dict[str, Any]:
        q.features, q.context, q.n_records = body.get("features"), body.get("context"), 1
        n_expl = n_explanations(body)
        loaded, ep = self.resolve(req, q, body, "prediction")
        result = ep.predict(q.features, n_expl)
        timing = result.pop("_timing")
        q.result = result
        timing["wait"] = 0
        timing["total"] = int((time.perf_counter() - t0) * 1e6)
        return {"result": result, "timing": timing, "apiContext": api_context(loaded, q.endpoint)}

    def predict_multi(
        self, req: QueryRequest, q: Query, body: dict[str, Any], t0: float
    ) -> dict[str, Any]:
        items = items_of(body, "features")
        q.features = [i.get("features") if isinstance(i, dict) else i for i in items]
        q.context = [i.get("context") if isinstance(i, dict) else None for i in items]
        q.n_records = len(items)
        n_expl = n_explanations(body)
        loaded, ep = self.resolve(req, q, body, "prediction")
        results = ep.predict_multi(items, n_expl)
        q.result = results
        timing = {"total": int((time.perf_counter() - t0) * 1e6)}
        return {
            "results": results,
            "timing": timing,
            "apiContext": api_context(loaded, q.endpoint),
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
            "apiContext": api_context(loaded, q.endpoint),
        }

    def lookup_multi(
        self, req: QueryRequest, q: Query, body: dict[str, Any], t0: float
    ) -> dict[str, Any]:
        items = items_of(body, "data")
        q.features = [i.get("data") if isinstance(i, dict) else i for i in items]
        q.n_records = len(items)
        loaded, ep = self.resolve(req, q, body, "lookup")
        results = ep.lookup_multi(items)
        q.result = results
        timing = {"total": int((time.perf_counter() - t0) * 1e6)}
        return {
            "results": results,
            "timing": timing,
            "apiContext": api_context(loaded, q.endpoint),
        }

    def invocations(
        self, req: QueryRequest, q: Query, body: dict[str, Any], t0: float
    ) -> dict[str, Any]:
        _, ep = self.resolve(req, q, body, "prediction")  # the caller may call, first
        try:
            records = invocation_records(body, MAX_ITEMS)
        except TooManyRecords as exc:
            raise ApiError(413, "RequestTooLarge", str(exc)) from None
        q.features, q.n_records = records, len(records)
        if CSV_TEXT in body:
            records = ep.from_csv(records)
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
