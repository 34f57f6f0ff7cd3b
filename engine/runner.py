"""The automation runner process: ``nodal runner`` (``python -m engine.runner --infra ID``).

APScheduler inside. Several runners of one infrastructure may run (on several hosts): the one
holding the infrastructure's lease in the control store (:mod:`engine.automation.lease`,
renewed every ``NODAL_RUNNER_RENEW_SECONDS`` on a thread of its own) does the work below;
the others are hot standbys that take over within ``NODAL_RUNNER_LEASE_SECONDS`` + one renew
period when it dies. Every ``poll_seconds`` the holder
pulls the desired state (activating new bundles), keeps one cron job per enabled time
trigger, looks for new partitions watched by ``dataset_changed`` triggers and executes
queued runs; the same scenario never runs twice at once. What it schedules and when it
catches up is :mod:`engine.automation.scheduler`.

It also watches statuses (:func:`engine.monitoring.status.alert_changes`, every
``poll_seconds``): a deployment's or endpoint's status change is alerted once (log, and
``NODAL_STATUS_WEBHOOK``), by whichever runner claims it first; pages only read.

Crash safety: runs left RUNNING by a runner that died are marked ABORTED by the runner that
takes the lease next; all data writes are atomic renames, so an interrupted run leaves
nothing half-written. A clean stop (SIGTERM) aborts the holder's runs and gives the lease up.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from engine.automation import runs
from engine.automation.lease import Lease
from engine.automation.node import AutomationNode
from engine.automation.scheduler import SYNC_JOB, Runner
from engine.core.settings import Settings, describe_settings, load_settings
from engine.monitoring import status
from engine.storage.control import ControlStore, open_store

log = logging.getLogger("nodal.runner")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodal runner",
        description="Run the automation node of one infrastructure: activate deployed bundles, "
        "schedule their scenarios, execute queued runs. Several runners of one infrastructure "
        "may run (on several hosts): the one holding its lease works, the others stand by and "
        "take over when it dies.",
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
    lease = Lease(store, args.infra, settings.runner_lease_seconds)
    # The lease is renewed on a thread of its own: long runs never delay it.
    executors = {"default": ThreadPoolExecutor(4), "lease": ThreadPoolExecutor(1)}
    scheduler = BlockingScheduler(executors=executors, timezone="UTC")
    runner = Runner(node, scheduler, settings.catch_up, lease)
    runner.keep_lease()  # holder or standby from the start (a standby retries below)
    scheduler.add_job(
        runner.keep_lease,
        "interval",
        seconds=settings.runner_renew_seconds,
        id="lease",
        executor="lease",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
    )
    scheduler.add_job(
        runner.tick,
        "interval",
        seconds=settings.poll_seconds,
        id=SYNC_JOB,
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
        with contextlib.suppress(Exception):  # stop even when the control store is down
            if runner.holding():  # a standby's stop touches nobody's runs
                runs.abort_orphans(store, args.infra)
            lease.release()
        log.info("runner %s for %s stopped (signal %d)", lease.holder, args.infra, signum)
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "runner %s for %s started (%s, pid %d, home %s)",
        lease.holder,
        args.infra,
        "holds the lease" if runner.holding() else "standby",
        os.getpid(),
        node.home,
    )
    scheduler.start()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
