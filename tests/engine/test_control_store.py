"""The control store: SQLite in WAL mode, usable from several processes."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa

from engine.storage.control import ControlStore, infrastructures, now_iso, open_store


def test_sqlite_runs_in_wal_mode_and_creates_the_schema(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'control.db'}")
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        tables = set(sa.inspect(conn).get_table_names())
    assert {
        "bundles",
        "deployments",
        "deployment_history",
        "scenario_runs",
        "check_results",
    } <= tables


def test_a_failed_write_changes_nothing(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'control.db'}")
    try:
        with store.write() as conn:
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
    except RuntimeError:
        pass
    with store.read() as conn:
        assert conn.execute(sa.select(infrastructures)).all() == []


def test_writes_from_another_process_are_seen(tmp_path):
    url = f"sqlite:///{tmp_path / 'control.db'}"
    store = ControlStore(url)
    store.init_schema()
    code = (
        f"from engine.storage.control import *; import sqlalchemy as sa; s = open_store({url!r})\n"
        "with s.write() as c: c.execute(sa.insert(infrastructures).values(infra_id='x', kind='apinode', "
        "stage='prod', variables_json='{}', created_at=now_iso()))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with store.read() as conn:
        assert conn.execute(sa.select(infrastructures.c.infra_id)).scalars().all() == ["x"]
