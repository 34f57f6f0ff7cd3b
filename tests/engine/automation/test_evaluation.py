"""The model evaluation store on the demo home: what one day records, and its empty states."""

from __future__ import annotations

import pytest

from engine.automation import evaluation
from engine.automation.node import AutomationNode
from engine.monitoring import model_quality
from nodal_demo import demo
from tests.homes import copy_home, latest_published

OPTIONS = {"model": "fraud_model", "expected_trends": ["card_txn_history", "account_age_days"]}


@pytest.fixture(scope="module")
def node_home(demo_env, tmp_path_factory):
    settings, store = copy_home(demo_env.settings, tmp_path_factory.mktemp("evaluation"))
    project = AutomationNode(settings, store, demo.AUTOMATION_INFRA).project(demo.PROJECT)
    return settings, store, project, latest_published(store)


def test_one_day_records_every_family_for_champion_and_challenger(node_home):
    settings, store, project, day = node_home
    options = {**OPTIONS, "challenger": {"model": "fraud_model", "version": "v1"}}
    result = evaluation.evaluate_day(project, day, options)
    families = {m.family for m in result.metrics}
    assert {
        "input_drift",
        "unseen_values",
        "location",
        "prediction_drift",
        "domain_classifier",
    } <= families
    # The day's labels have not landed yet: no performance is judged on it.
    assert not [m for m in result.metrics if m.family == "performance" and m.day == day]
    features = {m.feature for m in result.metrics if m.family == "input_drift"}
    assert features == set(project.models["fraud_model"]["features"]["numeric"]) | {
        "merchant_category",
        "channel",
    }
    # Same model as challenger: the same prediction drift, recorded side by side.
    psi = {
        m.role: m.value
        for m in result.metrics
        if m.family == "prediction_drift" and m.metric == "psi"
    }
    assert set(psi) == {"champion", "challenger"} and psi["champion"] == pytest.approx(
        psi["challenger"]
    )
    assert result.status() in ("OK", "WARNING")  # clean data: no alarm
    evaluation.record(store, demo.AUTOMATION_INFRA, demo.PROJECT, result, run_id=None)
    evaluation.record(store, demo.AUTOMATION_INFRA, demo.PROJECT, result, run_id=None)
    stored = model_quality.read_metrics(store, demo.AUTOMATION_INFRA, demo.PROJECT)
    assert len(stored) == len(result.metrics)  # re-evaluating a day replaces its rows
    assert set(stored["role"]) == {"champion", "challenger"}


def test_an_unscored_day_and_missing_reference_are_clear_errors(node_home):
    _, _, project, _ = node_home
    with pytest.raises(evaluation.EvaluationError, match="no scored partition for 1999-01-01"):
        evaluation.evaluate_day(project, "1999-01-01", OPTIONS)
    day = project.dataset("scored").partitions()[-1]
    with pytest.raises(evaluation.EvaluationError, match="no reference data"):
        evaluation.evaluate_day(project, day, {**OPTIONS, "reference_days": ["1999-01-01"]})
    with pytest.raises(Exception, match="has no model 'nope'"):
        evaluation.evaluate_day(project, day, {"model": "nope"})


def test_the_reference_is_cached_per_model_version(node_home):
    _, _, project, _ = node_home
    from engine.models.saved import SavedModel

    saved = SavedModel.load(project.active_model_dir("fraud_model"))
    options = {**evaluation.DEFAULTS, **OPTIONS}
    first, days = evaluation.reference_sample(project, saved, options)
    assert days == evaluation._day_range(*saved.meta["validation_days"])
    assert "fraud_proba" in first.columns and len(first) > 1000
    cached = list(evaluation.reference_path(project).rglob("*.parquet"))
    assert len(cached) == 1
    again, _ = evaluation.reference_sample(project, saved, options)
    assert len(again) == len(first)


def test_status_is_worst_of_and_alerts_once_per_change(node_home, tmp_path):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from engine.monitoring import status

    _, store, _, _ = node_home
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's API
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = status.reporters_from_settings(f"http://127.0.0.1:{server.server_port}/hook")
        every = status.deployment_statuses(store)
        first = [s for s in every if s.object_id == "fraud-on-automation-prod"]
        assert len(first) == 1 and first[0].label == "fraud on automation-prod"
        status.check_and_alert(store, first, spec)
        status.check_and_alert(store, first, spec)  # no change: no second alert
        n = len(received)
        assert n == (0 if first[0].status == "HEALTHY" else 1)
        broken = [dataclasses_replace(first[0], status="UNHEALTHY", reasons=["run failed"])]
        assert status.check_and_alert(store, broken, spec) == broken
        assert len(received) == n + 1
        assert received[-1]["status"] == "UNHEALTHY" and received[-1]["message"] == "run failed"
        assert status.worst(["HEALTHY", "WARNING", "UNHEALTHY"]) == "UNHEALTHY"
    finally:
        server.shutdown()


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)
