"""The built-in step types of a scenario and their registry, :data:`STEP_TYPES`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from engine.automation import dashboards, evaluation, evaluation_plan
from engine.automation.runs import SUCCESS, WARNING
from engine.automation.sql_binding import SqlVariableError, bind_variables
from engine.automation.steps import RunContext, StepFailed, StepOutcome, partition_of
from engine.deployer import enrichments
from engine.models import scoring
from engine.project import checks, flow, windows
from engine.project.scenario_spec import STEP_KINDS
from engine.storage import datasets as ds
from engine.storage.control import (
    now_iso,
)

PYTHON_STEP_TIMEOUT = 3600.0


def _step_run_checks(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    day = partition_of(ctx, step)
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
    parts = [partition_of(ctx, step)] if ref.partitioned_by or "partition" in step else None
    result = flow.build(ctx.project, step["dataset"], parts)
    msg = ", ".join(
        f"{r.output}: {r.rows} rows in {r.seconds:.2f}s" + (f" ({r.note})" if r.note else "")
        for r in result.runs
    )
    return StepOutcome(SUCCESS, msg, {"runs": [r.__dict__ for r in result.runs]})


def _step_score(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    day = partition_of(ctx, step)
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
    day = partition_of(ctx, step)
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
    from engine.automation import retrain

    r = retrain.retrain(
        ctx.project,
        step["model"],
        ctx.actor,
        gate=step.get("gate"),
        build=bool(step.get("build", True)),
        should_stop=ctx.should_stop,
    )
    return StepOutcome(SUCCESS, r.message, r.as_outputs())


def _sql_text(ctx: RunContext, step: dict[str, Any]) -> tuple[str, dict[str, object]]:
    """The step's SQL and its bound parameters: every ``{name}`` is a parameter, never text
    (engine/automation/sql_binding.py)."""
    if step.get("file"):
        path = ctx.project.root / str(step["file"])
        if not path.is_file():
            raise StepFailed(f"SQL file {step['file']!r} not found in the project")
        text = path.read_text()
    else:
        text = str(step.get("sql", ""))
    try:
        sql, params = bind_variables(text, ctx.variables, f"step {step['name']}")
    except SqlVariableError as exc:
        raise StepFailed(str(exc)) from None
    return sql.strip().rstrip(";"), params


def _step_sql(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    sql, params = _sql_text(ctx, step)
    views = {
        name: ctx.project.dataset(name)
        for name in ctx.project.datasets
        if ctx.project.dataset(name).exists()
    }
    # SQL a person wrote: it reads and writes only the project's data and the landing zone.
    with ds.session(views, confine_to=flow.data_folders(ctx.project)) as con:
        if step.get("output"):
            ref = ctx.project.dataset(step["output"])
            written = ds.write(ref, sql, con=con, params=params)
            rows = con.execute(f"SELECT count(*) FROM ({sql}\n)", params).fetchone()[0]
            where = f" (partitions {', '.join(written)})" if written else ""
            return StepOutcome(
                SUCCESS, f"{rows} rows written to {ref.name}{where}", {"rows": int(rows)}
            )
        rel = con.sql(sql, params=params)
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


def _step_evaluate(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    """Scenario step ``evaluate``: evaluate the run's day, store it, report alarms.

    Options (besides ``model`` and ``input``): the thresholds of :data:`evaluation_plan.DEFAULTS`;
    ``challenger`` (a model name or ``{model, version}``), ``reference_days`` (default: the
    model's validation days), and any key of the model's declaration
    (:mod:`engine.project.model_spec`: ``labels``, ``location``…) to override it here.
    Drift alarms make the step end in WARNING (``fail_on_alarm: true``: FAILED), so the run
    and the deployment's status show them; families the declaration rules out are listed
    under ``not_applicable`` in the outputs.
    """

    day = partition_of(ctx, step)
    options = {k: v for k, v in step.items() if k not in ("name", "type", "run_if", "partition")}
    try:
        result = evaluation.evaluate_day(ctx.project, day, options)
    except (evaluation_plan.EvaluationError, ds.DatasetError, flow.FlowError) as exc:
        raise StepFailed(str(exc)) from None
    evaluation.record(ctx.store, ctx.node, ctx.project.name, result, ctx.run_id)
    alarms, warnings = result.alarms, result.warnings
    summary = "; ".join(f"{m.family} {m.feature}: {m.message}".strip() for m in alarms[:6])
    outputs = {
        "day": day,
        "champion": result.champion_version,
        "challenger": result.challenger_version,
        "alarms": [
            {"family": m.family, "feature": m.feature, "message": m.message} for m in alarms
        ],
        "warnings": len(warnings),
        "not_applicable": result.not_applicable,
    }
    if alarms:
        if {**evaluation_plan.DEFAULTS, **options}["fail_on_alarm"]:
            raise StepFailed(f"{len(alarms)} evaluation alarm(s) on {day}: {summary}")
        return StepOutcome(WARNING, f"{len(alarms)} alarm(s) on {day}: {summary}", outputs)
    status = WARNING if warnings else SUCCESS
    text = f"no alarm on {day}" + (f" ({len(warnings)} warning(s))" if warnings else "")
    return StepOutcome(status, text, json.loads(json.dumps(outputs, default=str)))


def _step_publish_enrichment(ctx: RunContext, step: dict[str, Any]) -> StepOutcome:
    """Scenario step ``publish_enrichment``: publish the newest rows of ``dataset`` that API
    endpoints look up, as a new version API nodes of this stage serve without a new package
    (:mod:`engine.deployer.enrichments`).

    ``service``: the API service whose endpoints look the dataset up (their ``rows:`` say
    which rows); without it ``rows: latest_day|all`` (default latest_day). ``build: day |
    next_day`` builds that partition of the dataset first (``next_day``: the day after the
    run's day, e.g. per-key profiles as of the start of the day real time is scoring).
    """
    dataset, service = str(step["dataset"]), step.get("service")
    if ctx.objects is None:  # the design node: no API node reads what it would publish
        return StepOutcome(
            SUCCESS,
            f"{dataset} not published: API nodes read versions an automation node publishes",
            {"published": []},
        )
    if dataset in windows.declared(ctx.project):  # a windows output: its windowed state
        return _publish_window_state(ctx, step, dataset)
    if step.get("build"):
        day = date.fromisoformat(ctx.variables["day"])
        part = (day + timedelta(days=1) if step["build"] == "next_day" else day).isoformat()
        flow.build(ctx.project, dataset, [part])
    try:
        selections = (
            enrichments.selections_for(ctx.project, dataset, str(service))
            if service
            else [str(step.get("rows", "latest_day"))]
        )
        published = [
            enrichments.publish(
                ctx.objects,
                ctx.store,
                ctx.project,
                dataset,
                rows,
                node=ctx.node,
                actor=ctx.actor,
                run_id=ctx.run_id,
            )
            for rows in selections
        ]
    except enrichments.EnrichmentError as exc:
        raise StepFailed(str(exc)) from None
    message = "; ".join(
        f"published {p.dataset} v{p.version} ({p.rows_selection}, as of {p.as_of or '-'}, "
        f"{p.n_rows} rows)"
        for p in published
    )
    outputs = {
        "published": [
            {"version": p.version, "as_of": p.as_of, "rows": p.n_rows, "sha256": p.sha256}
            for p in published
        ],
        "rows": sum(p.n_rows for p in published),
    }
    return StepOutcome(SUCCESS, message, outputs)


def _publish_window_state(ctx: RunContext, step: dict[str, Any], output: str) -> StepOutcome:
    """``publish_enrichment`` of a windows output: the events of its declaration over the
    longest window before the end of the run's day (``partition:``, default ``{day}``), which
    API nodes replay into their online store (bootstrap: a fresh or emptied store answers
    like batch from its first request)."""
    day = partition_of(ctx, step)
    try:
        p = enrichments.publish_window_state(
            ctx.objects,  # type: ignore[arg-type]  # checked by the caller
            ctx.store,
            ctx.project,
            output,
            day,
            node=ctx.node,
            actor=ctx.actor,
            run_id=ctx.run_id,
        )
    except enrichments.EnrichmentError as exc:
        raise StepFailed(str(exc)) from None
    message = f"published {p.dataset} v{p.version} (window state through {day}, {p.n_rows} events)"
    outputs = {
        "published": [
            {"version": p.version, "as_of": p.as_of, "rows": p.n_rows, "sha256": p.sha256}
        ],
        "rows": p.n_rows,
    }
    return StepOutcome(SUCCESS, message, outputs)


STEP_TYPES: dict[str, Callable[[RunContext, dict[str, Any]], StepOutcome]] = {
    "run_checks": _step_run_checks,
    "build": _step_build,
    "score": _step_score,
    "publish_dashboard": _step_publish,
    "train": _step_train,
    "sql": _step_sql,
    "python": _step_python,
    "evaluate": _step_evaluate,
    "publish_enrichment": _step_publish_enrichment,
}
if tuple(STEP_TYPES) != STEP_KINDS:  # the definitions' validation and the registry must agree
    raise RuntimeError(f"step registry {tuple(STEP_TYPES)} differs from {STEP_KINDS}")
