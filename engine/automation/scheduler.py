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

Crash safety: runs left RUNNING by a runner that died are marked ABORTED at start-up; all
data writes are atomic renames, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger

from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.project import triggers

log = logging.getLogger("nodal.runner")
ALIVE = "alive"


class Runner:
    def __init__(
        self, node: AutomationNode, scheduler: BaseScheduler, catch_up: str = "once"
    ) -> None:
        self.node = node
        self.scheduler = scheduler
        self.catch_up_policy = catch_up
        self._triggers: dict[str, str] = {}
        # When this infrastructure's runner was last seen alive, read before we overwrite it.
        last = node.get_state(ALIVE)
        self.last_alive = datetime.fromisoformat(last) if last else None
        self._started = False

    def tick(self) -> None:
        """Pull desired state, reconcile schedules, watch datasets, start queued runs."""
        try:
            for r in self.node.sync():
                if r.status == "ERROR":
                    log.error("%s: %s", r.project, r.message)
            self.reconcile_schedules()
            self.node.set_state(ALIVE, datetime.now(UTC).isoformat())
            self.node.watch_datasets()
            for run_id in self.node.queued_runs():
                self.submit(run_id)
        except Exception:
            log.exception("sync failed; retrying at the next tick")

    def submit(self, run_id: int) -> None:
        self.scheduler.add_job(
            self.execute, args=[run_id], id=f"run-{run_id}", replace_existing=True
        )

    def execute(self, run_id: int) -> None:
        outcome = self.node.run(run_id)
        if outcome is not None:
            log.info("run %s ended %s", run_id, outcome)
            for follower in self.node.queue_followers(run_id):
                log.info("run %s queued after run %s", follower, run_id)
                self.submit(follower)

    def scheduled(self, project: str, scenario: str) -> None:
        run_id = runs.request_run(self.node.store, self.node.infra_id, project, scenario, "time")
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
            self.node.store, self.node.infra_id, project, scenario, "time (catch-up)"
        )
        self.submit(run_id)
        return run_id
