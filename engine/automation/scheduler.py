"""The automation runner's scheduling: one cron job per enabled time trigger of the active
bundles, the ``dataset_changed`` watch, queued runs in a small thread pool, and the catch-up
policy after downtime (:meth:`Runner.catch_up`). The process entry is ``engine/runner.py``.
Catch-up policy for time triggers (``NODAL_CATCH_UP``, default ``once``): every tick the
runner records that it is alive (``runner_state`` "alive"). When it starts again, each time
trigger whose fire time passed between the later of (the last "alive" record, the
scenario's last time-triggered run) and now gets ONE catch-up run (trigger
``time (catch-up)``), whatever the number of missed fires: fires are coalesced, never
replayed one by one, and the run processes the newest data. ``skip`` logs the missed fires
and runs nothing. A runner that never ran on this infrastructure has missed nothing.
Triggers that appear later (a new bundle activated while running) start at their next fire.

One runner per infrastructure (:mod:`engine.automation.lease`): with a ``lease``, only the
runner holding it schedules, watches and runs; every other runner of the infrastructure is a
hot standby that keeps the holder's bundles ready (``node.sync(standby=True)``) and fires
nothing. When a runner acquires the lease (its first start, or a takeover from a dead
holder), it aborts the runs of earlier epochs, then schedules and applies the catch-up
policy from the last "alive" record of whoever held the lease before: exactly once, as
after a restart. When it loses the lease it removes its time jobs and stands by.

Crash safety: runs left RUNNING by a runner that died are marked ABORTED when the next
runner takes the lease; all data writes are atomic renames, so an interrupted run leaves
nothing half-written.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.engine import Connection

from engine.automation import runs
from engine.automation.lease import Lease, LeaseLost
from engine.automation.node import AutomationNode
from engine.project import triggers

log = logging.getLogger("nodal.runner")
ALIVE = "alive"
SYNC_JOB = "sync"  # the id of the runner's tick job (engine/runner.py)


class Runner:
    def __init__(
        self,
        node: AutomationNode,
        scheduler: BaseScheduler,
        catch_up: str = "once",
        lease: Lease | None = None,
    ) -> None:
        self.node = node
        self.scheduler = scheduler
        self.catch_up_policy = catch_up
        self.lease = lease  # None: this runner is alone by construction (tests, --in-process)
        self._triggers: dict[str, str] = {}
        self._lock = threading.RLock()  # taking over / standing by vs. a tick
        self._holding = lease is None
        self._epoch: int | None = None  # the lease epoch this runner scheduled under
        # When this infrastructure's runner was last seen alive, read before we overwrite it
        # (again when this runner takes the lease, see take_over).
        last = node.get_state(ALIVE)
        self.last_alive = datetime.fromisoformat(last) if last else None
        self._started = False

    @property
    def fence(self) -> runs.Fence | None:
        return self._fence if self.lease is not None else None

    def _fence(self, conn: Connection) -> int:
        """The lease's check, and that it is still the epoch this runner scheduled under (a
        paused runner that got the lease back after another held it must not replay fires)."""
        assert self.lease is not None
        epoch = self.lease.fence(conn)
        if epoch != self._epoch:
            raise LeaseLost(f"the lease of {self.node.infra_id} changed hands meanwhile")
        return epoch

    def holding(self) -> bool:
        """Whether this runner may fire (holds the lease, by its own clock too)."""
        return self.lease is None or (self._holding and self.lease.held())

    def keep_lease(self) -> bool:
        """Acquire or renew the lease (a job every NODAL_RUNNER_RENEW_SECONDS, on its own
        thread); take over or stand by when that changes. Whether this runner holds it."""
        assert self.lease is not None
        try:
            self.lease.announce()
            held = self.lease.renew()
        except Exception:  # noqa: BLE001 - the control store may be down: trust our clock
            log.exception("renewing the runner lease failed")
            held = self.lease.held()
        if held and self._holding and self.lease.epoch != self._epoch:
            self.stand_by("the lease changed hands while this runner was not looking")
        if held and not self._holding:
            self.take_over()
        elif not held and self._holding:
            self.stand_by("another runner holds the lease now")
        return held

    def take_over(self) -> None:
        """This runner just acquired the lease: abort the runs of earlier epochs, then
        schedule with the catch-up policy, from the previous holder's last "alive"."""
        assert self.lease is not None and self.lease.epoch is not None
        with self._lock:
            epoch = self.lease.epoch
            aborted = runs.abort_orphans(self.node.store, self.node.infra_id, epoch_below=epoch)
            if aborted:
                log.warning("%d run(s) left RUNNING by an earlier runner marked ABORTED", aborted)
            last = self.node.get_state(ALIVE)
            self.last_alive = datetime.fromisoformat(last) if last else None
            self._started = False
            self._epoch = epoch
            self._holding = True
            log.info(
                "runner %s holds the lease of %s (epoch %d): scheduling",
                self.lease.holder,
                self.node.infra_id,
                epoch,
            )
        with contextlib.suppress(Exception):  # tick now (a test's scheduler has no tick job)
            self.scheduler.modify_job(SYNC_JOB, next_run_time=datetime.now(UTC))

    def stand_by(self, why: str) -> None:
        """Stop firing: remove the time jobs; a standby only keeps bundles ready."""
        with self._lock:
            if not self._holding:
                return
            self._holding = False
            for job_id in list(self._triggers):
                with contextlib.suppress(Exception):  # already gone
                    self.scheduler.remove_job(job_id)
                del self._triggers[job_id]
            log.error("runner %s stands by (%s): it fires nothing", self.lease.holder, why)

    def tick(self) -> None:
        """Pull desired state, reconcile schedules, watch datasets, start queued runs.

        A standby only pulls (and prepares) the bundles the holder activated."""
        try:
            if not self.holding():
                for r in self.node.sync(standby=True):
                    if r.status == "ERROR":
                        log.warning("%s (standby): %s", r.project, r.message)
                return
            for r in self.node.sync():
                if r.status == "ERROR":
                    log.error("%s: %s", r.project, r.message)
            with self._lock:
                if not self.holding():
                    return
                self.reconcile_schedules()
                self.node.set_state(ALIVE, datetime.now(UTC).isoformat(), self.fence)
            self.node.watch_datasets(self.fence)
            for run_id in self.node.queued_runs():
                self.submit(run_id)
        except LeaseLost as exc:
            self.stand_by(str(exc))
        except Exception:
            log.exception("sync failed; retrying at the next tick")

    def submit(self, run_id: int) -> None:
        self.scheduler.add_job(
            self.execute, args=[run_id], id=f"run-{run_id}", replace_existing=True
        )

    def execute(self, run_id: int) -> None:
        if not self.holding():
            return  # the holder starts it
        try:
            outcome = self.node.run(run_id, self.fence)
            if outcome is not None:
                log.info("run %s ended %s", run_id, outcome)
                for follower in self.node.queue_followers(run_id, self.fence):
                    log.info("run %s queued after run %s", follower, run_id)
                    self.submit(follower)
        except LeaseLost as exc:
            self.stand_by(str(exc))

    def scheduled(self, project: str, scenario: str) -> None:
        """A time trigger fires (APScheduler): one run, if this runner holds the lease."""
        if not self.holding():
            log.warning("%s/%s: time trigger not fired: no lease", project, scenario)
            return
        try:
            run_id = runs.request_run(
                self.node.store, self.node.infra_id, project, scenario, "time", fence=self.fence
            )
        except LeaseLost as exc:
            self.stand_by(str(exc))
            return
        self.execute(run_id)

    def reconcile_schedules(self) -> None:
        wanted: dict[str, tuple[str, str, str]] = {}
        for project in self.node.active_projects():
            try:
                found = {
                    f"{project}:{name}:{index}": (project, name, triggers.cron_of(trig))
                    for name, index, trig in self.node.enabled_triggers(project)
                    if trig.get("type") == "time"
                }
            except Exception:  # noqa: BLE001 - one broken project must not stop the others
                log.exception("%s: its triggers cannot be read; its schedule is kept", project)
                found = {
                    job_id: (project, job_id.split(":")[1], cron)
                    for job_id, cron in self._triggers.items()
                    if job_id.startswith(f"{project}:")
                }
            wanted.update(found)
        for job_id in list(self._triggers):
            if job_id not in wanted or wanted[job_id][2] != self._triggers[job_id]:
                self.scheduler.remove_job(job_id)
                del self._triggers[job_id]
        for job_id, (project, scenario, cron) in wanted.items():
            if job_id in self._triggers:
                continue
            trigger = CronTrigger.from_crontab(cron, timezone="UTC")
            self.scheduler.add_job(
                self.scheduled,
                trigger,
                args=[project, scenario],
                id=job_id,
                misfire_grace_time=None,
                coalesce=True,
                max_instances=1,
            )
            self._triggers[job_id] = cron
            if not self._started:
                self.catch_up(project, scenario, trigger)
        self._started = True

    def missed_fires(
        self, project: str, scenario: str, trigger: CronTrigger, now: datetime | None = None
    ) -> list[datetime]:
        """Fire times of ``trigger`` that passed while no runner was alive (at most 1000)."""
        if self.last_alive is None:
            return []  # no runner ever ran here: nothing was missed
        now = now or datetime.now(UTC)
        since = self.last_alive
        for r in runs.list_runs(self.node.store, self.node.infra_id, limit=500):
            if (
                r["project"] == project
                and r["scenario"] == scenario
                and r["trigger"].startswith("time")
            ):
                since = max(since, datetime.fromisoformat(r["requested_at"]))
                break
        fires: list[datetime] = []
        fire = trigger.get_next_fire_time(None, since + timedelta(microseconds=1))
        while fire is not None and fire <= now and len(fires) < 1000:
            fires.append(fire)
            fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
        return fires

    def catch_up(self, project: str, scenario: str, trigger: CronTrigger) -> int | None:
        """Apply the catch-up policy to one time trigger at start-up; the run queued, if any."""
        fires = self.missed_fires(project, scenario, trigger)
        if not fires:
            return None
        what = f"{project}/{scenario} missed {len(fires)} scheduled run(s), the last at {fires[-1]:%Y-%m-%d %H:%M} UTC"
        if self.catch_up_policy == "skip":
            log.warning("%s: not caught up (NODAL_CATCH_UP=skip)", what)
            return None
        log.warning("%s: catching up once", what)
        run_id = runs.request_run(
            self.node.store,
            self.node.infra_id,
            project,
            scenario,
            "time (catch-up)",
            fence=self.fence,
        )
        self.submit(run_id)
        return run_id
