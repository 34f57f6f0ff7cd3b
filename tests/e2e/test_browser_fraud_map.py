"""In a real browser (headless Chromium): a business user opens a shared link to one day of
the fraud map; the KPI tiles match a DuckDB query on the same published extract. Screenshots
are kept in ``test-artifacts/monitoring/``."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from engine.automation.node import AutomationNode
from engine.storage.datasets import query_df
from nodal_demo import demo
from tests.e2e import procs
from tests.e2e.browser import with_session
from tests.homes import copy_with_previous_day, environ

ARTIFACTS = procs.REPO / "test-artifacts" / "monitoring"


@pytest.fixture
def monitoring(demo_env, tmp_path):
    """A Monitoring process on a copy of the demo home with two published days."""
    settings, store, latest, previous = copy_with_previous_day(demo_env.settings, tmp_path)
    with procs.streamlit_app(
        "apps/monitoring/app.py", environ(settings), tmp_path / "monitoring.log"
    ) as (
        url,
        _,
    ):
        yield url, settings, store, previous


def test_a_shared_link_opens_its_day_with_kpis_matching_duckdb(monitoring):
    url, settings, store, day = monitoring
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    folder = node.home / "projects" / demo.PROJECT / "data" / "fraud_map" / f"day={day}"
    truth = query_df(
        "SELECT count(*) AS n, count(*) FILTER (WHERE is_flagged) AS flagged, "
        "coalesce(sum(amount) FILTER (WHERE is_flagged), 0) AS amount "
        f"FROM read_parquet('{folder}/*.parquet')"
    ).iloc[0]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=procs.CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            with_session(page, url, settings, "viewer")
            page.goto(
                f"{url}/fraud_map?deployment={demo.PROJECT}-on-{demo.AUTOMATION_INFRA}"
                f"&dashboard=fraud_map&day={day}"
            )
            tiles = page.get_by_test_id("stMetric")
            expect(tiles.first).to_be_visible(timeout=60_000)
            expect(page.get_by_test_id("stDeckGlJsonChart")).to_be_visible(timeout=30_000)
            # The app's own navigation (not a bare page) is up: its sidebar names the pages.
            nav = page.get_by_test_id("stSidebarNav")
            expect(nav.get_by_text("Model quality")).to_be_visible(timeout=30_000)
            page.wait_for_timeout(1500)  # let deck.gl draw before the screenshot
            page.screenshot(path=str(ARTIFACTS / f"fraud-map-{day}.png"), full_page=True)
            values = {
                t.get_by_test_id("stMetricLabel").inner_text().strip(): t.get_by_test_id(
                    "stMetricValue"
                )
                .inner_text()
                .strip()
                for t in tiles.all()
            }
            assert values["Transactions"] == f"{int(truth['n']):,}"
            assert values["Flagged as fraud"] == f"{int(truth['flagged']):,}"
            assert values["Flagged amount"] == f"${float(truth['amount']):,.0f}"
            assert f"day={day}" in page.url and "dashboard=fraud_map" in page.url
            expect(page.get_by_text("data checks passed at")).to_be_visible()
            # The page's title is the dashboard's own, from its YAML.
            expect(page.get_by_text("Where today's predicted fraud happened")).to_be_visible()
        finally:
            browser.close()
