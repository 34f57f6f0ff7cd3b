"""API health from the API node's query log: volume, errors and latency over time.

Everything is aggregated in DuckDB over the query log's table expression
(:func:`engine.apinode.querylog.scan_sql`); only the aggregates come back. Functions take the table
expression itself, so any source with the query log's columns works (tests pass their own
Parquet files).

Server errors (5xx) and client errors (4xx) are counted apart: the **error rate** is the
share of 5xx answers, what an endpoint's health is judged on; 4xx answers (a record that
fails validation, an unknown lookup key, a missing API key) are the callers' mistakes and
are shown as their own column (``client_errors``, ``client_error_rate``), never alarmed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.storage import datasets as ds

GROUPS = ("service", "endpoint", "generation")
BUCKETS = {"minute": "1 minute", "hour": "1 hour", "day": "1 day"}
# Endpoint status from the last window: server error rate at or above these → WARNING / ERROR.
ERROR_RATE_WARNING, ERROR_RATE_ALARM = 0.01, 0.05
SERVER_ERRORS = "status >= 500"
CLIENT_ERRORS = "status >= 400 AND status < 500"


@dataclass(frozen=True)
class EndpointHealth:
    service: str
    endpoint: str
    queries: int
    error_rate: float  # server errors (5xx) per query
    p95_ms: float
    status: str
    message: str
    client_error_rate: float = 0.0  # client errors (4xx) per query: shown, not judged


def source(home: Path, infra_id: str) -> str | None:
    """The query log of ``infra_id`` as a table expression, or None before any traffic."""
    from engine.apinode import querylog  # the API node's module; Monitoring only reads its files

    return querylog.scan_sql(home, infra_id)


def _latency_cols() -> str:
    return (
        "count(*) AS queries, sum(n_records) AS records, "
        f"count(*) FILTER (WHERE {SERVER_ERRORS}) AS server_errors, "
        f"count(*) FILTER (WHERE {CLIENT_ERRORS}) AS client_errors, "
        f"count(*) FILTER (WHERE {SERVER_ERRORS}) / count(*) AS error_rate, "
        f"count(*) FILTER (WHERE {CLIENT_ERRORS}) / count(*) AS client_error_rate, "
        "quantile_cont(duration_us, 0.5) / 1000.0 AS p50_ms, "
        "quantile_cont(duration_us, 0.95) / 1000.0 AS p95_ms, "
        "quantile_cont(duration_us, 0.99) / 1000.0 AS p99_ms"
    )


def over_time(table: str, bucket: str = "hour", by: tuple[str, ...] = GROUPS) -> pd.DataFrame:
    """Volume, error rates (5xx; 4xx apart) and p50/p95/p99 latency (ms) per bucket and group."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}, not {bucket!r}")
    keys = ", ".join(by)
    sql = f"""
        SELECT time_bucket(INTERVAL '{BUCKETS[bucket]}', ts) AS bucket,
               {keys + "," if keys else ""} {_latency_cols()}
        FROM {table} GROUP BY ALL ORDER BY ALL
    """
    return ds.query_df(sql)


def summary(table: str, by: tuple[str, ...] = GROUPS) -> pd.DataFrame:
    """One row per group over the whole log (or the window the table expression covers)."""
    keys = ", ".join(by)
    return ds.query_df(
        f"SELECT {keys}, {_latency_cols()}, max(ts) AS last_query FROM {table} GROUP BY ALL ORDER BY ALL"
    )


def errors(table: str, limit: int = 20) -> pd.DataFrame:
    """The most frequent error types, by endpoint and generation; ``side`` says whose error
    it is (``server`` for 5xx, ``client`` for 4xx)."""
    return ds.query_df(
        f"""SELECT service, endpoint, generation,
                   CASE WHEN {SERVER_ERRORS} THEN 'server' ELSE 'client' END AS side,
                   status, error_type, count(*) AS queries, max(ts) AS last_seen
            FROM {table} WHERE status >= 400 GROUP BY ALL ORDER BY queries DESC LIMIT {int(limit)}"""
    )


def ab_compare(table: str, service: str, endpoint: str) -> pd.DataFrame:
    """Generations of one endpoint side by side, on the same period of traffic.

    Only the time span where every compared generation answered queries is used, so a
    generation is not judged on a quieter or busier hour than the other. Also gives the
    mean positive-class probability answered (from ``result``) to compare the models' outputs.
    Refused queries that no generation answered (no key, invalid JSON…) are not compared.
    """
    sql = f"""
        WITH q AS (SELECT * FROM {table}
                   WHERE service = $service AND endpoint = $endpoint AND generation IS NOT NULL),
        spans AS (SELECT generation, min(ts) AS first, max(ts) AS last FROM q GROUP BY 1),
        common AS (SELECT max(first) AS start, min(last) AS stop FROM spans)
        SELECT generation, {_latency_cols()},
               avg(TRY_CAST(json_extract_string(result, '$.probas."1"') AS DOUBLE)) AS mean_proba,
               min(ts) AS first_query, max(ts) AS last_query
        FROM q, common WHERE ts BETWEEN common.start AND common.stop
        GROUP BY generation ORDER BY generation
    """
    return ds.query_df(sql, params={"service": service, "endpoint": endpoint})


def endpoint_health(table: str | None, window_minutes: int = 60) -> list[EndpointHealth]:
    """Status per endpoint from its last ``window_minutes`` of traffic (worst-of input).

    Judged on server errors (5xx) only: a caller sending bad records or unknown keys (4xx)
    does not make an endpoint unhealthy; its client error rate is in the message. Queries to
    names the node does not serve are not an endpoint's (the Errors table shows them).
    """
    if table is None:
        return []
    # A query to a name nothing serves (404 UnknownService/UnknownEndpoint: any client can
    # make names up) or a line without names judges no endpoint.
    named = (
        "service IS NOT NULL AND endpoint IS NOT NULL "
        "AND error_type IS DISTINCT FROM 'UnknownService' "
        "AND error_type IS DISTINCT FROM 'UnknownEndpoint'"
    )
    frame = ds.query_df(
        f"""WITH last AS (SELECT max(ts) AS t FROM {table} WHERE {named})
            SELECT service, endpoint, {_latency_cols()}
            FROM {table}, last
            WHERE {named} AND ts >= last.t - INTERVAL {int(window_minutes)} MINUTE
            GROUP BY ALL ORDER BY ALL"""
    )
    out = []
    for r in frame.to_dict("records"):
        rate, client = float(r["error_rate"]), float(r["client_error_rate"])
        status = (
            "ERROR"
            if rate >= ERROR_RATE_ALARM
            else "WARNING"
            if rate >= ERROR_RATE_WARNING
            else "HEALTHY"
        )
        out.append(
            EndpointHealth(
                r["service"], r["endpoint"], int(r["queries"]), rate, float(r["p95_ms"]), status,
                f"{int(r['queries']):,} queries in the last {window_minutes} min of traffic, "
                f"{rate:.1%} server errors, {client:.1%} client errors (4xx, not judged), "
                f"p95 {float(r['p95_ms']):.1f} ms",
                client,
            )
        )  # fmt: skip
    return out
