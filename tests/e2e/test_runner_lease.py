"""Two ``nodal runner --infra auto`` processes on one home (real processes, a real control
store): only the lease holder fires and runs, the other stands by; SIGKILL the holder and
the standby takes over within lease + one renew period, fires the trigger missed meanwhile
once and applies the catch-up policy once; a holder paused (SIGSTOP) past its lease fires
and starts nothing when it resumes while the other holds (engine/automation/lease.py).

The takeover runs on SQLite and on PostgreSQL (a database of its own, NODAL_TEST_PG_URL's
server). The triggers are driven: a new partition of a watched dataset (``dataset_changed``), queued
runs, and the catch-up of a daily time trigger whose last "alive" record is moved back two
days (as in tests/e2e/test_runner_faults.py), since a cron fire is at most once a minute.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from engine.automation import runs
from engine.automation.lease import lease_info
from engine.automation.node import AutomationNode
from engine.automation.scheduler import ALIVE
from engine.core.settings import load_settings
from engine.deployer import bundles
from engine.deployer import deployments as deployer
from engine.design import dataset_import
from engine.design import projects as design
from engine.monitoring import status
from engine.storage.control import open_store
from tests.e2e import procs
from tests.engine.small_project import SHOPS_CSV
from tests.homes import environ, seed_test_actors

INFRA = "auto"
LEASE, RENEW = 3.0, 0.5
# What a takeover may take beyond lease + renew here: the test's polling, and process
# scheduling on a loaded 2-core machine.
SLACK = 1.0
HELLO = """name: hello
triggers:
  - {type: dataset_changed, dataset: shops}
  - {type: time, cron: "0 6 * * *"}
steps:
  - {name: q, type: sql, sql: 'SELECT 1'}
"""


PG_URL = os.environ.get(
    "NODAL_TEST_PG_URL", "postgresql+psycopg://nodal:nodal@127.0.0.1/nodal_test"
)


@pytest.fixture
def pg_url():
    """A PostgreSQL database of its own (the role may create databases, as in .ci/run)."""
    base = sa.engine.make_url(PG_URL)
    name = f"nodal_lease_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    quoted = admin.dialect.identifier_preparer.quote(name)  # generated, not user input
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {quoted}"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL not reachable at {PG_URL} ({exc.orig})", pytrace=False)
    url = base.set(database=name).render_as_string(hide_password=False)
    yield url
    open_store(url).dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {quoted} WITH (FORCE)"))
    admin.dispose()


def _shop(tmp_path, control_url: str = ""):
    """The small project's ``hello`` scenario deployed on automation node ``auto``."""
    settings = load_settings(
        environ={},
        home=tmp_path / "var",
        data_dir=tmp_path / "data",
        basemap="none",
        control_url=control_url,
    )
    store = open_store(settings.control_store_url)
    seed_test_actors(store)
    design.create_project(settings, store, "shop", "test project", actor="test")
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "shops.csv").write_text(SHOPS_CSV)
    project = design.open_project(settings, "shop")
    csv = settings.data_dir / "shops.csv"
    dataset_import.import_file(project, "shops", csv, partition_column="opened")
    deployer.create_infra(store, INFRA, "automation", "prod", actor="test")
    (project.root / "scenarios").mkdir(exist_ok=True)
    (project.root / "scenarios" / "hello.yaml").write_text(HELLO)
    project = design.open_project(settings, "shop")
    bundles.create_bundle(settings.home, store, project, "s1", "", "ann")
    deployer.deploy_bundle(store, "shop", "s1", INFRA, "ops")
    env = {
        **environ(settings),
        "NODAL_CONTROL_URL": control_url,
        "NODAL_POLL_SECONDS": "0.5",
        "NODAL_RUNNER_LEASE_SECONDS": str(LEASE),
        "NODAL_RUNNER_RENEW_SECONDS": str(RENEW),
    }
    return settings, store, env


@pytest.fixture(params=["sqlite", "postgresql"])
def shop(request, tmp_path):
    if request.param == "sqlite":
        return _shop(tmp_path)
    return _shop(tmp_path, request.getfixturevalue("pg_url"))


def _start(env, log, **extra):
    return procs.start(["-m", "engine.cli.main", "runner", "--infra", INFRA], {**env, **extra}, log)


