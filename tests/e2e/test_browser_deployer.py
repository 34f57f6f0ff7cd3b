"""In a real browser (headless Chromium): ops promote a bundle from dev to prod in the
Deployer Console, then roll prod back, each with its confirmation. Screenshots are kept in
``test-artifacts/deployer/``."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from engine.deployer import bundles
from engine.deployer import deployments as deployer
from engine.design import projects as design
from nodal_demo import demo, people
from tests.e2e import procs
from tests.e2e.browser import sign_in
from tests.homes import copy_home, environ

ARTIFACTS = procs.REPO / "test-artifacts" / "deployer"
PROD = deployer.deployment_id_for(demo.PROJECT, demo.AUTOMATION_INFRA)
DEV = deployer.deployment_id_for(demo.PROJECT, "automation-dev")


@pytest.fixture
def console(demo_env, tmp_path):
    """A Deployer Console process on a copy of the demo home where dev runs bundle v2."""
    settings, store = copy_home(demo_env.settings, tmp_path)
    project = design.open_project(settings, demo.PROJECT)
    bundles.create_bundle(settings.home, store, project, "v2", "Tuned checks.", "analyst")
    deployer.create_infra(store, "automation-dev", "automation", "dev", actor="test")
    deployer.deploy_bundle(store, demo.PROJECT, "v2", "automation-dev", "dana")
    env = environ(settings)
    with procs.streamlit_app("apps/deployer_console/app.py", env, tmp_path / "console.log") as (
        url,
        _,
    ):
        yield url, store


def test_promote_dev_to_prod_then_roll_back_in_the_browser(console, demo_env):
    url, store = console
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=procs.CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(url)
            sign_in(page, "ops", people.passwords(demo_env.settings.home)["ops"])
            promote = page.get_by_role("button", name="Promote")
            expect(promote).to_be_visible(timeout=60_000)
            expect(promote).to_be_disabled()
            page.screenshot(path=str(ARTIFACTS / "1-deployments.png"), full_page=True)

            # Defaults: from the earliest stage (dev) to the latest (prod).
            page.get_by_text("I confirm: deploy bundle v2 of fraud to automation-prod").click()
            expect(promote).to_be_enabled()
            promote.click()
            expect(page.get_by_text("now asks for bundle v2")).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "2-promoted.png"), full_page=True)
            assert deployer.get_deployment(store, PROD).version == "v2"

            page.get_by_role("combobox", name="Deployment to roll back").click()
            page.get_by_role("option", name=PROD).click()
            confirm = page.get_by_text(f"I confirm: roll {PROD} back from v2 to v1")
            expect(confirm).to_be_visible(timeout=30_000)
            confirm.click()
            page.get_by_role("button", name="Roll back").click()
            expect(page.get_by_text("rolled back from v2 to v1")).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "3-rolled-back.png"), full_page=True)
        finally:
            browser.close()
    assert deployer.get_deployment(store, PROD).version == "v1"
    assert deployer.get_deployment(store, DEV).version == "v2"
    actions = [
        (h["action"], h["from_version"], h["to_version"], h["actor"])
        for h in deployer.history(store, PROD)[:2]
    ]
    assert actions == [
        ("rollback", "v2", "v1", "ops"),
        ("promote", "v1", "v2", "ops"),
    ]
