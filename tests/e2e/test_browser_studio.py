"""In a real browser (headless Chromium), an analyst's journey in the Design Studio: import a
CSV that is not the example data (a broken one first, refused), add a recipe over it, train
in the Lab, add a check, create a bundle. Screenshots are kept in
``test-artifacts/design_studio/``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Page, expect, sync_playwright

from engine.core.settings import Settings
from engine.deployer import bundles
from engine.design import lab
from engine.design import projects as design
from tests.e2e import procs
from tests.e2e.browser import with_session
from tests.homes import copy_home, environ

ARTIFACTS = procs.REPO / "test-artifacts" / "design_studio"
RISK_CSV = (
    "merchant_category,risk_level,reviewed_on\n"
    "electronics,high,2026-10-01\n"
    "travel,high,2026-10-01\n"
    "grocery,low,2026-10-02\n"
    "restaurant,low,2026-10-02\n"
    "gas,medium,2026-10-03\n"
)


@contextlib.contextmanager
def design_studio(settings: Settings, log: Path) -> Iterator[str]:
    """A real Design Studio process on ``settings``' home; yields its URL."""
    env = environ(settings)
    with procs.streamlit_app("apps/design_studio/app.py", env, log) as (url, proc):
        yield url, proc


@contextlib.contextmanager
def chromium() -> Iterator[Page]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=procs.CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1600})
        finally:
            browser.close()


def choose(page: Page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox or multiselect labelled ``label``."""
    page.get_by_role("combobox", name=label).click()
    page.keyboard.type(option)  # the list shows a few options at a time: filter it first
    page.get_by_role("option", name=option, exact=True).click()


def go(page: Page, title: str) -> None:
    """Open a page from the sidebar (a fresh session's deep link would bypass the app's
    navigation: Streamlit then runs the page file alone)."""
    page.get_by_role("link", name=title).click()


def type_in(page: Page, label: str, text: str, commit: bool = True) -> None:
    """Fill a text input and commit it (Enter; not inside a form, where Enter submits),
    checking it kept the value after the rerun."""
    box = page.get_by_role("textbox", name=label, exact=True).last
    for _ in range(3):  # a rerun still drawing the page can swallow what was typed
        box.fill(text)
        if commit:
            box.press("Enter")
        page.wait_for_timeout(500)
        if box.input_value() == text:
            return
    expect(box).to_have_value(text)


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def studio(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    with design_studio(settings, tmp_path / "studio.log") as (url, _proc):
        yield url, settings, store


def test_an_analyst_imports_prepares_trains_checks_and_bundles_in_the_browser(studio, tmp_path):
    url, settings, store = studio
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    good, broken = tmp_path / "category_risk.csv", tmp_path / "category_risk_broken.csv"
    good.write_text(RISK_CSV)
    broken.write_text(RISK_CSV + "toys,low,2026-10-03,unexpected\n")
    with chromium() as page:
        # 1. Import: the broken file is refused with its line, the good one lands.
        with_session(page, url, settings, "analyst")
        page.goto(f"{url}/?project=fraud")
        expect(page.get_by_text("Flow of fraud")).to_be_visible(timeout=60_000)
        go(page, "Datasets")
        page.locator("input[type=file]").set_input_files(str(broken))
        importer = page.get_by_role("button", name="Import")
        expect(importer).to_be_visible(timeout=60_000)
        importer.click()
        expect(page.get_by_text("Nothing was imported")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("line 7")).to_be_visible()
        shot(page, "1-broken-csv-refused")
        page.locator("input[type=file]").set_input_files(str(good))
        expect(page.get_by_text("category_risk.csv: 3 columns")).to_be_visible(timeout=30_000)
        choose(page, "Partition by day of", "reviewed_on")
        page.get_by_role("button", name="Import").click()
        expect(page.get_by_text("Imported category_risk: 5 rows")).to_be_visible(timeout=30_000)
        shot(page, "2-csv-imported")

        # 2. A recipe over it, previewed then saved.
        go(page, "Recipes")
        expect(page.get_by_role("textbox", name="Name", exact=True).last).to_be_visible(
            timeout=60_000
        )
        type_in(page, "Name", "risky_categories")
        type_in(page, "Output dataset", "risky_categories")
        choose(page, "Inputs", "category_risk")
        page.keyboard.press("Escape")
        sql = page.get_by_role("textbox", name="SQL (DuckDB; each input is a table of its name)")
        sql.fill(
            "SELECT merchant_category, risk_level\nFROM category_risk\nWHERE risk_level <> 'low'"
        )
        sql.press("Control+Enter")
        page.get_by_role("button", name="Preview").click()
        expect(page.get_by_text("First 3 rows")).to_be_visible(timeout=30_000)
        shot(page, "3-recipe-preview")
        page.get_by_role("button", name="Save", exact=True).click()
        expect(page.get_by_text("Recipe risky_categories saved")).to_be_visible(timeout=30_000)

        # 3. Train in the Lab (progress, then results).
        go(page, "Lab")
        train = page.get_by_role("button", name="Train")
        expect(train).to_be_visible(timeout=60_000)
        train.click()
        expect(page.get_by_text("Trained fraud_model lab run")).to_be_visible(timeout=180_000)
        expect(page.get_by_text("Best possible AUC")).to_be_visible()
        shot(page, "4-lab-results")

        # 4. A check on the imported dataset.
        go(page, "Metrics and checks")
        expect(page.get_by_role("combobox", name="Dataset")).to_be_visible(timeout=60_000)
        choose(page, "Dataset", "category_risk")
        page.get_by_role("tab", name="Add a check").click()
        type_in(page, "Name", "known_risk_levels", commit=False)
        choose(page, "Type", "value_in_set")
        choose(page, "Column (column checks)", "risk_level")
        type_in(
            page, "Allowed values (value in set), comma-separated", "high,medium,low", commit=False
        )
        page.get_by_role("button", name="Add check").click()
        expect(page.get_by_text("Check known_risk_levels added")).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Run metrics and checks now").click()
        expect(page.get_by_text("1 checks: OK")).to_be_visible(timeout=30_000)
        shot(page, "5-check-added-and-run")

        # 5. A bundle carrying the imported data; a used id is refused first.
        go(page, "Bundles")
        bundle_id = page.get_by_role("textbox", name="Bundle id")
        expect(bundle_id).to_be_visible(timeout=60_000)
        type_in(page, "Bundle id", "v1")
        page.get_by_role("button", name="Create bundle").click()
        expect(page.get_by_text("already used")).to_be_visible(timeout=30_000)
        type_in(page, "Bundle id", "v2")
        type_in(page, "Release notes", "Category risk from the browser")
        choose(page, "Datasets whose data travel with the bundle", "category_risk")
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Create bundle").click()
        expect(page.get_by_text("Bundle v2 created")).to_be_visible(timeout=60_000)
        shot(page, "6-bundle-created")

    project = design.open_project(settings, "fraud")
    assert project.recipes["risky_categories"].inputs == {"category_risk": "all"}
    assert project.dataset("category_risk").partitions() == [
        "2026-10-01",
        "2026-10-02",
        "2026-10-03",
    ]
    assert lab.list_runs(project, "fraud_model")[0]["trained_by"] == "analyst"
    checks_yaml = yaml.safe_load((project.root / "checks.yaml").read_text())
    assert checks_yaml["category_risk"][0]["values"] == ["high", "medium", "low"]
    manifest = bundles.verify_bundle(bundles.get_bundle(store, "fraud", "v2").path)
    assert manifest["datasets"]["category_risk"]["rows"] == 5
    assert "recipes/risky_categories.sql" in manifest["members"]
