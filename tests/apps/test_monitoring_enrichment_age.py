"""Monitoring shows the age of the enrichment rows each API deployment serves (issue 15):
on API health as its own table, on the Status page as the endpoint's reasons."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.apinode.node import ApiNode
from engine.deployer import enrichments
from nodal_demo import demo
from tests.homes import copy_home, environ, sign_in_app

APP = Path(__file__).resolve().parents[2] / "apps" / "monitoring" / "app.py"


@pytest.fixture
def served(demo_env, tmp_path, monkeypatch):
    """A copy of the demo home whose API node (a worker in this process) serves the card
    profiles the daily run published."""
    settings, store = copy_home(demo_env.settings, tmp_path)
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    node = ApiNode(settings, store, demo.API_INFRA)
    node.sync()
    return settings, store, enrichments.versions(store, demo.PROJECT, "card_profiles")[0]


def _page(path: str | None = None) -> AppTest:
    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=60))
    at.run()
    if path:
        at.switch_page(path).run()
    assert not at.exception, at.exception
    return at


def test_api_health_shows_the_enrichment_age_per_deployment(served):
    _, _, pub = served
    at = _page("views/api_health.py")
    assert any(s.value == "Enrichment age" for s in at.subheader)
    (table,) = [d.value for d in at.dataframe]  # no traffic yet: the only table
    row = table.iloc[0]
    assert (row["endpoint"], row["dataset"], row["served"]) == (
        demo.ENDPOINT,
        "card_profiles",
        f"v{pub.version}",
    )
    assert row["as of"] == pub.as_of and row["status"] == "HEALTHY"
    assert row["max age (h)"] == 30  # declared on the example's enrichment


def test_the_status_page_gives_the_endpoint_its_enrichment_age(served):
    _, _, pub = served
    at = _page()
    why = " ".join(" ".join(d.value["why"]) for d in at.dataframe)
    assert f"card_profiles v{pub.version} as of {pub.as_of}" in why
