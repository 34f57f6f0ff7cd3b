"""``nodal enrichment``: publishing by hand takes NODAL_USER's rights (the ``run`` right on
the automation node), refusals are one line and exit 2, and the audit trail names who."""

from __future__ import annotations

from engine.access import accounts, audit, rights
from engine.deployer import enrichments
from nodal_demo import demo
from tests.e2e.procs import nodal
from tests.homes import copy_home, environ


def test_publishing_by_hand_needs_the_run_right_on_the_node(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    accounts.create_user(store, "test", "nora")
    env = {**environ(settings), "NODAL_USER": "nora"}
    args = ["enrichment", "publish", "card_profiles", "--project", demo.PROJECT]
    before = len(enrichments.versions(store, demo.PROJECT, "card_profiles"))

    refused = nodal([*args, "--infra", demo.AUTOMATION_INFRA, "--service", demo.SERVICE], env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "nora may not run or abort scenarios on infra 'automation-prod'" in refused.stderr
    assert len(enrichments.versions(store, demo.PROJECT, "card_profiles")) == before

    wrong = nodal([*args, "--infra", demo.API_INFRA], env)
    assert wrong.returncode == 2 and "is an apinode node" in wrong.stderr

    rights.grant(store, "test", "user", "nora", "infra", demo.AUTOMATION_INFRA, "run")
    done = nodal([*args, "--infra", demo.AUTOMATION_INFRA, "--service", demo.SERVICE], env)
    assert done.returncode == 0, done.stderr
    pub = enrichments.versions(store, demo.PROJECT, "card_profiles")[0]
    assert pub.version == before + 1 and pub.published_by == "nora" and pub.stage == "prod"
    assert f"published card_profiles v{pub.version} (latest_day" in done.stdout
    event = audit.events(store, action="enrichment.publish", limit=1)[0]
    assert (event.actor, event.object_id) == ("nora", f"{demo.PROJECT}/card_profiles")

    listed = nodal(["enrichment", "list", "--project", demo.PROJECT], env)
    assert listed.returncode == 0 and f"v{pub.version}" in listed.stdout
