"""The runner lease: one automation runner per infrastructure schedules and runs, guaranteed.

One row per infrastructure in the control store (``runner_leases``): who holds the lease,
its epoch (a number that grows each time the lease changes hands) and when it expires, in
seconds since 1970 **on the database's clock** (PostgreSQL's ``clock_timestamp()``,
SQLite's ``julianday('now')``; SQLite is one machine anyway). The runner that holds it
renews it every ``NODAL_RUNNER_RENEW_SECONDS``; any other runner of the infrastructure is a
hot standby that retries as often and takes the lease once it has expired
(``NODAL_RUNNER_LEASE_SECONDS`` after the holder's last renewal), so a dead holder is
replaced within lease + one renew period.

* **Acquiring** is one conditional ``UPDATE … WHERE holder = me OR expires_at < now``
  whose row count says who won; the first runner of an infrastructure inserts an expired
  row first (a unique key: of two inserts one fails, harmlessly).
* **Fencing**: everything a holder does that fires or starts a run (a time trigger's run,
  a catch-up, a dataset trigger, claiming a queued run, a follower) happens in one
  transaction that first runs ``UPDATE … WHERE holder = me AND epoch = mine AND
  expires_at > now`` (:meth:`Lease.fence`); zero rows raises :class:`LeaseLost` and the
  transaction changes nothing. The update locks the lease row (PostgreSQL) or the database
  (SQLite), so a takeover waits for that transaction and then sees its run. The run records
  the epoch (``scenario_runs.lease_epoch``); a new holder aborts the RUNNING runs of older
  epochs.
* **Local deadline**: a holder also stops by itself when ``lease seconds`` have passed on
  its own monotonic clock since the start of its last successful renewal, before asking the
  database (a process paused by SIGSTOP or a long GC pause stops firing as soon as it runs
  again). Clock assumption: the database's and the runner's clocks advance at the same
  rate; their offsets do not matter.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.core.errors import NodalError
from engine.storage.control import ControlStore, now_iso, runner_leases, runner_state

log = logging.getLogger("nodal.runner")
MEMBER = "runner:"  # runner_state key prefix of each running runner (holder or standby)


class LeaseLost(NodalError):
    """This runner does not hold its infrastructure's lease (any more): it must not fire."""


def db_now(conn: Connection) -> sa.ColumnElement:
    """The database's current time, in seconds since 1970 (a SQL expression)."""
    if conn.dialect.name == "postgresql":
        return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)
    return (sa.func.julianday("now") - 2440587.5) * 86400.0


def new_holder_id() -> str:
    """A name for this runner process: host, pid and a random part (pids repeat across hosts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds an infrastructure's lease, as the database sees it now."""

    infra_id: str
    holder: str
    epoch: int
    expires_in: float  # seconds; negative: expired (no runner holds it)
    standbys: tuple[str, ...] = ()

    @property
    def held(self) -> bool:
        return bool(self.holder) and self.expires_in > 0

    def describe(self) -> str:
        if self.held:
            text = f"runner {self.holder} holds the lease (epoch {self.epoch})"
        elif self.holder and self.expires_in < -1e8:  # released at a clean stop
            text = f"no runner holds the lease (the last, {self.holder}, stopped)"
        elif self.holder:
            text = (
                f"no runner holds the lease (the last, {self.holder}, "
                f"expired {-self.expires_in:.0f}s ago)"
            )
        else:
            text = "no runner has held the lease yet"
        return text + (f"; standby: {', '.join(self.standbys)}" if self.standbys else "")


