"""Signing a real browser in: through the sign-in form, or with a session cookie made for
a person of the home (for tests about something else than signing in)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from engine.access import accounts
from engine.core.settings import Settings
from engine.storage.control import open_store

COOKIE = "nodal_session"


def with_session(page: Page, url: str, settings: Settings, name: str) -> Page:
    """Give ``page``'s browser a live session of ``name`` for the app at ``url``."""
    token = accounts.open_session(open_store(settings.control_store_url), name)
    page.context.add_cookies([{"name": COOKIE, "value": token, "url": url}])
    return page


def sign_in(page: Page, name: str, password: str, *, succeeds: bool = True) -> None:
    """Fill the sign-in form the page shows and submit it; when it ``succeeds``, wait until
    the form is gone (typing into a page still starting can be lost: then type again)."""
    button = page.get_by_role("button", name="Sign in", exact=True)
    for _attempt in range(3):
        expect(page.get_by_label("User name")).to_be_visible(timeout=60_000)
        page.get_by_label("User name").fill(name)
        page.get_by_label("Password", exact=True).fill(password)
        button.click()
        if not succeeds:
            return
        try:
            expect(button).to_have_count(0, timeout=20_000)
            return
        except AssertionError:
            continue
    expect(button).to_have_count(0)
