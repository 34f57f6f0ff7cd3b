"""Fresh enrichment on the second example (an online shop's returns): its own service,
dataset, key and scenario (``scenarios/publish_history.yaml``), nothing in the platform
knowing either. The customers' histories an API node answers with follow what the
automation node publishes, without a new package."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from engine.apinode.node import ApiNode
from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.deployer import api_deployer, apipackages, bundles, enrichments
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.models.saved import train
from engine.monitoring import enrichment_age
from engine.project import flow, scenario_spec
from engine.storage import datasets as ds
from engine.storage.control import open_store
from nodal_demo import returns
from tests.conftest import make_settings
from tests.e2e import procs
from tests.homes import environ, seed_test_actors

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "returns"
CONFIG = dataclasses.replace(returns.ReturnsConfig(), n_days=21, orders_per_day=300)
PROJECT, SERVICE, LOOKUP = "returns", "return_risk", "customer_history"
BATCH, API = "shop-batch", "shop-api"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The shop released (package v1) before its newest day of orders landed; the day lands
    and its nightly scoring runs on the automation node."""
    root = tmp_path_factory.mktemp("returns-fresh")
    settings = make_settings(root)
    store = open_store(settings.control_store_url)
    seed_test_actors(store)
    returns.generate(CONFIG, settings.data_dir)
    newest = settings.data_dir / "orders" / f"day={returns.last_day(CONFIG)}"
    aside = root / "later"
    newest.rename(aside)
    project = design.import_project(settings, store, EXAMPLE, actor="test")
    flow.build(project, "training_rows")
    train(project, "return_model", "test")
    bundles.create_bundle(settings.home, store, project, "v1", "first", "test")
    deployer.create_infra(store, BATCH, "automation", "prod", actor="test")
    deployer.deploy_bundle(store, PROJECT, "v1", BATCH, "test")
    apipackages.create_package(settings.home, store, project, SERVICE, "v1", "first", "test")
    deployer.create_infra(store, API, "apinode", "prod", actor="test")
    api_deployer.deploy_package(store, SERVICE, "v1", API, "test")
    aside.rename(newest)
    node = AutomationNode(settings, store, BATCH)
    node.sync()
    run_id = runs.request_run(store, BATCH, PROJECT, "nightly_scoring", "test")
    assert node.run(run_id) in (runs.SUCCESS, runs.WARNING), runs.get_run(store, run_id)
    return settings, store, node


def _history(node: AutomationNode, day: str, customer: str) -> dict:
    ref = node.project(PROJECT).dataset(LOOKUP)
    rows = ds.query_df("SELECT * FROM h WHERE customer = ?", {"h": (ref, [day])}, params=[customer])
    return rows.iloc[0].to_dict()


def test_the_example_scenario_is_valid_and_follows_the_nightly_scoring(shop):
    _, _, node = shop
    project = node.project(PROJECT)
    assert scenario_spec.validate(project, "publish_history") == []
    spec = project.scenarios["publish_history"]
    assert spec["triggers"][0] == {"type": "after_scenario", "scenario": "nightly_scoring"}


def test_the_published_histories_answer_lookups_without_a_new_package(shop):
    settings, store, node = shop
    run_id = runs.request_run(store, BATCH, PROJECT, "publish_history", "test")
    assert node.run(run_id) == runs.SUCCESS, runs.get_run(store, run_id)
    pub = enrichments.versions(store, PROJECT, LOOKUP)[0]
    tomorrow = str(returns.last_day(CONFIG) + timedelta(days=1))
    assert (pub.as_of, pub.run_id, pub.node) == (tomorrow, run_id, BATCH)
    # A customer whose history the newest day changed: the package's copy is a day older.
    orders = node.project(PROJECT).dataset("orders")
    day = str(returns.last_day(CONFIG))
    customer = ds.query_df(
        "SELECT customer FROM o GROUP BY customer ORDER BY count(*) DESC, customer LIMIT 1",
        {"o": (orders, [day])},
    )["customer"].iloc[0]
    fresh = _history(node, tomorrow, customer)
    old = _history(node, day, customer)
    assert fresh["orders_before"] > old["orders_before"]

    port, log = procs.free_port(), settings.home.parent / "api.log"
    env = {**environ(settings), "NODAL_POLL_SECONDS": "0.5"}
    api = procs.start(["-m", "engine.serving", "--infra", API, "--port", str(port)], env, log)
    try:
        url = f"http://127.0.0.1:{port}/public/api/v1/{SERVICE}/{LOOKUP}/lookup"

        def looked_up() -> dict:
            answer = httpx.post(url, json={"data": {"customer": customer}}, timeout=10)
            assert answer.status_code == 200, answer.text
            return answer.json()["results"][0]["data"]

        procs.wait_for(
            lambda: looked_up()["orders_before"] == fresh["orders_before"],
            90,
            "the API node to answer with the published histories",
            log,
        )
    finally:
        procs.stop(api)
    assert [p.version for p in apipackages.list_packages(store, SERVICE)] == ["v1"]
    ages = enrichment_age.ages(store, API, SERVICE)
    assert {(a.endpoint, a.version, a.as_of, a.status) for a in ages} == {
        ("predict_return", pub.version, tomorrow, "HEALTHY"),
        (LOOKUP, pub.version, tomorrow, "HEALTHY"),
    }


def test_an_api_node_of_another_stage_keeps_its_package_copy(shop):
    settings, store, _ = shop
    deployer.create_infra(store, "shop-api-test", "apinode", "test", actor="test")
    api_deployer.deploy_package(store, SERVICE, "v1", "shop-api-test", "test")
    node = ApiNode(settings, store, "shop-api-test")
    node.sync()
    served = node.enrichments.refresh(node.services)
    assert served and {s.origin.source for s in served} == {"package"}
