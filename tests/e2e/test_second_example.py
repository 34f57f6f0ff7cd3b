"""The second example (an online shop's order returns: another domain, vocabulary and
schema) goes the whole way the fraud one does: design → bundle → automation node → API
node → Monitoring, with nothing in the platform knowing either example."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dataikuapi
import httpx
import pytest

from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.deployer import api_deployer, apipackages, bundles
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.models import saved as models
from engine.project import flow
from engine.storage import datasets as ds
from engine.storage.control import open_store
from nodal_demo import returns
from tests.conftest import make_settings
from tests.e2e import procs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "returns"
CONFIG = dataclasses.replace(returns.ReturnsConfig(), n_days=28, orders_per_day=500)
PROJECT, MODEL, SERVICE, ENDPOINT = "returns", "return_model", "return_risk", "predict_return"
BATCH_INFRA, API_INFRA = "shop-batch", "shop-api"
RAW = [
    "order_id",
    "placed_at",
    "customer",
    "category",
    "price",
    "quantity",
    "discount_pct",
    "express",
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("returns")
    settings = make_settings(root)
    store = open_store(settings.control_store_url)
    returns.generate(CONFIG, settings.data_dir)
    # The newest day lands after the release: the package's customer histories are "as of
    # now", which is what batch uses for that day.
    newest = settings.data_dir / "orders" / f"day={returns.last_day(CONFIG)}"
    aside = root / "later"
    newest.rename(aside)
    project = design.import_project(settings, store, EXAMPLE)
    flow.build(project, "training_rows")
    models.train(project, MODEL, "analyst")
    bundles.create_bundle(settings.home, store, project, "v1", "first", "analyst")
    deployer.create_infra(store, BATCH_INFRA, "automation", "prod")
    deployer.create_infra(store, API_INFRA, "apinode", "prod")
    deployer.deploy_bundle(store, PROJECT, "v1", BATCH_INFRA, "ops")
    apipackages.create_package(settings.home, store, project, SERVICE, "v1", "first", "analyst")
    api_deployer.deploy_package(store, SERVICE, "v1", API_INFRA, "ops")
    aside.rename(newest)
    node = AutomationNode(settings, store, BATCH_INFRA)
    node.sync()
    for scenario in ("nightly_scoring", "nightly_evaluation"):
        run_id = runs.request_run(store, BATCH_INFRA, PROJECT, scenario, "test")
        assert node.run(run_id) in (runs.SUCCESS, runs.WARNING), runs.get_run(store, run_id)
    return settings, store, node


def test_batch_and_the_official_client_give_the_same_probability(shop, tmp_path):
    settings, store, node = shop
    scored = node.project(PROJECT).dataset("scored_orders")
    day = scored.partitions()[-1]
    assert day == str(returns.last_day(CONFIG))
    rows = ds.query_df(
        "SELECT s.proba, o.* FROM s JOIN o USING (order_id) ORDER BY s.order_id LIMIT 40",
        {"s": (scored, [day]), "o": (node.project(PROJECT).dataset("orders"), [day])},
    )
    env = {"NODAL_HOME": str(settings.home), "NODAL_DATA_DIR": str(settings.data_dir)}
    port = procs.free_port()
    log = tmp_path / "api.log"
    api = procs.start(["-m", "engine.serving", "--infra", API_INFRA, "--port", str(port)], env, log)
    try:
        procs.wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/isAlive/").json()["services"],
            60,
            "the API node to load its package",
            log,
        )
        client = dataikuapi.APINodeClient(f"http://127.0.0.1:{port}", SERVICE)
        for rec in rows[RAW].to_dict("records"):
            rec["placed_at"] = rec["placed_at"].isoformat()
            rec["express"] = bool(rec["express"])
            rec["quantity"] = int(rec["quantity"])
            want = rows.loc[rows["order_id"] == rec["order_id"], "proba"].iloc[0]
            got = client.predict_record(ENDPOINT, rec)["result"]["probas"]["1"]
            assert got == pytest.approx(want, rel=1e-9), rec["order_id"]
        looked = client.lookup_record("customer_history", {"customer": rec["customer"]})
        assert "orders_before" in looked["data"]
    finally:
        procs.stop(api)


def test_a_record_without_the_fields_its_recipe_reads_is_refused_by_name(shop, tmp_path):
    settings, store, _ = shop
    from litestar.testing import TestClient

    from engine.apinode.http.app import create_app

    with TestClient(create_app(settings, API_INFRA)) as client:
        url = f"/public/api/v1/{SERVICE}/{ENDPOINT}/predict"
        resp = client.post(url, json={"features": {"customer": "K00001", "category": "toys"}})
        assert resp.status_code == 400
        assert resp.json()["message"].startswith("missing feature(s): ")
        assert "placed_at" in resp.json()["message"] and "card" not in resp.json()["message"]
