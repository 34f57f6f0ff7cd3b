"""Scenarios: ordered steps with conditions, run on a node and recorded in the control store.

A run is a row in ``scenario_runs`` (QUEUED → RUNNING → SUCCESS / WARNING / FAILED /
ABORTED), each step a row in ``step_runs`` (RUNNING while it runs, then its outcome, with
timing, the log lines it emitted and its outputs). A failing step makes the later steps
SKIPPED unless their ``run_if`` says otherwise (``no_prior_failure`` is the default,
``always`` and ``prior_failure`` run anyway / only after a failure), so a failed data check
stops the scenario before it publishes anything.

Step types (``STEP_TYPES``, a plain dict ``name -> fn(ctx, step) -> StepOutcome``):
``run_checks``, ``build``, ``score``, ``publish_dashboard``, ``train`` (with an optional
champion/challenger ``gate``), ``sql`` and ``python``. Triggers are in
:mod:`engine.triggers`, reporters in :mod:`engine.reporters`; the YAML format is documented
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
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy as sa

from engine import checks, dashboards, flow, reporters, scoring, triggers
from engine.errors import NodalError
from engine.evaluation import step_evaluate
from engine.project import Project, ProjectError, substitute
from engine.storage import datasets as ds
from engine.storage.control import (
    ControlStore,
    now_iso,
    run_abort_requests,
    scenario_runs,
    step_runs,
)

SUCCESS, WARNING, FAILED, ABORTED, SKIPPED = "SUCCESS", "WARNING", "FAILED", "ABORTED", "SKIPPED"
RUNNING, QUEUED = "RUNNING", "QUEUED"
RUN_IF = ("no_prior_failure", "always", "prior_failure")
TRIGGER_TYPES = triggers.TYPES
PYTHON_STEP_TIMEOUT = 3600.0
ABORT_POLL_SECONDS = 0.5
log = logging.getLogger("nodal.scenarios")


class StepFailed(NodalError):
    """A step ended in failure for a reason a user can act on (not a bug)."""


class RunAborted(NodalError):
    """Someone asked to abort the run; raised at the next cooperative check."""


def _no_stop() -> None:
    return None


@dataclass
class RunContext:
    project: Project
    store: ControlStore
    node: str
    run_id: int
    bundle_id: str | None
    variables: dict[str, str]
    checks_passed_at: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    # Call inside long loops: raises RunAborted once an abort was requested.
    should_stop: Callable[[], None] = _no_stop
    actor: str = "scenario"
    chunk_rows: int = scoring.DEFAULT_CHUNK_ROWS
    # Where score steps find compiled models (the node's cache); None: the Booster scores.
    compiled_cache: Path | None = None


@dataclass(frozen=True)
class StepOutcome:
    status: str
    message: str
    outputs: dict[str, Any]


def _partition(ctx: RunContext, step: dict[str, Any]) -> str:
    return substitute(str(step.get("partition", "{day}")), ctx.variables, f"step {step['name']}")


def _step_run_checks(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    day = _partition(ctx, step)
    results = checks.run_checks(ctx.project, step["dataset"], day, ctx.store, ctx.node, ctx.run_id)
    summary = "; ".join(f"{r.name}: {r.outcome} ({r.message})" for r in results)
    worst = checks.worst(results)
    if worst == checks.ERROR:
        raise StepFailed(f"data checks failed on {step['dataset']} {day}: {summary}")
    ctx.checks_passed_at = now_iso()
    outputs = {"checks": [r.__dict__ for r in results]}
    return StepOutcome(WARNING if worst == checks.WARNING else SUCCESS, summary, outputs)


def _step_build(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    ref = ctx.project.dataset(step["dataset"])
    parts = [_partition(ctx, step)] if ref.partitioned_by or "partition" in step else None
    result = flow.build(ctx.project, step["dataset"], parts)
    msg = ", ".join(f"{r.output}: {r.rows} rows in {r.seconds:.2f}s" for r in result.runs)
    return StepOutcome(SUCCESS, msg, {"runs": [r.__dict__ for r in result.runs]})


def _step_score(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    day = _partition(ctx, step)
    r = scoring.score_partition(
        ctx.project,
        step["model"],
        step["input"],
        step["output"],
        day,
        chunk_rows=ctx.chunk_rows,
        should_stop=ctx.should_stop,
        compiled_cache=ctx.compiled_cache,
    )
    return StepOutcome(
        SUCCESS, f"{r.rows} rows scored, {r.flagged} flagged (model {r.model_version})", r.__dict__
    )


def _step_publish(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    day = _partition(ctx, step)
    r = dashboards.publish(
        ctx.project,
        step["dashboard"],
        day,
        ctx.store,
        ctx.node,
        ctx.run_id,
        ctx.bundle_id,
        ctx.checks_passed_at,
    )
    return StepOutcome(SUCCESS, f"published {r.dashboard} for {r.day} ({r.rows} rows)", r.__dict__)


def _step_train(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    from engine import retrain

    r = retrain.retrain(
        ctx.project,
        step["model"],
        ctx.actor,
        gate=step.get("gate"),
        build=bool(step.get("build", True)),
        should_stop=ctx.should_stop,
    )
    return StepOutcome(SUCCESS, r.message, r.as_outputs())


def _sql_text(ctx: RunContext, step: dict[str, Any]) -> str:
    if step.get("file"):
        path = ctx.project.root / str(step["file"])
        if not path.is_file():
            raise StepFailed(f"SQL file {step['file']!r} not found in the project")
        text = path.read_text()
    else:
        text = str(step.get("sql", ""))
    return substitute(text, ctx.variables, f"step {step['name']}").strip().rstrip(";")


def _step_sql(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    sql = _sql_text(ctx, step)
    views = {
        name: ctx.project.dataset(name)
        for name in ctx.project.datasets
        if ctx.project.dataset(name).exists()
    }
    with ds.session(views) as con:
        if step.get("output"):
            ref = ctx.project.dataset(step["output"])
            written = ds.write(ref, sql, con=con)
            rows = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
            where = f" (partitions {', '.join(written)})" if written else ""
            return StepOutcome(
                SUCCESS, f"{rows} rows written to {ref.name}{where}", {"rows": int(rows)}
            )
        rel = con.sql(sql)
        if rel is None:
            return StepOutcome(SUCCESS, "statement executed", {})
        head = rel.limit(20).df()
    return StepOutcome(
        SUCCESS,
        f"query returned {len(head)}{'+' if len(head) == 20 else ''} rows",
        {"preview": json.loads(head.to_json(orient="records", date_format="iso"))},
    )


def _step_python(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    """Run a script of the project (``script:``) or inline ``code:`` in its own process."""
    with tempfile.TemporaryDirectory(prefix="nodal-step-") as tmp:
        if step.get("script"):
            script = ctx.project.root / str(step["script"])
            if not script.is_file():
                raise StepFailed(f"script {step['script']!r} not found in the project")
        else:
            script = os.path.join(tmp, "step.py")
            with open(script, "w") as fh:
                fh.write(str(step.get("code", "")))
        env = {
            **os.environ,
            "NODAL_RUN_ID": str(ctx.run_id),
            "NODAL_PROJECT_ROOT": str(ctx.project.root),
            "NODAL_DATA_ROOT": str(ctx.project.data_root),
            "NODAL_RUN_VARIABLES": json.dumps(ctx.variables),
        }
        out_path = os.path.join(tmp, "out.log")
        timeout = float(step.get("timeout", PYTHON_STEP_TIMEOUT))
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(script)],
                cwd=ctx.project.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + timeout
            try:
                while proc.poll() is None:
                    ctx.should_stop()
                    if time.monotonic() > deadline:
                        raise StepFailed(f"python step timed out after {timeout:g} s")
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        with open(out_path, errors="replace") as fh:
            output = fh.read()
    tail = output[-4000:]
    if proc.returncode != 0:
        last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
        raise StepFailed(f"python step exited with code {proc.returncode}: {last}")
    return StepOutcome(SUCCESS, "python step ended normally", {"log": tail.splitlines()})


STEP_TYPES: dict[str, Callable[[RunContext, dict[str, Any]], StepOutcome]] = {
    "run_checks": _step_run_checks,
    "build": _step_build,
    "score": _step_score,
    "publish_dashboard": _step_publish,
    "train": _step_train,
    "sql": _step_sql,
    "python": _step_python,
    "evaluate": step_evaluate,
}


def _step_problems(project: Project, label: str, step: dict[str, Any]) -> list[str]:
    problems = []
    kind = step.get("type")
    if kind == "sql" and not (step.get("sql") or step.get("file")):
        problems.append(f"{label}: a sql step needs sql: or file:")
    if kind == "python" and not (step.get("script") or step.get("code")):
        problems.append(f"{label}: a python step needs script: or code:")
    if kind == "train":
        gate = step.get("gate")
        if gate is not None:
            from engine.retrain import GATE_METRICS

            if not isinstance(gate, dict) or gate.get("metric", "roc_auc") not in GATE_METRICS:
                problems.append(f"{label}: gate metric must be one of {', '.join(GATE_METRICS)}")
    for key, required in (
        ("dataset", ("run_checks", "build")),
        ("model", ("score", "train")),
        ("input", ("score",)),
        ("output", ("score",)),
        ("dashboard", ("publish_dashboard",)),
    ):
        if kind in required and not step.get(key):
            problems.append(f"{label}: a {kind} step needs {key}:")
    return problems


def validate(project: Project, name: str) -> list[str]:
    """Problems with scenario ``name`` (empty list when it is valid)."""
    spec = project.scenarios.get(name)
    if spec is None:
        return [f"project {project.name!r} has no scenario {name!r}"]
    problems = []
    steps = spec.get("steps") or []
    if not steps:
        problems.append(f"scenario {name}: no steps")
    seen: set[str] = set()
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            problems.append(f"scenario {name}: step {i + 1} must be a mapping")
            continue
        label = f"scenario {name}: step {i + 1} ({step.get('name', '?')})"
        if not step.get("name"):
            problems.append(f"{label}: needs a name")
        elif step["name"] in seen:
            problems.append(f"{label}: another step has the same name")
        seen.add(str(step.get("name")))
        if step.get("type") not in STEP_TYPES:
            problems.append(
                f"{label}: unknown type {step.get('type')!r} (one of {', '.join(STEP_TYPES)})"
            )
        if step.get("run_if", "no_prior_failure") not in RUN_IF:
            problems.append(f"{label}: run_if must be one of {', '.join(RUN_IF)}")
        for key in ("dataset", "input", "output"):
            if key in step and step[key] not in project.datasets:
                problems.append(f"{label}: {key} {step[key]!r} is not a dataset of the project")
        if "model" in step and step["model"] not in project.models:
            problems.append(f"{label}: model {step['model']!r} is not a model of the project")
        if "dashboard" in step and step["dashboard"] not in project.dashboards:
            problems.append(
                f"{label}: dashboard {step['dashboard']!r} is not a dashboard of the project"
            )
        problems.extend(_step_problems(project, label, step))
    problems.extend(triggers.problems(name, spec, set(project.datasets), set(project.scenarios)))
    problems.extend(reporters.problems(name, spec))
    cycle = triggers.after_cycle(project.scenarios)
    if cycle and name in cycle:
        problems.append(
            f"scenario {name}: its after_scenario triggers form a cycle: {' -> '.join(cycle)}"
        )
    return problems


def resolve_variables(
    project: Project, spec: dict[str, Any], params: dict[str, str]
) -> dict[str, str]:
    """Project variables + run parameters; ``day: latest`` → newest partition of ``day_from``."""
    variables = {**project.variables, **params}
    source = spec.get("day_from") or (
        "transactions" if "transactions" in project.datasets else None
    )
    if variables.get("day", "latest") == "latest" and source is not None:
        parts = project.dataset(source).partitions()
        if not parts:
            raise StepFailed(f"dataset {source!r} has no partition to process yet")
        variables["day"] = parts[-1]
    return variables


# --- run records ------------------------------------------------------------------------------


def request_run(
    store: ControlStore,
    node: str,
    project: str,
    scenario: str,
    trigger: str,
    params: dict[str, str] | None = None,
) -> int:
    with store.write() as conn:
        result = conn.execute(
            sa.insert(scenario_runs).values(
                infra_id=node,
                project=project,
                scenario=scenario,
                trigger=trigger,
                params_json=json.dumps(params or {}),
                status="QUEUED",
                message="",
                requested_at=now_iso(),
            )
        )
        return int(result.inserted_primary_key[0])


def get_run(store: ControlStore, run_id: int) -> dict[str, Any]:
    with store.read() as conn:
        row = (
            conn.execute(sa.select(scenario_runs).where(scenario_runs.c.run_id == run_id))
            .mappings()
            .first()
        )
        if row is None:
            raise ProjectError(f"no scenario run {run_id}")
        steps = (
            conn.execute(
                sa.select(step_runs)
                .where(step_runs.c.run_id == run_id)
                .order_by(step_runs.c.step_index)
            )
            .mappings()
            .all()
        )
    return {**dict(row), "steps": [dict(s) for s in steps]}


def list_runs(
    store: ControlStore, node: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    q = sa.select(scenario_runs).order_by(scenario_runs.c.run_id.desc()).limit(limit)
    if node:
        q = q.where(scenario_runs.c.infra_id == node)
    with store.read() as conn:
        return [dict(r) for r in conn.execute(q).mappings().all()]


def claim_run(store: ControlStore, run_id: int, bundle_id: str | None) -> bool:
    """QUEUED → RUNNING, unless the same scenario already runs on that node."""
    with store.write() as conn:
        run = (
            conn.execute(sa.select(scenario_runs).where(scenario_runs.c.run_id == run_id))
            .mappings()
            .first()
        )
        if run is None or run["status"] != "QUEUED":
            return False
        busy = conn.execute(
            sa.select(scenario_runs.c.run_id).where(
                scenario_runs.c.infra_id == run["infra_id"],
                scenario_runs.c.project == run["project"],
                scenario_runs.c.scenario == run["scenario"],
                scenario_runs.c.status == "RUNNING",
            )
        ).first()
        if busy is not None:
            return False
        conn.execute(
            sa.update(scenario_runs)
            .where(scenario_runs.c.run_id == run_id)
            .values(
                status="RUNNING", started_at=now_iso(), runner_pid=os.getpid(), bundle_id=bundle_id
            )
        )
    return True


def finish_run(store: ControlStore, run_id: int, status: str, message: str) -> None:
    with store.write() as conn:
        conn.execute(
            sa.update(scenario_runs)
            .where(scenario_runs.c.run_id == run_id)
            .values(status=status, message=message, ended_at=now_iso())
        )


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


def abort_orphans(store: ControlStore, node: str) -> int:
    """Mark RUNNING runs of ``node`` (and their RUNNING steps) ABORTED: at runner start."""
    with store.write() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sa.select(scenario_runs.c.run_id).where(
                    scenario_runs.c.infra_id == node, scenario_runs.c.status == RUNNING
                )
            )
        ]
        if not ids:
            return 0
        now = now_iso()
        conn.execute(
            sa.update(step_runs)
            .where(step_runs.c.run_id.in_(ids), step_runs.c.status == RUNNING)
            .values(status=ABORTED, message="runner stopped during the step", ended_at=now)
        )
        conn.execute(
            sa.update(scenario_runs)
            .where(scenario_runs.c.run_id.in_(ids))
            .values(status=ABORTED, message="runner stopped during the run", ended_at=now)
        )
        return len(ids)


def request_abort(store: ControlStore, run_id: int, actor: str) -> str:
    """Ask a run to stop. A queued run is ABORTED at once; a running one within a poll.

    Returns the run's status after the request (QUEUED runs become ABORTED, RUNNING stay
    RUNNING until the runner's abort watcher interrupts the step, within about
    ``ABORT_POLL_SECONDS``). Refused for a run that already ended.
    """
    with store.write() as conn:
        run = conn.execute(
            sa.select(scenario_runs.c.status).where(scenario_runs.c.run_id == run_id)
        ).first()
        if run is None:
            raise ProjectError(f"no scenario run {run_id}")
        if run.status not in (QUEUED, RUNNING):
            raise ProjectError(f"run {run_id} already ended ({run.status}): nothing to abort")
        if (
            conn.execute(
                sa.select(run_abort_requests.c.run_id).where(run_abort_requests.c.run_id == run_id)
            ).first()
            is None
        ):
            conn.execute(
                sa.insert(run_abort_requests).values(
                    run_id=run_id, requested_by=actor, requested_at=now_iso()
                )
            )
        if run.status == QUEUED:
            conn.execute(
                sa.update(scenario_runs)
                .where(scenario_runs.c.run_id == run_id, scenario_runs.c.status == QUEUED)
                .values(
                    status=ABORTED,
                    message=f"aborted by {actor} before it started",
                    ended_at=now_iso(),
                )
            )
            return ABORTED
    return RUNNING


def abort_requested(store: ControlStore, run_id: int) -> str | None:
    """Who asked to abort ``run_id``, or None."""
    with store.read() as conn:
        row = conn.execute(
            sa.select(run_abort_requests.c.requested_by).where(
                run_abort_requests.c.run_id == run_id
            )
        ).first()
    return row[0] if row else None


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
) -> str:
    """Run a claimed run's steps; record every step, the reporters and the outcome; return it."""
    run = get_run(store, run_id)
    spec = ctx_project.scenarios.get(run["scenario"]) or {}
    try:
        problems = validate(ctx_project, run["scenario"])
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