def _pid_of(holder: str) -> int:
    return int(holder.split(":")[-2])


def _holds(store, proc) -> bool:
    info = lease_info(store, INFRA)
    return info is not None and info.held and _pid_of(info.holder) == proc.pid


def _stands_by(store, proc) -> bool:
    info = lease_info(store, INFRA)
    return info is not None and proc.pid in {_pid_of(h) for h in info.standbys}


def _add_partition(settings, store, day: str) -> None:
    """A new day of ``shops`` lands in the node's data (what a dataset trigger watches)."""
    ref = AutomationNode(settings, store, INFRA).project("shop").dataset("shops")
    folder = ref.partition_path(day)
    folder.mkdir(parents=True)
    frame = pd.DataFrame({"shop_id": [9], "city": ["Reno"], "monthly_sales": [1.0]})
    frame.to_parquet(folder / ".tmp.parquet")
    os.replace(folder / ".tmp.parquet", folder / "data.parquet")


def _runs(store) -> list[dict]:
    return runs.list_runs(store, INFRA, limit=500)


def _all_ended(store, count: int) -> bool:
    rows = _runs(store)
    return len(rows) >= count and all(r["status"] not in ("QUEUED", "RUNNING") for r in rows)


def _dataset_runs(store, day: str) -> list[dict]:
    return [r for r in _runs(store) if r["trigger"] == f"dataset shops changed ({day})"]


def _ready(settings, store, env, tmp_path, **b_env):
    """Runner A holding the lease, runner B standing by, the watch's first look taken."""
    a = _start(env, tmp_path / "a.log")
    procs.wait_for(lambda: _holds(store, a), 30, "runner A holds the lease", tmp_path / "a.log")
    b = _start(env, tmp_path / "b.log", **b_env)
    procs.wait_for(lambda: _stands_by(store, b), 30, "runner B stands by", tmp_path / "b.log")
    node = AutomationNode(settings, store, INFRA)
    key = "dataset:shop:hello:0:shops"
    procs.wait_for(
        lambda: node.get_state(key) is not None, 30, "the first look", tmp_path / "a.log"
    )
    return a, b


