"""Private copies of the shared demo home, for tests that change state.

The session's ``demo_env`` is shared by every test; a test that deploys, publishes another
day or breaks a file works on a copy instead, so the order tests run in never matters.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from engine.access import accounts
from engine.automation import dashboards, runs
from engine.automation.node import AutomationNode
from engine.core.settings import Settings, load_settings
from engine.storage.control import ControlStore, open_store
from nodal_demo import demo


def copy_home(settings: Settings, dest: Path) -> tuple[Settings, ControlStore]:
    """Copy ``settings.home`` (files + a consistent snapshot of control.db) to ``dest``.

    The copy shares the read-only landing zone (``data_dir``) with the original.
    """
    home = Path(dest) / "var"
    shutil.copytree(settings.home, home, ignore=shutil.ignore_patterns("control.db*"))
    src = sqlite3.connect(settings.home / "control.db")
    dst = sqlite3.connect(home / "control.db")
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    copy = load_settings(environ={}, home=home, data_dir=settings.data_dir, basemap="none")
    return copy, open_store(copy.control_store_url)


# The names tests act as when rights are not what they test: administrators on test homes.
# (Tests of rights use the demo's people, who hold only their groups' rights, or make their
# own accounts.)
TEST_ACTORS = (
    "test",
    "t",
    "ops",
    "ops-on-call",
    "analyst",
    "dave",
    "ann",
    "ana",
    "bob",
    "carol",
    "dana",
    "paul",
    "vera",
    "alice",
    "tom",
    "tester",
    "qa",
    "ci",
    "demo",
    "studio",
    "someone",
    "me",
)


def seed_test_actors(store: ControlStore) -> None:
    """Give a test home its first administrator ("root-test") and make every name of
    ``TEST_ACTORS`` an administrator too (skipping any that exist)."""
    accounts.bootstrap_admin(store, "root-test")
    admin = next(u.name for u in accounts.list_users(store) if u.is_admin and u.enabled)
    known = {u.name for u in accounts.list_users(store)}
    for name in TEST_ACTORS:
        if name not in known:
            accounts.create_user(store, admin, name, admin=True)


def sign_in_app(at, name: str = "test"):  # noqa: ANN001, ANN201 - an AppTest
    """``at`` signed in as ``name`` (a session of the home NODAL_HOME names, as the apps
    would open it after the sign-in form)."""
    store = open_store(load_settings().control_store_url)
    seed_test_actors(store)  # an empty home has nobody yet
    at.session_state["nodal_session_token"] = accounts.open_session(store, name)
    return at


def environ(settings: Settings) -> dict[str, str]:
    """The ``NODAL_*`` variables a process (or an AppTest) needs to see this home."""
    return {
        "NODAL_HOME": str(settings.home),
        "NODAL_DATA_DIR": str(settings.data_dir),
        "NODAL_BASEMAP": settings.basemap,
    }


def publish_day(settings: Settings, store: ControlStore, day: str) -> int:
    """Run the daily scoring scenario for ``day`` on the automation node; return the run id."""
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    run_id = runs.request_run(
        store, demo.AUTOMATION_INFRA, demo.PROJECT, "daily_scoring", "test", {"day": day}
    )
    assert node.run(run_id) == runs.SUCCESS, runs.get_run(store, run_id)
    return run_id


def latest_published(store: ControlStore) -> str:
    """The newest day published to the fraud map on the demo's automation node."""
    days = dashboards.published(store, demo.PROJECT, "fraud_map", demo.AUTOMATION_INFRA)["day"]
    return str(days.iloc[0])


def copy_with_previous_day(
    settings: Settings, dest: Path
) -> tuple[Settings, ControlStore, str, str]:
    """A copy of the home where the day before the latest published one is published too.

    Returns the copy's settings and store, the latest day and the previous one.
    """
    copy, store = copy_home(settings, dest)
    latest = latest_published(store)
    node = AutomationNode(copy, store, demo.AUTOMATION_INFRA)
    days = node.project(demo.PROJECT).dataset("transactions").partitions()
    previous = days[days.index(latest) - 1]
    publish_day(copy, store, previous)
    return copy, store, latest, previous
