"""Sign-in and rights in a real browser (headless Chromium), with the demo's people:
signed-out visitors get the sign-in page; a business viewer sees the map and no deploy
control; an analyst may not deploy to prod until an administrator grants it, which takes
effect without a restart; a reload keeps the session; ops deploy. Screenshots go to
``test-artifacts/sign-in/``."""

from __future__ import annotations

import contextlib

import pytest
from playwright.sync_api import expect, sync_playwright

from engine.access import audit
from engine.deployer import bundles
from engine.deployer import deployments as deployer
from engine.design import projects as design
from nodal_demo import demo, people
from tests.e2e import procs
from tests.e2e.browser import sign_in
from tests.homes import copy_home, environ

ARTIFACTS = procs.REPO / "test-artifacts" / "sign-in"
APPS = {
    "console": "apps/deployer_console/app.py",
    "monitoring": "apps/monitoring/app.py",
    "studio": "apps/design_studio/app.py",
}


@pytest.fixture(scope="module")
def apps(demo_env, tmp_path_factory):
    """The three apps on a copy of the demo home, where bundle v2 waits to be deployed."""
    tmp = tmp_path_factory.mktemp("signin")
    settings, store = copy_home(demo_env.settings, tmp)
    project = design.open_project(settings, demo.PROJECT)
    bundles.create_bundle(settings.home, store, project, "v2", "Next.", "analyst")
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(
                procs.streamlit_app(app, environ(settings), tmp / f"{name}.log")
            )[0]
            for name, app in APPS.items()
        }
        yield urls, store


@pytest.fixture
def browser():
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path="/usr/bin/chromium", args=procs.CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _page(browser):
    return browser.new_context(viewport={"width": 1400, "height": 1400}).new_page()


@pytest.mark.parametrize("app", list(APPS))
def test_signed_out_visitors_get_the_sign_in_page(apps, browser, app):
    urls, _ = apps
    page = _page(browser)
    page.goto(urls[app])
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)  # no page of the app
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"signed-out-{app}.png"))


def test_a_wrong_password_is_refused_and_recorded(apps, browser):
    urls, store = apps
    page = _page(browser)
    page.goto(urls["console"])
    sign_in(page, "ops", "not-the-password", succeeds=False)
    expect(page.get_by_text("wrong user name or password")).to_be_visible(timeout=30_000)
    assert audit.events(store, action="sign_in.failed", object_id="ops")


def test_a_viewer_sees_the_map_and_no_deploy_control(apps, browser, demo_env):
    urls, _ = apps
    page = _page(browser)
    page.goto(urls["monitoring"])
    sign_in(page, "viewer", people.passwords(demo_env.settings.home)["viewer"])
    link = page.get_by_role("link", name="Map", exact=True)
    expect(link).to_be_visible(timeout=60_000)
    link.click()
    expect(page.get_by_test_id("stMetric").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Signed in as")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "viewer-map.png"), full_page=True)

    page.goto(urls["console"])  # the same host: the session cookie signs the Console in too
    expect(page.get_by_text("You may not deploy to any automation infrastructure")).to_be_visible(
        timeout=60_000
    )
    expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
    expect(page.get_by_role("button", name="Promote")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "viewer-console.png"), full_page=True)


def test_an_analyst_deploys_only_once_an_admin_grants_it_without_restart(apps, browser, demo_env):
    urls, store = apps
    analyst = _page(browser)
    analyst.goto(urls["console"])
    sign_in(analyst, "analyst", people.passwords(demo_env.settings.home)["analyst"])
    locked = analyst.get_by_text("You may not deploy to any automation infrastructure")
    expect(locked).to_be_visible(timeout=60_000)
    analyst.reload()  # the session survives a reload (cookie): no sign-in form
    expect(locked).to_be_visible(timeout=60_000)
    expect(analyst.get_by_role("button", name="Sign in", exact=True)).to_have_count(0)

    admin = _page(browser)
    admin.goto(urls["console"])
    sign_in(admin, "admin", people.passwords(demo_env.settings.home)["admin"])
    admin.get_by_role("link", name="People & rights").click()
    expect(admin.get_by_text("New account")).to_be_visible(timeout=60_000)
    admin.get_by_label("User or group name").fill("analyst")
    admin.get_by_role("textbox", name="On (KIND:NAME)").fill("stage:prod")
    right = admin.get_by_role("combobox", name="Right")
    right.click()
    right.press_sequentially("deploy")
    right.press("Enter")
    expect(right).to_have_value("deploy")
    admin.get_by_role("button", name="Grant").click()
    expect(admin.get_by_text("analyst may now deploy on stage prod")).to_be_visible(timeout=30_000)
    admin.screenshot(path=str(ARTIFACTS / "admin-grants.png"), full_page=True)

    analyst.reload()
    deploy = analyst.get_by_role("button", name="Deploy", exact=True)
    expect(deploy).to_be_visible(timeout=60_000)
    expect(analyst.get_by_role("combobox", name="Bundle", exact=True)).to_have_value("v2")
    analyst.get_by_text("I confirm: deploy bundle v2").click()
    deploy.click()
    expect(analyst.get_by_text("now asks for bundle v2")).to_be_visible(timeout=30_000)
    analyst.screenshot(path=str(ARTIFACTS / "analyst-deployed.png"), full_page=True)
    prod = deployer.deployment_id_for(demo.PROJECT, demo.AUTOMATION_INFRA)
    assert deployer.get_deployment(store, prod).version == "v2"
    who = [(e.actor, e.action) for e in audit.events(store, object_id=prod)][:1]
    assert who == [("analyst", "deployment.update")]
    grant = audit.events(store, action="grant")[0]
    assert grant.actor == "admin" and grant.after["principal"] == "analyst"


def test_sign_out_ends_the_session(apps, browser, demo_env):
    urls, _ = apps
    page = _page(browser)
    page.goto(urls["studio"])
    sign_in(page, "analyst", people.passwords(demo_env.settings.home)["analyst"])
    out = page.get_by_role("button", name="Sign out")
    expect(out).to_be_visible(timeout=60_000)
    out.click()
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible(timeout=30_000)
    page.reload()
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible(timeout=30_000)