def test_only_the_holder_fires_and_a_killed_holder_is_replaced_within_the_bound(shop, tmp_path):
    settings, store, env = shop
    a, b = _ready(settings, store, env, tmp_path)
    a2 = None
    try:
        epoch_a = lease_info(store, INFRA).epoch
        # Monitoring's status of the deployment names the holder and the standby.
        (dep,) = status.deployment_statuses(store)
        info = lease_info(store, INFRA)
        assert f"runner {info.holder} holds the lease (epoch 1)" in dep.message
        assert f"standby: {info.standbys[0]}" in dep.message and f":{b.pid}:" in dep.message
        listed = procs.nodal(["infra", "list"], env).stdout  # and so does `nodal infra list`
        assert (
            f"runner {info.holder} holds the lease (epoch 1); standby: {info.standbys[0]}" in listed
        )
        # Queued runs and two new days: all run once, all by the holder.
        queued = [runs.request_run(store, INFRA, "shop", "hello", "manual") for _ in range(4)]
        _add_partition(settings, store, "2024-02-01")
        _add_partition(settings, store, "2024-02-02")
        procs.wait_for(lambda: _all_ended(store, 6), 30, "the runs", tmp_path / "a.log")
        time.sleep(1.0)  # a few more ticks of both runners: nothing more fires
        rows = _runs(store)
        assert len(rows) == 6, rows
        assert {r["run_id"] for r in rows} >= set(queued)
        assert {(r["status"], r["runner_pid"], r["lease_epoch"]) for r in rows} == {
            ("SUCCESS", a.pid, epoch_a)
        }
        assert [len(_dataset_runs(store, d)) for d in ("2024-02-01", "2024-02-02")] == [1, 1]
        assert not any(r["trigger"].startswith("time") for r in rows)

        # SIGKILL the holder. While nobody holds the lease a new day lands, and (as if the
        # holder had hung for two days before dying) its last "alive" is two 06:00 fires ago.
        procs.stop(a, signal.SIGKILL)
        killed = time.monotonic()
        _add_partition(settings, store, "2024-02-03")
        AutomationNode(settings, store, INFRA).set_state(
            ALIVE, (datetime.now(UTC) - timedelta(days=2)).isoformat()
        )
        while not _holds(store, b):
            assert time.monotonic() - killed < LEASE + RENEW + SLACK + 5, "no takeover"
            time.sleep(0.05)
        took = time.monotonic() - killed
        print(f"takeover {took:.2f}s after the SIGKILL (bound {LEASE + RENEW:.1f}s)")
        assert took <= LEASE + RENEW + SLACK, f"takeover after {took:.2f}s"
        epoch_b = lease_info(store, INFRA).epoch
        assert epoch_b == epoch_a + 1

        def caught_up() -> list[dict]:
            return [r for r in _runs(store) if r["trigger"] == "time (catch-up)"]

        procs.wait_for(
            lambda: _all_ended(store, 8) and caught_up() and _dataset_runs(store, "2024-02-03"),
            30,
            "the standby's catch-up and the missed dataset trigger",
            tmp_path / "b.log",
        )
        assert "missed 2 scheduled run(s)" in (tmp_path / "b.log").read_text()
        new = [r for r in _runs(store) if r["run_id"] > max(x["run_id"] for x in rows)]
        assert sorted(r["trigger"] for r in new) == [
            "dataset shops changed (2024-02-03)",
            "time (catch-up)",
        ]
        assert {(r["status"], r["runner_pid"], r["lease_epoch"]) for r in new} == {
            ("SUCCESS", b.pid, epoch_b)
        }

        # A new runner stands by; B stops cleanly (gives the lease up) and it takes over at
        # once: nothing was missed since B's catch-up, so nothing is caught up again.
        a2 = _start(env, tmp_path / "a2.log")
        procs.wait_for(lambda: _stands_by(store, a2), 30, "the new runner stands by")
        procs.stop(b)
        procs.wait_for(lambda: _holds(store, a2), LEASE, "the handover", tmp_path / "a2.log")
        _add_partition(settings, store, "2024-02-04")
        procs.wait_for(lambda: _dataset_runs(store, "2024-02-04"), 30, "the new holder's run")
        procs.wait_for(lambda: _all_ended(store, 9), 30, "its end")
        time.sleep(1.0)
        assert len(caught_up()) == 1
        assert len(_runs(store)) == 9
    finally:
        for p in (a, b, a2):
            if p is not None:
                procs.stop(p)


def test_a_holder_paused_past_its_lease_fires_nothing_when_it_resumes(tmp_path):
    settings, store, env = _shop(tmp_path)
    # B polls slower: a resumed A that believed it still held the lease would act first.
    a, b = _ready(settings, store, env, tmp_path, NODAL_POLL_SECONDS="2")
    try:
        epoch_a = lease_info(store, INFRA).epoch
        os.killpg(a.pid, signal.SIGSTOP)
        procs.wait_for(lambda: _holds(store, b), LEASE + RENEW + SLACK + 2, "B takes over")
        epoch_b = lease_info(store, INFRA).epoch
        assert epoch_b == epoch_a + 1
        _add_partition(settings, store, "2024-03-01")
        procs.wait_for(lambda: _all_ended(store, 1), 30, "B's run", tmp_path / "b.log")

        # Work waiting for whoever acts first, then A wakes up (still believing it holds).
        queued = [runs.request_run(store, INFRA, "shop", "hello", "manual") for _ in range(3)]
        _add_partition(settings, store, "2024-03-02")
        os.killpg(a.pid, signal.SIGCONT)
        procs.wait_for(lambda: _all_ended(store, 5), 30, "the runs", tmp_path / "b.log")
        time.sleep(1.5)  # a few more ticks of both
        rows = _runs(store)
        assert len(rows) == 5, rows
        assert {r["run_id"] for r in rows} >= set(queued)
        assert {(r["status"], r["runner_pid"], r["lease_epoch"]) for r in rows} == {
            ("SUCCESS", b.pid, epoch_b)
        }
        assert [len(_dataset_runs(store, d)) for d in ("2024-03-01", "2024-03-02")] == [1, 1]
        assert a.poll() is None and _stands_by(store, a) and _holds(store, b)
        assert "stands by" in (tmp_path / "a.log").read_text()
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGCONT)
        procs.stop(a)
        procs.stop(b)
