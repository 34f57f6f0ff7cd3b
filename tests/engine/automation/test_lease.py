"""The runner lease (engine/automation/lease.py) on SQLite and PostgreSQL: one holder at a
time, even when many runners try at once; a standby takes an expired lease with a new
epoch; a stale holder's fenced writes are refused and change nothing; a holder stops by its
own clock; and, through the scheduler, a takeover catches a missed schedule up once while
the stale holder's time trigger fires nothing.

Expiry is simulated by moving ``expires_at`` back in the control store (no waiting). The
PostgreSQL case needs a server (NODAL_TEST_PG_URL, as in tests/engine/storage/
test_control_store.py); each test uses its own infrastructure id, so the shared test
database is never cleared.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from engine.automation import runs
from engine.automation.lease import Lease, LeaseLost, lease_info
from engine.automation.node import AutomationNode
from engine.automation.scheduler import ALIVE, Runner
from engine.deployer import bundles
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.storage.control import ControlStore, open_store, runner_leases, scenario_runs
from tests.engine.small_project import make_small

PG_URL = os.environ.get(
    "NODAL_TEST_PG_URL", "postgresql+psycopg://nodal:nodal@127.0.0.1/nodal_test"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> ControlStore:
    if request.param == "sqlite":
        yield open_store(f"sqlite:///{tmp_path / 'control.db'}")
        return
    pg = ControlStore(PG_URL)
    try:
        with pg.engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL not reachable at {PG_URL} ({exc.orig})", pytrace=False)
    pg.init_schema()  # adds runner_leases and scenario_runs.lease_epoch to an older database
    yield pg
    pg.dispose()


@pytest.fixture
def infra() -> str:
    return f"auto-{uuid.uuid4().hex[:8]}"


def _expire(store: ControlStore, infra: str) -> None:
    """The holder's last renewal is now a minute older than its lease (it stopped renewing)."""
    with store.write() as conn:
        conn.execute(
            sa.update(runner_leases)
            .where(runner_leases.c.infra_id == infra)
            .values(expires_at=runner_leases.c.expires_at - 60)
        )


def test_one_holder_then_a_takeover_with_a_new_epoch(store, infra):
    a, b = Lease(store, infra, 30, "host-a:1:aa"), Lease(store, infra, 30, "host-b:1:bb")
    assert lease_info(store, infra) is None
    assert a.renew() and a.epoch == 1
    assert not b.renew() and b.epoch is None
    assert a.renew() and a.epoch == 1  # renewing keeps the epoch
    info = lease_info(store, infra)
    assert (info.holder, info.epoch, info.held) == ("host-a:1:aa", 1, True)
    assert 25 < info.expires_in <= 30

    _expire(store, infra)
    assert not lease_info(store, infra).held
    assert b.renew() and b.epoch == 2
    assert not a.renew() and a.epoch is None
    assert lease_info(store, infra).holder == "host-b:1:bb"

    b.release()  # a clean stop: the other takes it at once
    assert a.renew() and a.epoch == 3


def test_of_many_runners_trying_at_once_exactly_one_holds_the_lease(store, infra):
    leases = [Lease(store, infra, 30, f"host-{i}:{i}:00") for i in range(8)]
    start = threading.Barrier(len(leases))
    won: list[bool] = [False] * len(leases)

    def contend(i: int) -> None:
        start.wait()
        won[i] = leases[i].renew()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(leases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(won) == 1, won
    (winner,) = [x for x, w in zip(leases, won, strict=True) if w]
    assert lease_info(store, infra).holder == winner.holder and winner.epoch == 1

    _expire(store, infra)  # and again when it expires: one of the others, one epoch more
    start.reset()
    won = [False] * len(leases)
    others = [i for i, x in enumerate(leases) if x is not winner]
    threads = [threading.Thread(target=contend, args=(i,)) for i in others]
    start = threading.Barrier(len(others))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(won) == 1 and lease_info(store, infra).epoch == 2


def test_a_stale_holder_is_fenced_and_changes_nothing(store, infra):
    a, b = Lease(store, infra, 30, "host-a:1:aa"), Lease(store, infra, 30, "host-b:1:bb")
    assert a.renew()
    queued = runs.request_run(store, infra, "p", "s", "time", fence=a.fence)
    assert runs.get_run(store, queued)["lease_epoch"] == 1

    _expire(store, infra)
    assert b.renew() and b.epoch == 2
    assert a.held()  # by its own clock it still holds: only the database knows better
    with store.read() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(scenario_runs)).scalar()
    with pytest.raises(LeaseLost, match="lost the lease"):
        runs.request_run(store, infra, "p", "s", "time", fence=a.fence)
    assert a.epoch is None and not a.held()
    with store.read() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(scenario_runs)).scalar() == before
        )
    with pytest.raises(LeaseLost):
        runs.claim_run(store, queued, None, a.fence)
    assert runs.get_run(store, queued)["status"] == runs.QUEUED

    assert runs.claim_run(store, queued, None, b.fence)
    run = runs.get_run(store, queued)
    assert (run["status"], run["lease_epoch"]) == (runs.RUNNING, 2)


