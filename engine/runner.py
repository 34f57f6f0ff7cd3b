"""The automation runner: one process per automation infrastructure (APScheduler inside).

Every ``poll_seconds`` it pulls the desired state (activating new bundles), keeps one cron
job per scenario time trigger of the active bundles, and executes runs queued on demand
(``nodal scenario run``). Runs execute in a small thread pool; the same scenario never runs
twice at once (the control store refuses the second claim).

Catch-up policy for time triggers: when the runner starts (or a bundle is activated), a
scenario whose latest scheduled fire time passed since its last run was requested gets ONE
catch-up run (missed fires are coalesced, never replayed one by one).

Crash safety: runs left RUNNING by a runner that died are marked ABORTED at start-up; all
data writes are atomic renames, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from engine import scenarios
from engine.automation import AutomationNode
from engine.settings import describe_settings, load_settings
from engine.storage.control import open_store

log = logging.getLogger("nodal.runner")


class Runner:
    def __init__(self, node: AutomationNode, scheduler: BlockingScheduler) -> None:
        self.node = node
        self.scheduler = scheduler
        self._triggers: dict[str, str] = {}

    def tick(self) -> None:
        """Pull desired state, reconcile schedules, start queued runs."""
        try:
            for r in self.node.sync():
                if r.status == "ERROR":
                    log.error("%s: %s", r.project, r.message)
            self.reconcile_schedules()
            for run_id in self.node.queued_runs():
                self.scheduler.add_job(
                    self.execute, args=[run_id], id=f"run-{run_id}", replace_existing=True
                )
        except Exception:
            log.exception("sync failed; retrying at the next tick")

    def execute(self, run_id: int) -> None:
        outcome = self.node.run(run_id)
        if outcome is not None:
            log.info("run %s ended %s", run_id, outcome)

    def scheduled(self, project: str, scenario: str) -> None:
        run_id = scenarios.request_run(
            self.node.store, self.node.infra_id, project, scenario, "time"
        )
        self.execute(run_id)

    def reconcile_schedules(self) -> None:
        wanted: dict[str, tuple[str, str, str]] = {}
        for dep in _active_projects(self.node):
            project = self.node.project(dep)
            for name, spec in project.scenarios.items():
                for i, trig in enumerate(spec.get("triggers") or []):
                    if trig.get("type") == "time":
                        wanted[f"{dep}:{name}:{i}"] = (dep, name, str(trig["cron"]))
        for job_id in list(self._triggers):
            if job_id not in wanted or wanted[job_id][2] != self._triggers[job_id]:
                self.scheduler.remove_job(job_id)
                del self._triggers[job_id]
        for job_id, (project, scenario, cron) in wanted.items():
            if job_id in self._triggers:
                continue
            trigger = CronTrigger.from_crontab(cron)
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
            self.catch_up(project, scenario, trigger)

    def catch_up(self, project: str, scenario: str, trigger: CronTrigger) -> None:
        """Queue one run if a scheduled fire was missed since the scenario last ran."""
        runs = [
            r
            for r in scenarios.list_runs(self.node.store, self.node.infra_id, limit=500)
            if r["project"] == project
            and r["scenario"] == scenario
            and r["trigger"].startswith("time")
        ]
        if not runs:
            return  # never scheduled here before: nothing was missed
        last = datetime.fromisoformat(runs[0]["requested_at"])
        now = datetime.now(UTC)
        fire = trigger.get_next_fire_time(None, last.astimezone(trigger.timezone))
        if fire is not None and fire <= now:
            log.warning("%s/%s missed its run at %s: catching up once", project, scenario, fire)
            run_id = scenarios.request_run(
                self.node.store, self.node.infra_id, project, scenario, "time (catch-up)"
            )
            self.scheduler.add_job(self.execute, args=[run_id], id=f"run-{run_id}")


def _active_projects(node: AutomationNode) -> list[str]:
    active = node.home / "active"
    return (
        sorted(p.name for p in active.iterdir() if not p.name.startswith("."))
        if active.exists()
        else []
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodal runner",
        description="Run the automation node of one infrastructure: activate deployed bundles, "
        "schedule their scenarios, execute queued runs.",
        epilog="Settings (environment):\n" + describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--infra", required=True, help="automation infrastructure id, e.g. automation-prod"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_settings()
    store = open_store(settings.control_store_url)
    node = AutomationNode(settings, store, args.infra)
    aborted = scenarios.abort_orphans(store, args.infra)
    if aborted:
        log.warning("%d run(s) left RUNNING by a stopped runner marked ABORTED", aborted)
    scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(4)}, timezone="UTC")
    runner = Runner(node, scheduler)
    scheduler.add_job(
        runner.tick,
        "interval",
        seconds=settings.poll_seconds,
        id="sync",
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
    )

    def stop(signum: int, _frame: object) -> None:
        # Data writes are atomic, so stopping mid-run is safe; the run is marked ABORTED.
        scenarios.abort_orphans(store, args.infra)
        log.info("runner for %s stopped (signal %d)", args.infra, signum)
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("runner for %s started (pid %d, home %s)", args.infra, os.getpid(), node.home)
    scheduler.start()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
