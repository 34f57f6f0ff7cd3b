"""Scenarios: ordered steps with conditions, run on a node and recorded in the control store.

A run is a row in ``scenario_runs`` (QUEUED → RUNNING → SUCCESS / WARNING / FAILED /
ABORTED), each step a row in ``step_runs`` (RUNNING while it runs, then its outcome, with
timing, the log lines it emitted and its outputs). A failing step makes the later steps
SKIPPED unless their ``run_if`` says otherwise (``no_prior_failure`` is the default,
``always`` and ``prior_failure`` run anyway / only after a failure), so a failed data check
stops the scenario before it publishes anything.

Step types (``STEP_TYPES``, a plain dict ``name -> fn(ctx, step) -> StepOutcome``):
``run_checks``, ``build``, ``score``, ``publish_dashboard``, ``train`` (with an optional
champion/challenger ``gate``), ``sql``, ``python``, ``evaluate`` and ``publish_enrichment``
(fresh lookup rows for the API nodes, :mod:`engine.deployer.enrichments`). Triggers are in
:mod:`engine.project.triggers`, reporters in :mod:`engine.automation.reporters`; the YAML format is documented
in ``docs/architecture.md``.

Abort: :func:`request_abort` records the request in the control store (any process may ask).
While a step runs, a watcher thread polls for it every ``ABORT_POLL_SECONDS``; once it sees
one it sets the run's stop flag and interrupts the DuckDB statements the step has running
(the connections join the step's :func:`engine.storage.datasets.interrupt_scope`), again at
every poll until the step ends. The flag stops LightGBM training at its next iteration (a
training callback), scoring at its next chunk, and a Python step's process is killed. The
executing thread also checks before every step. Whatever the step was doing, it ends
ABORTED with who asked; all writes are atomic renames, so nothing partial is left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy as sa

from engine.automation import reporters
from engine.automation.runs import (
    ABORTED,
    FAILED,
    RUNNING,
    SKIPPED,
    SUCCESS,
    WARNING,
    abort_requested,
    finish_run,
    get_run,
)
from engine.automation.step_types import STEP_TYPES
from engine.automation.steps import RunAborted, RunContext, StepFailed, StepOutcome
from engine.core.errors import NodalError
from engine.models import scoring
from engine.project import flow, scenario_spec
from engine.project.project import Project, ProjectError
from engine.storage import datasets as ds
from engine.storage.control import (
    ControlStore,
    now_iso,
    step_runs,
)
from engine.storage.objects import ObjectStore

ABORT_POLL_SECONDS = 0.5
log = logging.getLogger("nodal.scenarios")


def resolve_variables(
    project: Project, spec: dict[str, Any], params: dict[str, str]
) -> dict[str, str]:
    """Project variables + run parameters; ``day: latest`` → the newest day to process.

    That day is the newest partition of the scenario's ``day_from`` or, without one, of the
    first partitioned dataset its steps name (for a dataset the flow builds, the newest
    partition its partitioned sources all have): :func:`scenario_spec.latest_day`.
    A ``day`` given (a run parameter, a trigger, a node variable) must be a valid partition
    of that dataset (an ISO date for days): :class:`ds.InvalidPartition` otherwise, before
    any step runs.
    """
    variables = {**project.variables, **params}
    source = scenario_spec.day_source(project, spec)
    if variables.get("day", "latest") != "latest":
        day = variables["day"]
        if source in project.datasets and project.datasets[source].partitioned_by:
            project.dataset(source).check_partition(day)
        else:
            ds.check_partition_value(day, date=False, what="day")
        return variables
    if source is None:
        return variables  # no step reads a day (validation refuses steps that would)
    day = scenario_spec.latest_day(project, spec)
    if day is None:
        raise StepFailed(f"dataset {source!r} has no partition to process yet")
    variables["day"] = day
    return variables


def _start_step(store: ControlStore, run_id: int, index: int, step: dict[str, Any]) -> str:
    started = now_iso()
    with store.write() as conn:
        conn.execute(
            sa.insert(step_runs).values(
                run_id=run_id,
                step_index=index,
                name=step.get("name", f"step{index}"),
                step_type=step.get("type", "?"),
                status=RUNNING,
                message="",
                outputs_json="{}",
                started_at=started,
            )
        )
    return started


def _record_step(
    store: ControlStore,
    run_id: int,
    index: int,
    step: dict[str, Any],
    outcome: StepOutcome,
    started: str | None,
    ended: str | None,
) -> None:
    values = dict(
        status=outcome.status,
        message=outcome.message,
        outputs_json=json.dumps(outcome.outputs, default=str),
        started_at=started,
        ended_at=ended,
    )
    with store.write() as conn:
        updated = conn.execute(
            sa.update(step_runs)
            .where(step_runs.c.run_id == run_id, step_runs.c.step_index == index)
            .values(**values)
        ).rowcount
        if not updated:
            conn.execute(
                sa.insert(step_runs).values(
                    run_id=run_id,
                    step_index=index,
                    name=step.get("name", f"step{index}"),
                    step_type=step.get("type", "?"),
                    **values,
                )
            )


class _AbortCheck:
    """``ctx.should_stop`` of one run, and the abort watcher of its running step.

    Calling it is a flag check (LightGBM calls it at every iteration): it raises
    :class:`RunAborted` once an abort was seen. :meth:`poll` asks the control store.
    """

    def __init__(self, store: ControlStore, run_id: int, every: float = ABORT_POLL_SECONDS) -> None:
        self.store, self.run_id, self.every = store, run_id, every
        self.by: str | None = None

    def poll(self) -> str | None:
        if self.by is None:
            self.by = abort_requested(self.store, self.run_id)
        return self.by

    def __call__(self) -> None:
        if self.by is not None:
            raise RunAborted(f"aborted by {self.by}")

    def now(self) -> None:
        self.poll()
        self()

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Run the body (one step) with a thread that enforces an abort while it runs."""
        done = threading.Event()
        with ds.interrupt_scope() as scope:

            def watch() -> None:
                while not done.wait(self.every):
                    try:
                        if self.poll() is not None:
                            scope.interrupt()  # again each time: DuckDB forgets it per statement
                    except Exception:  # the store was briefly unavailable: ask again later
                        log.exception("abort watcher of run %s", self.run_id)

            watcher = threading.Thread(target=watch, name=f"abort-watch-{self.run_id}", daemon=True)
            watcher.start()
            try:
                yield
            finally:
                done.set()
                watcher.join()


