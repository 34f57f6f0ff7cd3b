"""``nodal enrichment publish`` of a windows output (the demo's card_windows) publishes its
window state, what the daily ``publish_card_windows`` step publishes, through its newest
built day or ``--day``, as NODAL_USER; a day it was not built for is one line, exit 2, and
publishes nothing."""

from __future__ import annotations

from engine.access import audit
from engine.deployer import enrichments
from nodal_demo import demo
from tests.e2e.procs import nodal
from tests.homes import copy_home, environ


def test_publishing_a_windows_output_by_hand_publishes_its_window_state(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    user = "test"  # the demo home's administrator
    env = {**environ(settings), "NODAL_USER": user}
    args = ["enrichment", "publish", "card_windows", "--project", demo.PROJECT]
    args += ["--infra", demo.AUTOMATION_INFRA]
    before = enrichments.versions(store, demo.PROJECT, "card_windows")

    missing = nodal([*args, "--day", "1999-01-01"], env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "card_windows has no data for 1999-01-01" in missing.stderr
    rows = nodal([*args, "--rows", "all"], env)
    assert rows.returncode == 2 and "is a windows output" in rows.stderr
    assert enrichments.versions(store, demo.PROJECT, "card_windows") == before

    done = nodal(args, env)
    assert done.returncode == 0, done.stderr
    pub = enrichments.versions(store, demo.PROJECT, "card_windows")[0]
    assert pub.rows_selection == enrichments.WINDOW_EVENTS and pub.published_by == user
    assert pub.run_id is None and pub.n_rows > 0 and pub.stage == "prod"
    assert f"published card_windows v{pub.version} (window state through {pub.as_of}" in (
        done.stdout
    )
    event = audit.events(store, action="enrichment.publish", limit=1)[0]
    assert (event.actor, event.object_id) == (user, f"{demo.PROJECT}/card_windows")

    helptext = nodal(["enrichment", "publish", "--help"], env)
    assert "--day" in helptext.stdout and "window state" in helptext.stdout
