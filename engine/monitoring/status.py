"""One worst-of status per project deployment and per API endpoint, and alerts on change.

A project deployment's status is the worst of: what its automation node reports (activation,
sync), the last run of each of its scenarios, and the newest model evaluation (drift or
performance alarms). An API endpoint's status is the worst of its deployment's report, the
age of the enrichment tables it serves (:mod:`engine.monitoring.enrichment_age`: stale when
behind the newest publish or older than ``max_age_hours``) and its recent traffic (error
rate, from the query log).

:func:`check_and_alert` compares each status with the last one it saw (table
``monitored_status``) and sends one alert per change through the reporters (log, webhook;
:mod:`engine.automation.reporters`), so ops hear once when something breaks and once when it recovers.
Alerts are the automation runners' work (:func:`alert_changes`, at each tick), never a page
view's: Monitoring's Status page only reads. Each change is claimed in the control store before
it is sent (the row moves from the status seen before to the new one in one statement), so
several runners, or a runner and ``check_and_alert`` called by hand, send it once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from engine.automation.lease import lease_info
from engine.deployer import deployments as deployer
from engine.monitoring import apihealth, enrichment_age, model_quality
from engine.storage.control import (
    ControlStore,
    check_results,
    monitored_status,
    now_iso,
    scenario_runs,
    step_runs,
)

log = logging.getLogger("nodal.status")
ORDER = ["ERROR", "UNHEALTHY", "OUT_OF_SYNC", "WARNING", "UNKNOWN", "HEALTHY"]
_RUN = {"SUCCESS": "HEALTHY", "WARNING": "WARNING", "FAILED": "UNHEALTHY", "ABORTED": "UNHEALTHY"}


@dataclass(frozen=True)
class Status:
    kind: str  # deployment | endpoint
    object_id: str  # deployment id, or "infra/service/endpoint"
    label: str
    status: str
    reasons: list[str]

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)


def worst(statuses: list[str]) -> str:
    return min(statuses, key=ORDER.index) if statuses else "UNKNOWN"


def _last_runs(store: ControlStore, infra_id: str, project: str) -> list[dict[str, Any]]:
    t = scenario_runs
    latest = (
        sa.select(t.c.scenario, sa.func.max(t.c.run_id).label("run_id"))
        .where(t.c.infra_id == infra_id, t.c.project == project, t.c.status.in_(list(_RUN)))
        .group_by(t.c.scenario)
        .subquery()
    )
    with store.read() as conn:
        rows = (
            conn.execute(sa.select(t).join(latest, t.c.run_id == latest.c.run_id)).mappings().all()
        )
    return [dict(r) for r in rows]


def _deployments(store: ControlStore, kind: str, actor: str | None) -> list[deployer.Deployment]:
    deps = deployer.list_deployments(store, kind=kind)
    return deps if actor is None else deployer.visible_to(store, actor, deps)


def deployment_statuses(store: ControlStore, actor: str | None = None) -> list[Status]:
    """Each project deployment's worst-of status (only those ``actor`` may see, if given)."""
    out = []
    for dep in _deployments(store, "project", actor):
        parts = [
            (dep.status, f"node: {dep.status.lower()} ({dep.node_message or 'no report yet'})")
        ]
        for run in _last_runs(store, dep.infra_id, dep.target):
            status = _RUN[run["status"]]
            parts.append((status, f"last {run['scenario']} run #{run['run_id']}: {run['status']}"))
        alarms = model_quality.latest_alarms(store, dep.infra_id, dep.target)
        for row in alarms.to_dict("records"):
            status = "UNHEALTHY" if row["status"] == "ERROR" else "WARNING"
            what = f"{row['family']} {row['feature']}".strip()
            parts.append(
                (status, f"model {row['model']} {row['day']}: {what} ({row['status'].lower()})")
            )
        overall = worst([p[0] for p in parts])
        reasons = [text for status, text in parts if status == overall] or [parts[0][1]]
        runner = lease_info(store, dep.infra_id)  # who runs it: the lease holder, standbys
        if runner is not None:
            reasons.append(runner.describe())
        out.append(
            Status(
                "deployment", dep.deployment_id, f"{dep.target} on {dep.infra_id}", overall, reasons
            )
        )
    return out