def test_a_holder_past_its_lease_by_its_own_clock_stops_before_asking(store, infra):
    a = Lease(store, infra, 30, "host-a:1:aa")
    assert a.renew()
    a._deadline = time.monotonic() - 1  # as after a pause (SIGSTOP) longer than the lease
    assert not a.held()
    with pytest.raises(LeaseLost, match="does not hold"):
        runs.request_run(store, infra, "p", "s", "time", fence=a.fence)
    assert lease_info(store, infra).holder == "host-a:1:aa"  # the database still says so
    assert a.renew() and a.epoch == 1  # nobody took it meanwhile: same epoch, holds again


class Jobs:
    """A scheduler that runs submitted jobs at once and keeps cron jobs without firing."""

    def __init__(self) -> None:
        self.cron: dict[str, object] = {}

    def add_job(self, func, trigger=None, args=(), id=None, **_):  # noqa: A002
        if trigger is None:
            func(*args)
        else:
            self.cron[id] = trigger

    def remove_job(self, job_id: str) -> None:
        del self.cron[job_id]


def _runners(tmp_path) -> tuple[ControlStore, Runner, Runner]:
    """Two runners of infrastructure ``auto`` (a daily ``hello`` deployed there), on
    schedulers that run submitted jobs at once: neither holds the lease yet."""
    small = make_small(tmp_path, with_shops=False)
    settings, store = small.settings, small.store
    deployer.create_infra(store, "auto", "automation", "prod", actor="test")
    root = small.project().root
    (root / "scenarios").mkdir(exist_ok=True)
    (root / "scenarios" / "hello.yaml").write_text(
        "name: hello\ntriggers:\n  - {type: time, cron: '0 6 * * *'}\n"
        "steps:\n  - {name: q, type: sql, sql: 'SELECT 1'}\n"
    )
    project = design.open_project(settings, "shop")
    bundles.create_bundle(settings.home, store, project, "s1", "", "ann")
    deployer.deploy_bundle(store, "shop", "s1", "auto", "ops")

    def runner(name: str) -> Runner:
        node = AutomationNode(settings, store, "auto")
        return Runner(node, Jobs(), "once", Lease(store, "auto", 30, name))

    return store, runner("host-a:1:aa"), runner("host-b:1:bb")


def test_a_takeover_catches_up_once_and_the_stale_holder_fires_nothing(tmp_path, caplog):
    store, a, b = _runners(tmp_path)
    assert a.keep_lease() and not b.keep_lease()
    a.tick()
    b.tick()  # the standby prepares the bundle and schedules nothing
    assert list(a.scheduler.cron) == ["shop:hello:0"] and b.scheduler.cron == {}
    assert runs.list_runs(store, "auto") == []

    # A stops renewing; its last sign of life is two 06:00 fires ago; B takes over.
    _expire(store, "auto")
    b.node.set_state(ALIVE, (datetime.now(UTC) - timedelta(days=2)).isoformat())
    assert b.keep_lease()
    b.tick()
    b.tick()
    (run,) = runs.list_runs(store, "auto")
    assert (run["trigger"], run["status"], run["lease_epoch"]) == (
        "time (catch-up)",
        runs.SUCCESS,
        2,
    )
    assert "missed 2 scheduled run(s)" in caplog.text
    assert list(b.scheduler.cron) == ["shop:hello:0"]

    # A still believes it holds the lease (its clock says so): its 06:00 fire is refused,
    # and it stands by, its time jobs gone.
    assert a.holding()
    a.scheduled("shop", "hello")
    assert len(runs.list_runs(store, "auto")) == 1
    assert not a.holding() and a.scheduler.cron == {}
    assert "stands by" in caplog.text
    assert not a.keep_lease()
    a.tick()
    assert len(runs.list_runs(store, "auto")) == 1


def test_a_runner_that_gets_the_lease_back_after_another_held_it_replays_no_fire(tmp_path):
    store, a, b = _runners(tmp_path)
    assert a.keep_lease()
    a.tick()
    _expire(store, "auto")  # A is away (paused); B holds the lease a while, then stops
    assert b.keep_lease()
    b.tick()
    b.lease.release()
    assert b.lease.epoch is None and runs.list_runs(store, "auto") == []

    # A wakes: its renewal gets the lease back (epoch 3) before it noticed anything, and its
    # old 06:00 job fires: refused, B may have fired it. Then A takes over afresh.
    assert a.lease.renew() and a.lease.epoch == 3 and a.holding()
    a.scheduled("shop", "hello")
    assert runs.list_runs(store, "auto") == []
    assert a.keep_lease() and a.holding()
    a.tick()
    assert list(a.scheduler.cron) == ["shop:hello:0"] and runs.list_runs(store, "auto") == []
