"""Enterprise sign-in through OpenID Connect, in a real browser: a real OIDC provider
(oidc-provider-mock) on loopback, the Design Studio configured for it in Streamlit's
secrets ([auth]), and the provider's groups claim mapped to a nodal group."""

from __future__ import annotations

import pytest
from oidc_provider_mock import User, run_server_in_thread
from playwright.sync_api import expect, sync_playwright

from engine.access import accounts, audit
from nodal_demo import demo
from tests.e2e import procs
from tests.homes import copy_home, environ

ARTIFACTS = procs.REPO / "test-artifacts" / "sign-in"
KIM = User(
    sub="kim-0042",
    claims={"preferred_username": "kim", "name": "Kim Analyst", "groups": ["data-science"]},
)


@pytest.fixture
def studio(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    port = procs.free_port()
    with run_server_in_thread(user_claims=[KIM]) as provider:
        issuer = f"http://127.0.0.1:{provider.server_port}"
        secrets = tmp_path / "secrets.toml"
        secrets.write_text(
            "[auth]\n"
            f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
            'cookie_secret = "a-secret-only-this-test-knows-0123456789"\n'
            'client_id = "nodal-studio"\n'
            'client_secret = "nodal-studio-secret"\n'
            f'server_metadata_url = "{issuer}/.well-known/openid-configuration"\n'
        )
        # The provider's "data-science" group is nodal's "analysts" (write on every project).
        env = {**environ(settings), "NODAL_OIDC_GROUPS": "data-science=analysts,hr=business"}
        with procs.streamlit_app(
            "apps/design_studio/app.py",
            env,
            tmp_path / "studio.log",
            port=port,
            flags=("--secrets.files", str(secrets)),
        ) as (url, _):
            yield url, store


def test_a_person_signs_in_with_the_provider_and_gets_their_groups_rights(studio):
    url, store = studio
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=procs.CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(url)
            page.get_by_role("button", name="Sign in with your organisation").click()
            page.get_by_role("button", name=KIM.sub, exact=True).click()  # the provider's page
            expect(page.get_by_text("Signed in as")).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Kim Analyst")).to_be_visible()
            expect(page.get_by_text(f"Flow of {demo.PROJECT}")).to_be_visible(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "oidc-studio.png"), full_page=True)
        finally:
            browser.close()
    kim = accounts.get_user(store, "kim")
    assert (kim.source, kim.groups, kim.is_admin) == ("oidc", ("analysts",), False)
    created = audit.events(store, action="user.create", object_id="kim")
    assert created and created[0].actor == "oidc"