def endpoint_statuses(
    store: ControlStore, home: Path, actor: str | None = None, *, now: datetime | None = None
) -> list[Status]:
    """Each deployed endpoint's status (only those ``actor`` may see, if given); ``now``:
    the time enrichment ages are judged at (default: now)."""
    out = []
    for dep in _deployments(store, "api", actor):
        try:
            health = {
                h.endpoint: h
                for h in apihealth.endpoint_health(apihealth.source(home, dep.infra_id))
                if h.service == dep.target  # the infrastructure's other services are theirs
            }
        except Exception as exc:  # noqa: BLE001 - an unreadable log is a status, not a crash
            health, problem = {}, f"query log unreadable: {exc}"
        else:
            problem = ""
        fresh: dict[str, list[tuple[str, str]]] = {}  # endpoint → its enrichments' age
        for age in enrichment_age.ages(store, dep.infra_id, dep.target, now=now):
            fresh.setdefault(age.endpoint, []).append((age.status, age.message))
        endpoints = sorted({h.endpoint for h in health.values()} | set(fresh))
        for endpoint in endpoints or ["*"]:
            parts = [
                (dep.status, f"node: {dep.status.lower()} ({dep.node_message or 'no report yet'})")
            ]
            parts.extend(fresh.get(endpoint, []))
            h = health.get(endpoint)
            if h is not None:
                parts.append((h.status, h.message))
            elif problem:
                parts.append(("WARNING", problem))
            else:
                parts.append(("HEALTHY", "no API traffic yet"))
            overall = worst([p[0] for p in parts])
            reasons = [text for status, text in parts if status == overall]
            object_id = f"{dep.infra_id}/{dep.target}/{endpoint}"
            out.append(
                Status(
                    "endpoint",
                    object_id,
                    f"{dep.target}/{endpoint} on {dep.infra_id}",
                    overall,
                    reasons,
                )
            )
    return out


def all_statuses(store: ControlStore, home: Path, actor: str | None = None) -> list[Status]:
    """Every status; with ``actor``, only what that person may see (pages). The runner's
    alerts pass none: they watch everything."""
    return deployment_statuses(store, actor) + endpoint_statuses(store, home, actor)


def check_and_alert(
    store: ControlStore, statuses: list[Status], reporters_spec: list[dict[str, Any]]
) -> list[Status]:
    """Record each status; alert through ``reporters_spec`` for those that changed.

    The first time an object is seen its status is recorded without an alert unless it is
    already bad. Returns the statuses that changed (and were alerted).
    """
    from engine.automation import reporters

    with store.read() as conn:
        known = {
            (r["object_kind"], r["object_id"]): r["status"]
            for r in conn.execute(sa.select(monitored_status)).mappings()
        }
    changed = []
    for s in statuses:
        before = known.get((s.kind, s.object_id))
        if before == s.status or (before is None and s.status == "HEALTHY"):
            if before is None:
                _claim(store, s, None)
            continue
        if not _claim(store, s, before):
            continue  # another process recorded (and alerts) this change
        changed.append(s)
        summary = {
            "scenario": f"status of {s.kind} {s.label}",
            "infra_id": s.object_id,
            "status": s.status,
            "previous_status": before,
            "message": s.message,
            "kind": s.kind,
            "object_id": s.object_id,
        }
        for rep in reporters_spec:
            try:
                reporters._send(rep, summary, reporters.Mail())
            except Exception as exc:  # noqa: BLE001 - an alert channel down must not stop the others
                log.warning("status alert through %s failed: %s", rep.get("type"), exc)
    return changed


def _claim(store: ControlStore, s: Status, before: str | None) -> bool:
    """Record ``s`` if the stored status is still ``before`` (None: no row yet); whether this
    call recorded it (False: another process got there first)."""
    t = monitored_status
    values = {"status": s.status, "message": s.message[:2000], "changed_at": now_iso()}
    mine = (t.c.object_kind == s.kind) & (t.c.object_id == s.object_id)
    try:
        with store.write() as conn:
            if before is None:
                conn.execute(
                    sa.insert(t).values(object_kind=s.kind, object_id=s.object_id, **values)
                )
                return True
            done = conn.execute(sa.update(t).where(mine, t.c.status == before).values(**values))
            return done.rowcount == 1
    except sa.exc.IntegrityError:  # a row appeared since we looked: its writer alerts
        return False


def alert_changes(store: ControlStore, home: Path, webhook_url: str) -> list[Status]:
    """Compute every status and alert the changes (log, and the webhook if set): what the
    automation runner does at each tick. Returns the statuses that changed."""
    return check_and_alert(store, all_statuses(store, home), reporters_from_settings(webhook_url))


def reporters_from_settings(webhook_url: str) -> list[dict[str, Any]]:
    """Status alerts always go to the log; also to a webhook when one is configured."""
    spec: list[dict[str, Any]] = [{"type": "log"}]
    if webhook_url:
        spec.append({"type": "webhook", "url": webhook_url, "timeout": 5})
    return spec


