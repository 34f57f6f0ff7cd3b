"""The control store: the same code on SQLite (WAL, several processes) and on PostgreSQL.

The PostgreSQL case needs a server: `.ci/run` starts one and sets NODAL_TEST_PG_URL; on a
machine without one these tests fail with a message saying so (they are never skipped).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import sqlalchemy as sa

from engine.automation import dashboards, runs
from engine.automation.node import AutomationNode
from engine.deployer import bundles
from engine.deployer import deployments as deployer
from engine.storage.control import (
    ControlStore,
    check_results,
    infrastructures,
    metadata,
    now_iso,
    open_store,
)
from tests.conftest import make_settings
from tests.homes import seed_test_actors

PG_URL = os.environ.get(
    "NODAL_TEST_PG_URL", "postgresql+psycopg://nodal:nodal@127.0.0.1/nodal_test"
)


def _postgres_store() -> ControlStore:
    store = ControlStore(PG_URL)
    try:
        with store.engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL not reachable at {PG_URL} ({exc.orig}); run the PostgreSQL setup of "
            ".ci/run or set NODAL_TEST_PG_URL",
            pytrace=False,
        )
    metadata.drop_all(store.engine)  # a database reserved for these tests
    store.init_schema()
    seed_test_actors(store)
    return store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> ControlStore:
    if request.param == "sqlite":
        yield open_store(f"sqlite:///{tmp_path / 'control.db'}")
        return
    store = _postgres_store()
    yield store
    store.dispose()


def test_the_schema_is_created(store):
    with store.read() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert {
        "bundles",
        "deployments",
        "deployment_history",
        "scenario_runs",
        "check_results",
    } <= tables


def test_sqlite_runs_in_wal_mode(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'control.db'}")
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_a_database_of_an_earlier_version_gets_the_new_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'control.db'}"
    old = ControlStore(url)
    old.init_schema()
    seed_test_actors(old)
    deployer.create_infra(old, "auto", "automation", "prod", actor="test")
    deployer.set_version(old, "project", "shop", "auto", "v1", "ops")
    with old.write() as conn:  # the deployments table as an earlier version made it
        conn.exec_driver_sql("ALTER TABLE deployments DROP COLUMN node_status_since")
    old.dispose()

    store = ControlStore(url)
    store.init_schema()
    store.init_schema()  # idempotent
    dep = deployer.get_deployment(store, "shop-on-auto")
    assert (dep.version, dep.node_status_since) == ("v1", None)
    deployer.report(store, dep.deployment_id, "v1", "HEALTHY", "bundle v1 active")
    assert deployer.get_deployment(store, dep.deployment_id).node_status_since is not None


def test_a_failed_write_changes_nothing(store):
    with pytest.raises(RuntimeError), store.write() as conn:
        conn.execute(
            sa.insert(infrastructures).values(
                infra_id="a",
                kind="automation",
                stage="dev",
                variables_json="{}",
                created_at=now_iso(),
            )
        )
        raise RuntimeError("boom")
    with store.read() as conn:
        assert conn.execute(sa.select(infrastructures)).all() == []


def test_writes_from_another_process_are_seen(store):
    code = (
        "import sqlalchemy as sa; from engine.storage.control import *\n"
        f"s = open_store({store.url!r})\n"
        "with s.write() as c: c.execute(sa.insert(infrastructures).values(infra_id='x', "
        "kind='apinode', stage='prod', variables_json='{}', created_at=now_iso()))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with store.read() as conn:
        assert conn.execute(sa.select(infrastructures.c.infra_id)).scalars().all() == ["x"]


def test_the_whole_deploy_and_run_path_on_postgresql(demo_env, tmp_path):
    """Bundle, deploy, activate, run the daily scenario and publish, with PostgreSQL as the store."""
    store = _postgres_store()
    settings = make_settings(tmp_path, control_url=PG_URL)
    shutil.copytree(demo_env.settings.data_dir, settings.data_dir)
    try:
        bundles.create_bundle(settings.home, store, demo_env.project, "pg1", "on PostgreSQL", "ci")
        deployer.create_infra(store, "automation-pg", "automation", "prod", actor="test")
        dep = deployer.deploy_bundle(store, "fraud", "pg1", "automation-pg", "ci")
        node = AutomationNode(settings, store, "automation-pg")
        node.sync()
        assert deployer.get_deployment(store, dep.deployment_id).status == "HEALTHY"
        run_id = runs.request_run(store, "automation-pg", "fraud", "daily_scoring", "test")
        assert node.run(run_id) == runs.SUCCESS, runs.get_run(store, run_id)
        # … the fifth and sixth publish the card profiles and the card windows' state for the
        # API nodes (issue 15)
        assert [s["status"] for s in runs.get_run(store, run_id)["steps"]] == ["SUCCESS"] * 6
        published = dashboards.published(store, "fraud", "fraud_map", "automation-pg")
        assert len(published) == 1 and published.iloc[0]["run_id"] == run_id
        with store.read() as conn:
            outcomes = conn.execute(sa.select(check_results.c.outcome)).scalars().all()
        assert outcomes == ["OK", "OK"]
        assert [h["to_version"] for h in deployer.history(store, dep.deployment_id)][-1] == "pg1"
    finally:
        store.dispose()