class _StepLog(logging.Handler):
    """Collects the log lines a step emits in this thread (kept with the step's outputs)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.thread = threading.get_ident()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread and len(self.lines) < 500:
            self.lines.append(self.format(record))


def execute(
    ctx_project: Project,
    store: ControlStore,
    node: str,
    run_id: int,
    bundle_id: str | None,
    mail: reporters.Mail | None = None,
    chunk_rows: int | None = None,
    actor: str = "scenario",
    compiled_cache: Path | None = None,
    objects: ObjectStore | None = None,
) -> str:
    """Run a claimed run's steps; record every step, the reporters and the outcome; return it.

    A run always ends: whatever raises outside a step (the control store, a reporter) marks
    it FAILED with the reason, so the scenario can run again without restarting the node.
    """
    try:
        return _execute(
            ctx_project,
            store,
            node,
            run_id,
            bundle_id,
            mail,
            chunk_rows,
            actor,
            compiled_cache,
            objects,
        )
    except Exception as exc:  # noqa: BLE001 - a bug or an outage: keep the run record truthful
        log.error("run %s failed outside its steps", run_id, exc_info=exc)
        try:
            finish_run(store, run_id, FAILED, f"internal error: {exc!r}")
        except Exception:  # noqa: BLE001 - the store is down: the next start ends the run
            log.exception("run %s could not be marked FAILED", run_id)
        return FAILED


def _execute(
    ctx_project: Project,
    store: ControlStore,
    node: str,
    run_id: int,
    bundle_id: str | None,
    mail: reporters.Mail | None,
    chunk_rows: int | None,
    actor: str,
    compiled_cache: Path | None,
    objects: ObjectStore | None = None,
) -> str:
    run = get_run(store, run_id)
    spec = ctx_project.scenarios.get(run["scenario"]) or {}
    try:
        problems = scenario_spec.validate(ctx_project, run["scenario"])
        if problems:
            raise StepFailed("; ".join(problems))
        variables = resolve_variables(ctx_project, spec, json.loads(run["params_json"] or "{}"))
    except (StepFailed, ProjectError, ds.DatasetError) as exc:
        _finish(store, run, spec, FAILED, str(exc), mail)
        return FAILED
    check = _AbortCheck(store, run_id)
    ctx = RunContext(
        ctx_project,
        store,
        node,
        run_id,
        bundle_id,
        variables,
        should_stop=check,
        actor=actor,
        chunk_rows=chunk_rows or scoring.DEFAULT_CHUNK_ROWS,
        compiled_cache=compiled_cache,
        objects=objects,
    )
    failed, warned, aborted, messages = False, False, False, []
    root_logger = logging.getLogger()
    for index, step in enumerate(spec["steps"]):
        run_if = step.get("run_if", "no_prior_failure")
        if not aborted:
            try:
                check.now()
            except RunAborted as exc:
                aborted = True
                messages.append(str(exc))
        if (
            aborted
            or (run_if == "no_prior_failure" and failed)
            or (run_if == "prior_failure" and not failed)
        ):
            reason = "run aborted" if aborted else run_if
            _record_step(
                store,
                run_id,
                index,
                step,
                StepOutcome(SKIPPED, "skipped: " + reason, {}),
                None,
                None,
            )
            continue
        started, t0 = _start_step(store, run_id, index, step), time.perf_counter()
        handler = _StepLog()
        root_logger.addHandler(handler)
        try:
            with check.watching():
                outcome = STEP_TYPES[step["type"]](ctx, step)
        except RunAborted as exc:
            outcome = StepOutcome(ABORTED, str(exc), {})
        except Exception as exc:
            outcome = _failure(step, run_id, exc, check.by)
        finally:
            root_logger.removeHandler(handler)
        outcome.outputs.setdefault("seconds", round(time.perf_counter() - t0, 3))
        if handler.lines:
            outcome.outputs.setdefault("log", handler.lines)
        _record_step(store, run_id, index, step, outcome, started, now_iso())
        if outcome.status == ABORTED:
            aborted = True
            messages.append(f"{step['name']}: {outcome.message}")
        elif outcome.status == FAILED:
            failed = True
            messages.append(f"{step['name']}: {outcome.message}")
        warned = warned or outcome.status == WARNING
    status = ABORTED if aborted else FAILED if failed else WARNING if warned else SUCCESS
    _finish(store, run, spec, status, "; ".join(messages) or f"day {variables.get('day')}", mail)
    return status


def _failure(
    step: dict[str, Any], run_id: int, exc: Exception, aborted_by: str | None
) -> StepOutcome:
    """The outcome of a step that raised: ABORTED if an abort interrupted it, else FAILED."""
    if aborted_by is not None:  # e.g. an interrupted DuckDB statement, whatever wrapped it
        return StepOutcome(ABORTED, f"aborted by {aborted_by} (interrupted: {exc})", {})
    if isinstance(exc, (StepFailed, flow.FlowError, ProjectError, duckdb.Error, NodalError)):
        return StepOutcome(FAILED, str(exc), {})
    # A bug: keep the run record truthful, the traceback in the log and the step's outputs.
    log.error("step %s of run %s failed", step.get("name"), run_id, exc_info=exc)
    return StepOutcome(
        FAILED,
        f"internal error: {exc!r}",
        {"traceback": "".join(traceback.format_exception(exc))},
    )


def _finish(
    store: ControlStore,
    run: dict[str, Any],
    spec: dict[str, Any],
    status: str,
    message: str,
    mail: reporters.Mail | None,
) -> None:
    """Reporters first (their results are part of the run), then the final status."""
    full = {**get_run(store, run["run_id"]), "bundle_id": run.get("bundle_id")}
    results = reporters.report(store, full, spec, status, message, mail)
    failed = [r["reporter"] for r in results if r["outcome"] == reporters.FAILED]
    if failed:
        message += f" (reporter failed: {', '.join(failed)})"
    finish_run(store, run["run_id"], status, message)