def as_json(statuses: list[Status]) -> str:
    return json.dumps([s.__dict__ for s in statuses], indent=2)


# --- pipeline health: runs, failing steps and checks over time ---------------------------------


def runs_frame(store: ControlStore, limit: int = 2000) -> pd.DataFrame:
    """Scenario runs (newest first) with their deployment id, day and duration in seconds."""
    t = scenario_runs
    with store.read() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.run_id.desc()).limit(limit)).mappings().all()
    frame = pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in t.columns])
    if frame.empty:
        return frame.assign(deployment=[], seconds=[], day=[], step_outputs=[])
    frame["deployment"] = [
        deployer.deployment_id_for(p, i)
        for p, i in zip(frame["project"], frame["infra_id"], strict=True)
    ]
    started = pd.to_datetime(frame["started_at"], utc=True, format="ISO8601")
    ended = pd.to_datetime(frame["ended_at"], utc=True, format="ISO8601")
    frame["seconds"] = (ended - started).dt.total_seconds()
    frame["requested_at"] = pd.to_datetime(frame["requested_at"], utc=True, format="ISO8601")
    frame["day"] = [json.loads(p or "{}").get("day", "") for p in frame["params_json"]]
    frame["day"] = [
        d or (m.removeprefix("day ") if str(m).startswith("day ") else "")
        for d, m in zip(frame["day"], frame["message"], strict=True)
    ]
    with store.read() as conn:
        steps = conn.execute(
            sa.select(step_runs.c.run_id, step_runs.c.name, step_runs.c.outputs_json).where(
                step_runs.c.run_id.in_([int(r) for r in frame["run_id"]])
            )
        ).all()
    by_run: dict[int, dict[str, Any]] = {}
    for run_id, name, outputs in steps:
        by_run.setdefault(int(run_id), {})[name] = json.loads(outputs or "{}")
    frame["step_outputs"] = [by_run.get(int(r), {}) for r in frame["run_id"]]
    return frame


def newest_runs(store: ControlStore) -> dict[tuple[str, str], str]:
    """(infra, project) → when the newest scenario run there was requested."""
    t = scenario_runs
    q = sa.select(t.c.infra_id, t.c.project, sa.func.max(t.c.requested_at)).group_by(
        t.c.infra_id, t.c.project
    )
    with store.read() as conn:
        return {(infra, project): str(at) for infra, project, at in conn.execute(q).all()}


def failed_steps(store: ControlStore, deployment_id: str, limit: int = 50) -> pd.DataFrame:
    """Failed steps of a deployment's runs, newest first, with their message and outputs."""
    dep = deployer.get_deployment(store, deployment_id)
    r, s = scenario_runs, step_runs
    q = (
        sa.select(
            r.c.run_id,
            r.c.scenario,
            s.c.name,
            s.c.step_type,
            s.c.message,
            s.c.outputs_json,
            s.c.ended_at,
        )
        .join(s, s.c.run_id == r.c.run_id)
        .where(r.c.infra_id == dep.infra_id, r.c.project == dep.target, s.c.status == "FAILED")
        .order_by(r.c.run_id.desc())
        .limit(limit)
    )
    with store.read() as conn:
        rows = conn.execute(q).mappings().all()
    return pd.DataFrame([dict(x) for x in rows])


def checks_frame(store: ControlStore, deployment_id: str, limit: int = 5000) -> pd.DataFrame:
    """Check results of a deployment's node (data checks and model-evaluation checks)."""
    dep = deployer.get_deployment(store, deployment_id)
    t = check_results
    q = (
        sa.select(t)
        .where(t.c.node == dep.infra_id, t.c.project == dep.target)
        .order_by(t.c.id.desc())
        .limit(limit)
    )
    with store.read() as conn:
        rows = conn.execute(q).mappings().all()
    frame = pd.DataFrame([dict(x) for x in rows])
    if frame.empty:
        return frame
    frame["check"] = frame["dataset"] + " · " + frame["check_name"]
    # The newest result of each check and day.
    return frame.drop_duplicates(["check", "partition"]).sort_values(["partition", "check"])


def step_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """Numbers steps reported (rows scored, flagged, …) per day, for charts."""
    rows = []
    for day, outputs in zip(runs["day"], runs["step_outputs"], strict=True):
        for step, out in outputs.items():
            for key in ("rows", "flagged"):
                if isinstance(out.get(key), int | float):
                    rows.append({"day": day, "metric": f"{step}.{key}", "value": float(out[key])})
    return pd.DataFrame(rows, columns=["day", "metric", "value"])
