"""Scenarios: ordered steps with conditions, run on a node and recorded in the control store.

A run is a row in ``scenario_runs`` (QUEUED → RUNNING → SUCCESS / WARNING / FAILED /
ABORTED), each step a row in ``step_runs``. A failing step makes the later steps SKIPPED
unless their ``run_if`` says otherwise, so a failed data check stops the scenario before it
publishes anything.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import sqlalchemy as sa

from engine import checks, dashboards, flow, scoring
from engine.errors import NodalError
from engine.project import Project, ProjectError, substitute
from engine.storage import datasets as ds
from engine.storage.control import ControlStore, now_iso, scenario_runs, step_runs

SUCCESS, WARNING, FAILED, ABORTED, SKIPPED = "SUCCESS", "WARNING", "FAILED", "ABORTED", "SKIPPED"
RUN_IF = ("no_prior_failure", "always", "prior_failure")
TRIGGER_TYPES = ("time",)


class StepFailed(NodalError):
    """A step ended in failure for a reason a user can act on (not a bug)."""


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
    day = _partition(ctx, step)
    result = flow.build(ctx.project, step["dataset"], [day])
    msg = ", ".join(f"{r.output}: {r.rows} rows in {r.seconds:.2f}s" for r in result.runs)
    return StepOutcome(SUCCESS, msg, {"runs": [r.__dict__ for r in result.runs]})


def _step_score(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    day = _partition(ctx, step)
    r = scoring.score_partition(ctx.project, step["model"], step["input"], step["output"], day)
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


STEP_TYPES: dict[str, Callable[[RunContext, dict[str, Any]], StepOutcome]] = {
    "run_checks": _step_run_checks,
    "build": _step_build,
    "score": _step_score,
    "publish_dashboard": _step_publish,
}


def validate(project: Project, name: str) -> list[str]:
    """Problems with scenario ``name`` (empty list when it is valid)."""
    from apscheduler.triggers.cron import (
        CronTrigger,
    )  # the runner's dependency, for cron syntax only

    spec = project.scenarios.get(name)
    if spec is None:
        return [f"project {project.name!r} has no scenario {name!r}"]
    problems = []
    steps = spec.get("steps") or []
    if not steps:
        problems.append(f"scenario {name}: no steps")
    for i, step in enumerate(steps):
        label = f"scenario {name}: step {i + 1} ({step.get('name', '?')})"
        if not step.get("name"):
            problems.append(f"{label}: needs a name")
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
    for trig in spec.get("triggers") or []:
        if trig.get("type") not in TRIGGER_TYPES:
            problems.append(f"scenario {name}: unknown trigger type {trig.get('type')!r}")
            continue
        try:
            CronTrigger.from_crontab(str(trig.get("cron", "")))
        except ValueError as exc:
            problems.append(f"scenario {name}: invalid cron {trig.get('cron')!r}: {exc}")
    return problems


def resolve_variables(
    project: Project, spec: dict[str, Any], params: dict[str, str]
) -> dict[str, str]:
    """Project variables + run parameters; ``day: latest`` → newest partition of ``day_from``."""
    variables = {**project.variables, **params}
    if variables.get("day", "latest") == "latest":
        source = spec.get("day_from", "transactions")
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


def _record_step(
    store: ControlStore,
    run_id: int,
    index: int,
    step: dict[str, Any],
    outcome: StepOutcome,
    started: str | None,
    ended: str | None,
) -> None:
    with store.write() as conn:
        conn.execute(
            sa.insert(step_runs).values(
                run_id=run_id,
                step_index=index,
                name=step.get("name", f"step{index}"),
                step_type=step.get("type", "?"),
                status=outcome.status,
                message=outcome.message,
                outputs_json=json.dumps(outcome.outputs, default=str),
                started_at=started,
                ended_at=ended,
            )
        )


def abort_orphans(store: ControlStore, node: str) -> int:
    """Mark RUNNING runs of ``node`` as ABORTED: called at runner start, after a crash."""
    with store.write() as conn:
        result = conn.execute(
            sa.update(scenario_runs)
            .where(
                scenario_runs.c.infra_id == node,
                scenario_runs.c.status == "RUNNING",
            )
            .values(status=ABORTED, message="runner stopped during the run", ended_at=now_iso())
        )
        return int(result.rowcount or 0)


def execute(
    ctx_project: Project, store: ControlStore, node: str, run_id: int, bundle_id: str | None
) -> str:
    """Run a claimed run's steps; record every step and the final outcome; return it."""
    run = get_run(store, run_id)
    spec = ctx_project.scenarios.get(run["scenario"])
    try:
        problems = validate(ctx_project, run["scenario"])
        if problems:
            raise StepFailed("; ".join(problems))
        variables = resolve_variables(ctx_project, spec, json.loads(run["params_json"] or "{}"))
    except (StepFailed, ProjectError, ds.DatasetError) as exc:
        finish_run(store, run_id, FAILED, str(exc))
        return FAILED
    ctx = RunContext(ctx_project, store, node, run_id, bundle_id, variables)
    failed, warned, messages = False, False, []
    for index, step in enumerate(spec["steps"]):
        run_if = step.get("run_if", "no_prior_failure")
        if (run_if == "no_prior_failure" and failed) or (run_if == "prior_failure" and not failed):
            _record_step(
                store,
                run_id,
                index,
                step,
                StepOutcome(SKIPPED, "skipped: " + run_if, {}),
                None,
                None,
            )
            continue
        started, t0 = now_iso(), time.perf_counter()
        try:
            outcome = STEP_TYPES[step["type"]](ctx, step)
        except (StepFailed, flow.FlowError, ds.DatasetError, ProjectError, duckdb.Error) as exc:
            outcome = StepOutcome(FAILED, str(exc), {})
        except (
            Exception
        ) as exc:  # a bug: keep the run record truthful, with the traceback in the log
            outcome = StepOutcome(
                FAILED, f"internal error: {exc!r}", {"traceback": traceback.format_exc()}
            )
        outcome.outputs.setdefault("seconds", round(time.perf_counter() - t0, 3))
        _record_step(store, run_id, index, step, outcome, started, now_iso())
        if outcome.status == FAILED:
            failed = True
            messages.append(f"{step['name']}: {outcome.message}")
        warned = warned or outcome.status == WARNING
    status = FAILED if failed else WARNING if warned else SUCCESS
    finish_run(store, run_id, status, "; ".join(messages) or f"day {variables.get('day')}")
    return status
