"""API health over a real query log written by the API node's own writer."""

from __future__ import annotations

import json

import pytest

from engine.apinode import querylog
from engine.monitoring import apihealth
from engine.storage.datasets import query_df


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    home = tmp_path_factory.mktemp("apihome")
    log = querylog.QueryLog(home, "api-test")
    for i in range(200):
        gen = "v1" if i % 2 else "v2"
        status = 500 if gen == "v2" and i % 40 == 0 else 200
        log.record(
            service="fraud_detection",
            endpoint="predict_fraud",
            generation=gen,
            method="predict",
            status=status,
            error_type="ServerError" if status >= 400 else None,
            duration_us=1000 + 10 * i if gen == "v1" else 3000 + 10 * i,
            n_records=1,
            features={"amount": i},
            result={"probas": {"0": 0.9, "1": 0.1 if gen == "v1" else 0.3}},
        )
    log.record(
        service="fraud_detection", endpoint="lookup_card", generation="v1", method="lookup",
        status=404, error_type="NotFound", duration_us=500, n_records=1,
    )  # fmt: skip
    log.close()
    querylog.compact(home, "api-test")  # half in Parquet, as after a rotation …
    log2 = querylog.QueryLog(home, "api-test")  # … and a live segment
    log2.record(
        service="fraud_detection", endpoint="predict_fraud", generation="v1", method="predict",
        status=200, error_type=None, duration_us=1200, n_records=1,
    )  # fmt: skip
    log2.close()
    return apihealth.source(home, "api-test")


def test_no_traffic_means_no_table(tmp_path):
    assert apihealth.source(tmp_path, "nothing") is None
    assert apihealth.endpoint_health(None) == []


def test_summary_counts_errors_and_latency_per_generation(logged):
    summary = apihealth.summary(logged).set_index(["endpoint", "generation"])
    truth = query_df(
        f"SELECT endpoint, generation, count(*) AS n, count(*) FILTER (WHERE status >= 500) AS e, "
        f"count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS c, "
        f"quantile_cont(duration_us, 0.95) / 1000 AS p95 FROM {logged} GROUP BY ALL"
    ).set_index(["endpoint", "generation"])
    assert summary.loc[("predict_fraud", "v1"), "queries"] == 101
    assert summary.loc[("predict_fraud", "v2"), "server_errors"] == 5
    # A 404 is the caller's mistake: a client error, apart from the error rate.
    lookup = summary.loc[("lookup_card", "v1")]
    assert (lookup["server_errors"], lookup["client_errors"]) == (0, 1)
    assert (lookup["error_rate"], lookup["client_error_rate"]) == (0.0, 1.0)
    for key in truth.index:
        assert summary.loc[key, "queries"] == truth.loc[key, "n"]
        assert summary.loc[key, "server_errors"] == truth.loc[key, "e"]
        assert summary.loc[key, "client_errors"] == truth.loc[key, "c"]
        assert summary.loc[key, "p95_ms"] == pytest.approx(truth.loc[key, "p95"])
    over = apihealth.over_time(logged, "minute")
    assert over["queries"].sum() == 202


def test_ab_compares_generations_on_the_same_traffic(logged):
    ab = apihealth.ab_compare(logged, "fraud_detection", "predict_fraud").set_index("generation")
    assert list(ab.index) == ["v1", "v2"]
    assert ab.loc["v2", "p50_ms"] > ab.loc["v1", "p50_ms"]
    assert ab.loc["v1", "mean_proba"] == pytest.approx(0.1)
    assert ab.loc["v2", "mean_proba"] == pytest.approx(0.3)
    # v2 answered first (query 0, an error): outside the span both generations share.
    assert ab.loc["v2", "error_rate"] == pytest.approx(4 / 99)


def test_endpoint_health_is_judged_on_server_errors_not_client_errors(logged):
    health = {h.endpoint: h for h in apihealth.endpoint_health(logged)}
    # Its only query was a 404 (an unknown key): the caller's error, not the endpoint's.
    lookup = health["lookup_card"]
    assert lookup.status == "HEALTHY" and lookup.error_rate == 0.0
    assert lookup.client_error_rate == 1.0 and "100.0% client errors" in lookup.message
    assert health["predict_fraud"].status == "WARNING"  # 5 of 201 failed with 5xx: 2.5 %
    assert json.dumps(health["predict_fraud"].message)
    errors = apihealth.errors(logged).set_index("status")
    assert errors.loc[404, "side"] == "client" and errors.loc[500, "side"] == "server"
    with pytest.raises(ValueError, match="bucket"):
        apihealth.over_time(logged, "week")


def test_client_errors_never_turn_an_endpoint_status_to_error(demo_env, tmp_path):
    from engine.monitoring import status
    from nodal_demo import demo
    from tests.homes import copy_home

    settings, store = copy_home(demo_env.settings, tmp_path)

    def endpoint_status(code: int) -> status.Status:
        log = querylog.QueryLog(settings.home, demo.API_INFRA)
        for _ in range(50):
            log.record(
                service=demo.SERVICE, endpoint=demo.ENDPOINT, generation="v1", method="predict",
                status=code, error_type="Refused", duration_us=900, n_records=1,
            )  # fmt: skip
        log.close()
        (s,) = [s for s in status.endpoint_statuses(store, settings.home) if s.kind == "endpoint"]
        return s

    # 50 answers 422 (bad records): the callers' side; the status is the deployment's own
    # (no API node has reported on this home: UNKNOWN), not the traffic's.
    refused = endpoint_status(422)
    assert refused.status == "UNKNOWN" and refused.reasons == ["node: unknown (no report yet)"]
    # Then 50 answers 500: half the last hour failed on the server side.
    assert endpoint_status(500).status == "ERROR"


def test_refused_queries_judge_no_endpoint_and_are_no_generation(tmp_path):
    """Queries no generation answered (no key, made-up names) stay out of the A/B table and
    of the endpoints' statuses; a made-up endpoint name is not an endpoint."""
    log = querylog.QueryLog(tmp_path, "api-test")
    for i in range(20):
        log.record(
            service="fraud_detection", endpoint="predict_fraud", generation="v1",
            method="predict", status=200, error_type=None, duration_us=1000, n_records=1,
            result={"probas": {"1": 0.2}},
        )  # fmt: skip
        log.record(
            service="fraud_detection", endpoint="predict_fraud", generation=None,
            method="predict", status=401, error_type="Unauthorized", duration_us=10,
            n_records=1,
        )  # fmt: skip
        log.record(
            service="fraud_detection", endpoint=f"made_up_{i}", generation=None,
            method="predict", status=404, error_type="UnknownEndpoint", duration_us=10,
            n_records=1,
        )  # fmt: skip
    log.close()
    table = apihealth.source(tmp_path, "api-test")
    ab = apihealth.ab_compare(table, "fraud_detection", "predict_fraud")
    assert ab["generation"].tolist() == ["v1"] and ab["queries"].tolist() == [20]
    health = apihealth.endpoint_health(table)
    assert [(h.endpoint, h.queries) for h in health] == [("predict_fraud", 40)]
    assert health[0].client_error_rate == 0.5
