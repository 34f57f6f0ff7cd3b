"""Deployer Console pages, run with AppTest: deployments, the deploy form, bundles."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from engine.automation import runs
from engine.deployer import apipackages, bundles
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.storage.control import bundles as bundles_table
from nodal_demo import demo
from tests.homes import copy_home, environ, sign_in_app

APP = Path(__file__).resolve().parents[2] / "apps" / "deployer_console" / "app.py"
DEPLOYMENT = deployer.deployment_id_for(demo.PROJECT, demo.AUTOMATION_INFRA)


def _open(page: str) -> AppTest:
    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=60))
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def console_copy(demo_env, tmp_path, monkeypatch):
    """A private copy of the demo home with a second bundle, v2, seen by the app."""
    settings, store = copy_home(demo_env.settings, tmp_path)
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    project = design.open_project(settings, demo.PROJECT)
    bundles.create_bundle(settings.home, store, project, "v2", "Second bundle.", "analyst")
    return settings, store


def _deploy(at: AppTest, bundle: str) -> AppTest:
    at.selectbox(key="deploy_project").set_value(demo.PROJECT)
    at.selectbox(key="deploy_bundle").set_value(bundle)
    at.selectbox(key="deploy_infra").set_value(demo.AUTOMATION_INFRA)
    at.run()
    assert at.button(key="deploy_button").disabled, "Deploy must wait for the confirmation"
    at.checkbox(key="deploy_confirm").check().run()
    assert not at.button(key="deploy_button").disabled
    at.button(key="deploy_button").click().run()
    assert not at.exception, at.exception
    return at


def test_deployments_page_shows_the_worst_status_and_every_deployment(demo_environ):
    at = _open("views/deployments.py")
    deployments = deployer.list_deployments(demo_environ.store)
    worst = deployer.worst_status([d.status for d in deployments])
    overall = at.markdown[0].value
    assert overall.startswith("**Overall**") and f"{worst}]" in overall
    assert f"worst of {len(deployments)} deployments" in overall
    table = at.dataframe[0].value.set_index("deployment")
    assert sorted(table.index) == sorted(d.deployment_id for d in deployments)
    for d in deployments:
        assert table.loc[d.deployment_id, "status"] == d.status
        assert table.loc[d.deployment_id, "desired version"] == d.version
        assert table.loc[d.deployment_id, "on node"] == (d.node_version or "—")
    history = at.dataframe[1].value
    assert at.selectbox(key="history_deployment").value == deployments[0].deployment_id
    assert len(history) == len(deployer.history(demo_environ.store, deployments[0].deployment_id))


def test_deploying_a_new_bundle_changes_the_desired_version_and_the_history(console_copy):
    settings, store = console_copy
    at = _deploy(_open("views/deployments.py"), "v2")
    assert not at.error
    assert "now asks for bundle **v2** (was v1)" in at.success[0].value
    row = at.dataframe[0].value.set_index("deployment").loc[DEPLOYMENT]
    assert (row["desired version"], row["on node"], row["status"]) == ("v2", "v1", "OUT_OF_SYNC")
    assert deployer.get_deployment(store, DEPLOYMENT).version == "v2"
    latest = deployer.history(store, DEPLOYMENT)[0]
    assert (latest["from_version"], latest["to_version"], latest["actor"]) == (
        "v1",
        "v2",
        "test",  # the signed-in person, not the process's user
    )
    assert at.checkbox(key="deploy_confirm").value is False  # confirm again for the next one


def test_the_form_refuses_a_bundle_unknown_by_the_time_of_the_click(console_copy):
    _, store = console_copy
    at = _open("views/deployments.py")
    history_before = deployer.history(store, DEPLOYMENT)
    # v2 is in the list the user sees, then disappears from the registry before they click.
    at.selectbox(key="deploy_bundle").set_value("v2")
    at.checkbox(key="deploy_confirm").check().run()
    with store.write() as conn:
        conn.execute(sa.delete(bundles_table).where(bundles_table.c.bundle_id == "v2"))
    at.button(key="deploy_button").click().run()
    assert not at.exception
    assert at.error[0].value == "Deployment refused: project 'fraud' has no bundle 'v2'"
    assert not at.success
    assert deployer.get_deployment(store, DEPLOYMENT).version == "v1"
    assert deployer.history(store, DEPLOYMENT) == history_before


def test_the_form_refuses_a_tampered_bundle_naming_the_changed_file(console_copy):
    settings, store = console_copy
    path = bundles.get_bundle(store, demo.PROJECT, "v2").path
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members["recipes/features.sql"] += b"\n-- sneaky change\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    at = _deploy(_open("views/deployments.py"), "v2")
    message = at.error[0].value
    assert message.startswith("Deployment refused:") and "recipes/features.sql" in message
    assert deployer.get_deployment(store, DEPLOYMENT).version == "v1"


def test_bundles_page_lists_bundles_with_notes_and_where_they_are_deployed(demo_environ):
    at = _open("views/bundles.py")
    store = demo_environ.store
    table = at.dataframe[0].value.set_index("bundle")
    for b in bundles.list_bundles(store, demo.PROJECT):
        assert table.loc[b.bundle_id, "release notes"] == b.release_notes
        assert table.loc[b.bundle_id, "created by"] == b.created_by
    deployed = deployer.get_deployment(store, DEPLOYMENT).version
    assert demo.AUTOMATION_INFRA in table.loc[deployed, "deployed on"]
    packages = at.dataframe[-1].value
    expected = apipackages.list_packages(store)
    assert list(packages["version"]) == [p.version for p in expected]
    assert demo.API_INFRA in packages.set_index("service").loc["fraud_detection", "deployed on"]


def test_an_empty_home_explains_what_to_do_on_both_pages(tmp_path, monkeypatch):
    monkeypatch.setenv("NODAL_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("NODAL_DATA_DIR", str(tmp_path / "data"))
    at = _open("views/deployments.py")
    assert "Nothing is deployed yet" in at.info[0].value
    assert "automation infrastructure" in at.info[1].value
    assert not at.dataframe and [b.key for b in at.button] == ["nodal_sign_out"]
    at = _open("views/bundles.py")
    assert "No bundle of a project you may read yet" in at.info[0].value
    assert "No API package of a project you may read yet" in at.info[1].value


# --- promote, roll back, infrastructures by stage, scenario runs, bundle diff ------------------


def test_promote_from_dev_to_prod_with_a_confirmation(console_copy):
    settings, store = console_copy
    deployer.create_infra(store, "automation-dev", "automation", "dev", actor="test")
    dev = deployer.deploy_bundle(store, demo.PROJECT, "v2", "automation-dev", "dana")
    at = _open("views/deployments.py")
    at.selectbox(key="promote_from").set_value(dev.deployment_id)
    at.selectbox(key="promote_to").set_value(demo.AUTOMATION_INFRA).run()
    assert at.button(key="promote_button").disabled
    assert (
        "deploy bundle v2 of fraud to automation-prod" in at.checkbox(key="promote_confirm").label
    )
    at.checkbox(key="promote_confirm").check().run()
    at.button(key="promote_button").click().run()
    assert not at.exception and not at.error
    assert f"**{DEPLOYMENT}** now asks for bundle **v2**" in at.success[0].value
    latest = deployer.history(store, DEPLOYMENT)[0]
    assert (latest["action"], latest["from_version"], latest["to_version"], latest["actor"]) == (
        "promote",
        "v1",
        "v2",
        "test",  # the signed-in person
    )
    table = at.dataframe[0].value.set_index("deployment")
    assert table.loc[DEPLOYMENT, "desired version"] == "v2"
    assert table.loc[dev.deployment_id, "stage"] == "dev"


def test_roll_back_offers_the_previous_bundle_first_and_records_it(console_copy):
    settings, store = console_copy
    deployer.deploy_bundle(store, demo.PROJECT, "v2", demo.AUTOMATION_INFRA, "ops")
    at = _open("views/deployments.py")
    at.selectbox(key="rollback_deployment").set_value(DEPLOYMENT).run()
    assert at.selectbox(key="rollback_to").options[0] == "v1"
    assert at.button(key="rollback_button").disabled
    at.checkbox(key="rollback_confirm").check().run()
    at.button(key="rollback_button").click().run()
    assert not at.exception and not at.error
    assert "rolled back from **v2** to **v1**" in at.success[0].value
    assert deployer.get_deployment(store, DEPLOYMENT).version == "v1"
    assert deployer.history(store, DEPLOYMENT)[0]["action"] == "rollback"


def test_infrastructures_page_groups_by_stage_and_adds_stages_and_infras(console_copy):
    _, store = console_copy
    at = _open("views/infrastructures.py")
    assert [h.value for h in at.subheader] == ["Stage dev", "Stage test", "Stage prod"]
    prod = at.dataframe[0].value.set_index("infrastructure")
    assert prod.loc[demo.AUTOMATION_INFRA, "runs"] == "fraud v1"
    at.text_input(key="stage_name").input("staging")
    at.selectbox(key="stage_after").set_value("test")
    at.button(key="stage_button").click().run()
    assert "Stage **staging** added after test." in at.success[0].value
    assert [h.value for h in at.subheader][:4] == [
        "Stage dev",
        "Stage test",
        "Stage staging",
        "Stage prod",
    ]
    at.text_input(key="infra_id").input("bad id!")
    at.selectbox(key="infra_stage").set_value("staging")
    at.button(key="infra_button").click().run()
    assert at.error[0].value.startswith("Infrastructure refused: infrastructure id 'bad id!'")
    at.text_input(key="infra_id").input("automation-staging")
    at.button(key="infra_button").click().run()
    assert "**automation-staging** (automation) added to stage **staging**" in at.success[0].value
    assert deployer.get_infra(store, "automation-staging")["stage"] == "staging"


def test_runs_page_shows_the_timeline_steps_and_reporters_and_aborts(console_copy):
    settings, store = console_copy
    at = _open("views/runs.py")
    at.selectbox(key="runs_deployment").set_value(DEPLOYMENT).run()
    assert not at.exception
    assert at.get("vega_lite_chart"), "the runs timeline"
    timeline = at.dataframe[0].value
    assert list(timeline["status"]) == [
        r["status"] for r in runs.list_runs(store, demo.AUTOMATION_INFRA)
    ]
    steps = at.dataframe[1].value
    scenario = design.open_project(settings, demo.PROJECT).scenarios["daily_scoring"]
    expected = [step["name"] for step in scenario["steps"]]  # every step, in its order
    assert list(steps["step"]) == expected
    assert expected[:4] == ["check_incoming", "build_features", "score", "publish_map"]
    assert (steps["status"] == "SUCCESS").all() and steps["seconds"].notna().all()
    assert at.dataframe[2].value.iloc[0]["reporter_type"] == "log"
    assert [e.label for e in at.expander][:1] == ["check_incoming: log and outputs"]

    at.selectbox(key="run_scenario").set_value("daily_scoring")
    at.button(key="run_now_button").click().run()
    assert "queued on automation-prod" in at.success[0].value
    queued = runs.list_runs(store, demo.AUTOMATION_INFRA, limit=1)[0]
    at.selectbox(key="run_detail").set_value(queued["run_id"]).run()
    at.button(key="abort_button").click().run()
    assert f"Run {queued['run_id']} aborted before it started." in at.success[0].value
    assert runs.get_run(store, queued["run_id"])["status"] == "ABORTED"


def test_runs_page_switches_triggers_and_saves_variables(console_copy):
    _, store = console_copy
    at = _open("views/runs.py")
    at.selectbox(key="runs_deployment").set_value(DEPLOYMENT).run()
    assert at.toggle(key="trigger_daily_scoring_0").value is True
    assert at.toggle(key="trigger_daily_scoring_1").value is False  # enabled: false in YAML
    at.toggle(key="trigger_daily_scoring_1").set_value(True).run()
    assert deployer.trigger_flags(store, DEPLOYMENT)[("daily_scoring", 1)] is True
    at.text_area(key=f"variables_text_{DEPLOYMENT}").input("{not json").run()
    at.button(key="variables_button").click().run()
    assert at.error[0].value.startswith("Not valid JSON")
    assert deployer.get_deployment(store, DEPLOYMENT).variables == {}
    at.text_area(key=f"variables_text_{DEPLOYMENT}").input('{"region": "west"}').run()
    at.button(key="variables_button").click().run()
    assert deployer.get_deployment(store, DEPLOYMENT).variables == {"region": "west"}


def test_bundles_page_diffs_two_bundles(console_copy):
    settings, store = console_copy
    project = design.open_project(settings, demo.PROJECT)
    checks = project.root / "checks.yaml"
    checks.write_text(checks.read_text().replace("tolerance: 0.2", "tolerance: 0.3"))
    bundles.create_bundle(settings.home, store, project, "v3", "Looser check.", "analyst")
    at = _open("views/bundles.py")
    at.selectbox(key="diff_old_fraud").set_value("v2")
    at.selectbox(key="diff_new_fraud").set_value("v3").run()
    diff = at.dataframe[1].value
    assert diff.to_dict("records") == [{"file": "checks.yaml", "change": "changed"}]
    lines = at.code[0].value.splitlines()
    assert lines[:2] == ["--- v2/checks.yaml", "+++ v3/checks.yaml"]
    assert any(x.startswith("-") and "tolerance: 0.2" in x for x in lines)
    assert any(x.startswith("+") and "tolerance: 0.3" in x for x in lines)
