"""The model evaluation store: what one day records on the demo home and on a project in
another vocabulary (tests/engine/small_project.py's claims), and its empty states."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.automation import evaluation, evaluation_plan, performance
from engine.automation.node import AutomationNode
from engine.monitoring import model_quality
from engine.storage.control import check_results
from nodal_demo import demo
from tests.homes import copy_home, latest_published

OPTIONS = {"model": "fraud_model", "input": "scored"}  # the rest: models/fraud_model.yaml


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
    # Declared in the model's YAML: the unseen merchant ids, the expected trends.
    unseen = {m.feature for m in result.metrics if m.family == "unseen_values"}
    assert "merchant_id" in unseen and result.not_applicable == {}
    trends = {m.feature for m in result.metrics if m.family == "input_drift" and m.status == "INFO"}
    assert trends <= {"account_age_days"}
    evaluation.record(store, demo.AUTOMATION_INFRA, demo.PROJECT, result, run_id=None)
    evaluation.record(store, demo.AUTOMATION_INFRA, demo.PROJECT, result, run_id=None)
    stored = model_quality.read_metrics(store, demo.AUTOMATION_INFRA, demo.PROJECT)
    assert len(stored) == len(result.metrics)  # re-evaluating a day replaces its rows
    assert set(stored["role"]) == {"champion", "challenger"}


def test_an_unscored_day_and_missing_reference_are_clear_errors(node_home):
    _, _, project, _ = node_home
    with pytest.raises(evaluation_plan.EvaluationError, match="no scored partition for 1999-01-01"):
        evaluation.evaluate_day(project, "1999-01-01", OPTIONS)
    day = project.dataset("scored").partitions()[-1]
    with pytest.raises(evaluation_plan.EvaluationError, match="no reference data"):
        evaluation.evaluate_day(project, day, {**OPTIONS, "reference_days": ["1999-01-01"]})
    with pytest.raises(Exception, match="has no model 'nope'"):
        evaluation.evaluate_day(project, day, {"model": "nope", "input": "scored"})
    with pytest.raises(evaluation_plan.EvaluationError, match="needs input"):
        evaluation.evaluate_day(project, day, {"model": "fraud_model"})


def test_what_the_model_does_not_declare_is_not_applicable_not_an_error(node_home):
    settings, store, project, day = node_home
    # The step overrides the model's declaration: no location, no labels.
    result = evaluation.evaluate_day(project, day, {**OPTIONS, "location": [], "labels": ""})
    assert set(result.not_applicable) == {
        "location",
        "performance",
        "performance_decay",
        "missed_fraud",
    }
    assert "monitoring: location" in result.not_applicable["location"]
    assert "labels" in result.not_applicable["performance"]
    assert not [
        m for m in result.metrics if m.family == "location" and m.metric != "not_applicable"
    ]
    assert result.status() in ("OK", "WARNING")
    evaluation.record(store, "node-na", demo.PROJECT, result)
    t = check_results
    with store.read() as conn:
        names = {r[0] for r in conn.execute(sa.select(t.c.check_name).where(t.c.node == "node-na"))}
    # Computed families leave a check; the ones not applicable leave none.
    assert "input_drift" in names and not names & set(result.not_applicable)
    stored = model_quality.read_metrics(store, "node-na", demo.PROJECT)
    assert model_quality.not_applicable(stored) == result.not_applicable


def test_the_reference_is_cached_per_model_version(node_home):
    _, _, project, _ = node_home
    from engine.models.saved import SavedModel

    saved = SavedModel.load(project.active_model_dir("fraud_model"))
    options = {**evaluation_plan.DEFAULTS, **OPTIONS}
    first, days = evaluation.reference_sample(project, saved, options)
    assert days == evaluation.day_range(*saved.meta["validation_days"])
    assert "proba" in first.columns and len(first) > 1000
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


# --- a project in another vocabulary -----------------------------------------------------------


def test_a_project_in_another_vocabulary_is_evaluated_from_its_declarations(claims_env):
    from tests.engine.small_project import CLAIMS_INFRA, CLAIMS_PROJECT

    metrics = model_quality.read_metrics(claims_env.store, CLAIMS_INFRA, CLAIMS_PROJECT)
    assert set(metrics["day"]) == set(claims_env.nightly_days)
    assert metrics[metrics["metric"] == "not_applicable"].empty  # it declares everything
    # Unseen values of the declared id column (adjuster) and of its categorical feature.
    unseen = metrics[metrics["family"] == "unseen_values"]
    assert set(unseen["feature"]) == {"adjuster", "branch"}
    # Its sites are in France: the hot spot is named by coordinates, not a US city.
    location = metrics[metrics["family"] == "location"]
    assert not location.empty and location["feature"].str.match(r"^\d+\.\d°N \d+\.\d°[EW]$").all()
    lat = location[location["metric"] == "latitude"]["value"]
    assert lat.between(40, 52).all()
    # Labels (outcomes.confirmed_fraud, joined on claim_ref) landed two days after each claim:
    # the first evaluated days are judged, in the declared amount (payout) too.
    perf = metrics[metrics["family"] == "performance"]
    judged = sorted(set(perf["day"]))
    assert judged == claims_env.nightly_days[:2]
    assert {"roc_auc", "recall", "fraud_caught_amount", "label_coverage"} <= set(perf["metric"])
    auc = perf[perf["metric"] == "roc_auc"]["value"]
    assert auc.between(0.75, 1).all()
    assert not metrics[metrics["family"] == "performance_decay"].empty
    assert not metrics[metrics["family"] == "missed_fraud"].empty


def test_the_claims_evaluation_joins_labels_on_the_declared_id(claims_env):
    from engine.storage.datasets import query_df

    project = claims_env.node_project()
    day = claims_env.nightly_days[-1]
    p = evaluation_plan.plan(project, {"model": "claim_risk", "input": "scores"})
    assert (p.features, p.day_column) == ("claims", "booked_on")
    assert p.monitoring.id_column == "claim_ref" and p.monitoring.label_column == "confirmed_fraud"
    rows = performance.labelled_days(project, p, day, project.dataset("scores").partitions())
    labelled = rows[rows[performance.LABEL].notna()]
    truth = query_df(
        "SELECT claim_ref, confirmed_fraud FROM o",
        {
            "o": (
                project.dataset("outcomes"),
                [d for d in project.dataset("outcomes").partitions() if d <= day],
            )
        },
    ).set_index("claim_ref")["confirmed_fraud"]
    assert len(labelled) == len(truth.index.intersection(rows["claim_ref"])) > 0
    assert (
        labelled.set_index("claim_ref")[performance.LABEL] == truth.loc[labelled["claim_ref"]]
    ).all()