class Lease:
    """This runner's side of its infrastructure's lease (module docstring)."""

    def __init__(
        self, store: ControlStore, infra_id: str, seconds: float, holder: str | None = None
    ) -> None:
        if not seconds > 0:
            raise ValueError("the lease duration must be positive")
        self.store = store
        self.infra_id = infra_id
        self.seconds = float(seconds)
        self.holder = holder or new_holder_id()
        self.epoch: int | None = None  # the epoch of the lease we hold, None when we do not
        self._deadline = 0.0  # time.monotonic() after which we stop trusting it

    def held(self) -> bool:
        """Whether we hold the lease, by our own clock only (no database round trip)."""
        return self.epoch is not None and time.monotonic() < self._deadline

    def renew(self) -> bool:
        """Acquire the lease, or renew it if we hold it; whether we hold it afterwards."""
        started = time.monotonic()
        t = runner_leases
        for _ in range(2):
            with self.store.write() as conn:
                now = db_now(conn)
                mine = t.c.holder == self.holder
                done = conn.execute(
                    sa.update(t)
                    .where(t.c.infra_id == self.infra_id, sa.or_(mine, t.c.expires_at < now))
                    .values(
                        # SET expressions read the row as it was: a new holder, a new epoch.
                        epoch=sa.case((mine, t.c.epoch), else_=t.c.epoch + 1),
                        acquired_at=sa.case((mine, t.c.acquired_at), else_=now),
                        holder=self.holder,
                        renewed_at=now,
                        expires_at=now + self.seconds,
                    )
                )
                if done.rowcount == 1:
                    epoch = conn.execute(
                        sa.select(t.c.epoch).where(t.c.infra_id == self.infra_id)
                    ).scalar_one()
                    break
                exists = conn.execute(
                    sa.select(t.c.infra_id).where(t.c.infra_id == self.infra_id)
                ).first()
            if exists is not None:
                self.epoch = None
                return False
            try:  # the first runner of this infrastructure: an expired row to take
                with self.store.write() as conn:
                    conn.execute(
                        sa.insert(t).values(
                            infra_id=self.infra_id,
                            holder="",
                            epoch=0,
                            acquired_at=0.0,
                            renewed_at=0.0,
                            expires_at=0.0,
                        )
                    )
            except sa.exc.IntegrityError:
                pass  # another runner inserted it first; the update decides
        else:  # pragma: no cover - the row exists after the insert
            self.epoch = None
            return False
        if self.epoch is not None and epoch != self.epoch:
            log.error("lease of %s: epoch %s became %s", self.infra_id, self.epoch, epoch)
        self.epoch = int(epoch)
        self._deadline = started + self.seconds
        return True

    def fence(self, conn: Connection) -> int:
        """In the caller's transaction: check we still hold the lease (and lock it until the
        transaction ends); the epoch to record. :class:`LeaseLost` otherwise."""
        if not self.held():
            self.epoch = None
            raise LeaseLost(f"runner {self.holder} does not hold the lease of {self.infra_id}")
        t = runner_leases
        done = conn.execute(
            sa.update(t)
            .where(
                t.c.infra_id == self.infra_id,
                t.c.holder == self.holder,
                t.c.epoch == self.epoch,
                t.c.expires_at > db_now(conn),
            )
            .values(holder=t.c.holder)
        )
        if done.rowcount != 1:
            lost = self.epoch
            self.epoch = None
            raise LeaseLost(
                f"runner {self.holder} lost the lease of {self.infra_id} (epoch {lost})"
            )
        return int(self.epoch)  # type: ignore[arg-type] - held() checked it

    def release(self) -> None:
        """Give the lease up at a clean stop, so a standby takes over at its next try."""
        t = runner_leases
        with self.store.write() as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.infra_id == self.infra_id, t.c.holder == self.holder)
                .values(expires_at=0.0)
            )
            conn.execute(
                sa.delete(runner_state).where(
                    runner_state.c.infra_id == self.infra_id,
                    runner_state.c.key == MEMBER + self.holder,
                )
            )
        self.epoch = None

    def announce(self) -> None:
        """Record that this runner is alive (holder or standby), for :func:`lease_info`."""
        key = MEMBER + self.holder
        value = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        where = (runner_state.c.infra_id == self.infra_id, runner_state.c.key == key)
        gone = (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="microseconds")
        with self.store.write() as conn:
            conn.execute(sa.delete(runner_state).where(*where))
            conn.execute(
                sa.insert(runner_state).values(
                    infra_id=self.infra_id, key=key, value=value, updated_at=now_iso()
                )
            )
            conn.execute(  # runners killed a day ago or more are forgotten
                sa.delete(runner_state).where(
                    runner_state.c.infra_id == self.infra_id,
                    runner_state.c.key.startswith(MEMBER),
                    runner_state.c.updated_at < gone,
                )
            )


def lease_info(
    store: ControlStore, infra_id: str, recent_seconds: float = 60.0
) -> LeaseInfo | None:
    """The lease of ``infra_id`` and its standbys (runners that announced themselves within
    ``recent_seconds``, by the reader's clock), or None if no runner ever ran there."""
    t = runner_leases
    with store.read() as conn:
        row = conn.execute(
            sa.select(t.c.holder, t.c.epoch, (t.c.expires_at - db_now(conn)).label("left")).where(
                t.c.infra_id == infra_id
            )
        ).first()
        members = conn.execute(
            sa.select(runner_state.c.key, runner_state.c.updated_at).where(
                runner_state.c.infra_id == infra_id, runner_state.c.key.startswith(MEMBER)
            )
        ).all()
    if row is None:
        return None
    since = time.time() - recent_seconds
    standbys = tuple(
        sorted(
            key.removeprefix(MEMBER)
            for key, at in members
            if key.removeprefix(MEMBER) != row.holder
            and datetime.fromisoformat(at).timestamp() >= since
        )
    )
    return LeaseInfo(infra_id, row.holder, int(row.epoch), float(row.left), standbys)
