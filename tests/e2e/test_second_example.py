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
from engine.storage import datasets as ds
from engine.storage.control import open_store
from nodal_demo import returns
from tests.conftest import make_settings
from tests.e2e import procs
from tests.e2e.browser import with_session

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


def _cli(args: list[str], env: dict[str, str]) -> str:
    result = procs.nodal(args, env)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The shop's release done from the command line as an analyst and ops would."""
    root = tmp_path_factory.mktemp("returns")
    settings = make_settings(root)
    store = open_store(settings.control_store_url)
    env = {"NODAL_HOME": str(settings.home), "NODAL_DATA_DIR": str(settings.data_dir)}
    returns.generate(CONFIG, settings.data_dir)
    # The newest day lands after the release: the package's customer histories are "as of
    # now", which is what batch uses for that day.
    newest = settings.data_dir / "orders" / f"day={returns.last_day(CONFIG)}"
    aside = root / "later"
    newest.rename(aside)
    _cli(["project", "import", str(EXAMPLE)], env)
    _cli(["project", "use", PROJECT], env)
    _cli(["flow", "build", "training_rows"], env)
    _cli(["model", "train"], env)  # the project's only model
    _cli(["bundle", "create", "v1", "--notes", "first"], env)
    _cli(["infra", "create", BATCH_INFRA, "--kind", "automation", "--stage", "prod"], env)
    _cli(["deploy", "bundle", "v1", "--infra", BATCH_INFRA], env)
    _cli(["api", "package", "v1"], env)  # the only service; refused if real time differed
    _cli(["infra", "create", API_INFRA, "--kind", "apinode", "--stage", "prod"], env)
    _cli(["api", "deploy", "v1", "--infra", API_INFRA], env)
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


ARTIFACTS = procs.REPO / "test-artifacts" / "returns"


def test_its_map_and_model_quality_pages_show_its_data_in_a_browser(shop, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    settings, _, _ = shop
    env = {
        "NODAL_HOME": str(settings.home),
        "NODAL_DATA_DIR": str(settings.data_dir),
        "NODAL_BASEMAP": "none",
    }
    deployment = f"{PROJECT}-on-{BATCH_INFRA}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (
        procs.streamlit_app("apps/monitoring/app.py", env, tmp_path / "monitoring.log") as (url, _),
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=procs.CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            with_session(page, url, settings, "test")  # NODAL_USER of the CLI: first administrator
            page.goto(f"{url}/fraud_map?deployment={deployment}&dashboard=returns_map")
            expect(page.get_by_text("Where today's likely returns ship to")).to_be_visible(
                timeout=60_000
            )
            expect(page.get_by_test_id("stDeckGlJsonChart")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("Likely returns").first).to_be_visible()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "returns-map.png"), full_page=True)
            page.goto(f"{url}/model_quality?deployment={deployment}")
            expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("No model evaluation")).to_have_count(0)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(ARTIFACTS / "returns-model-quality.png"), full_page=True)
        finally:
            browser.close()
