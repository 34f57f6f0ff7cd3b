"""The automation runner process: ``nodal runner`` (``python -m engine.runner --infra ID``).

One process per automation infrastructure, APScheduler inside. Every ``poll_seconds`` it
pulls the desired state (activating new bundles), keeps one cron job per enabled time
trigger, looks for new partitions watched by ``dataset_changed`` triggers and executes
queued runs; the same scenario never runs twice at once. What it schedules and when it
catches up is :mod:`engine.automation.scheduler`.

It also watches statuses (:func:`engine.monitoring.status.alert_changes`, every
``poll_seconds``): a deployment's or endpoint's status change is alerted once (log, and
``NODAL_STATUS_WEBHOOK``), by whichever runner claims it first; pages only read.

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

from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.automation.scheduler import Runner
from engine.core.settings import Settings, describe_settings, load_settings
from engine.monitoring import status
from engine.storage.control import ControlStore, open_store

log = logging.getLogger("nodal.runner")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodal runner",
        description="Run the automation node of one infrastructure: activate deployed bundles, "
        "schedule their scenarios, execute queued runs.",
        epilog="Settings (environment):\n" + describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--infra", required=True, help="automation infrastructure id (nodal infra list)"
    )
    return parser


def watch_statuses(settings: Settings, store: ControlStore) -> None:
    """Alert the status changes since the last look (a runner job; never raises)."""
    try:
        for s in status.alert_changes(store, settings.home, settings.status_webhook):
            log.info("status of %s %s: now %s (%s)", s.kind, s.label, s.status, s.message)
    except Exception:
        log.exception("watching statuses failed; retrying at the next tick")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_settings()
    store = open_store(settings.control_store_url)
    node = AutomationNode(settings, store, args.infra)
    aborted = runs.abort_orphans(store, args.infra)
    if aborted:
        log.warning("%d run(s) left RUNNING by a stopped runner marked ABORTED", aborted)
    scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(4)}, timezone="UTC")
    runner = Runner(node, scheduler, settings.catch_up)
    scheduler.add_job(
        runner.tick,
        "interval",
        seconds=settings.poll_seconds,
        id="sync",
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
    )

    scheduler.add_job(
        watch_statuses,
        "interval",
        args=[settings, store],
        seconds=settings.poll_seconds,
        id="status",
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
    )

    def stop(signum: int, _frame: object) -> None:
        # Data writes are atomic, so stopping mid-run is safe; the run is marked ABORTED.
        runs.abort_orphans(store, args.infra)
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
