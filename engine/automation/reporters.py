"""Reporters: tell people how a scenario run ended (log, webhook, e-mail).

Written in a scenario's ``reporters:`` list::

    reporters:
      - type: log                                  # the runner's log (always works)
      - type: webhook
        url: "https://chat.example.com/hooks/ops"  # POSTed a JSON summary of the run
        timeout: 5                                 # seconds (default 10)
        on: [FAILED, ABORTED]                      # default: every outcome
      - type: email                                # needs NODAL_SMTP_HOST on the node
        to: [ops@example.com]

A reporter never changes a run's outcome: each one's result (SENT or FAILED, with the
reason, e.g. a webhook that timed out) is recorded in ``run_reports`` beside the run.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx
import sqlalchemy as sa

from engine.project.scenario_spec import DEFAULT_REPORT_TIMEOUT as DEFAULT_TIMEOUT
from engine.project.scenario_spec import REPORTER_TYPES as TYPES
from engine.storage.control import ControlStore, now_iso, run_reports

SENT, FAILED = "SENT", "FAILED"
log = logging.getLogger("nodal.reporters")


@dataclass(frozen=True)
class Mail:
    """Where e-mail reporters send from (the node's settings)."""

    smtp_host: str = ""
    smtp_port: int = 25
    sender: str = "nodal@localhost"


def _summary(run: dict[str, Any], status: str, message: str) -> dict[str, Any]:
    return {
        "run_id": run["run_id"],
        "infra_id": run["infra_id"],
        "project": run["project"],
        "scenario": run["scenario"],
        "bundle_id": run.get("bundle_id"),
        "trigger": run["trigger"],
        "status": status,
        "message": message,
        "steps": [
            {"name": s["name"], "status": s["status"], "message": s["message"]}
            for s in run.get("steps", [])
        ],
    }


def mail_text(summary: dict[str, Any]) -> str:
    """The plain-text body of a run's e-mail: outcome first, then one line per step."""
    lines = [
        f"Scenario {summary['scenario']} of project {summary['project']} on "
        f"{summary['infra_id']}: {summary['status']}",
        f"Run {summary['run_id']}, trigger: {summary['trigger']}, "
        f"bundle: {summary.get('bundle_id') or '-'}",
        f"{summary['message']}",
        "",
        "Steps:",
    ]
    width = max((len(s["name"]) for s in summary["steps"]), default=0)
    lines += [
        f"  {s['name']:<{width}}  {s['status']:<8} {s['message']}" for s in summary["steps"]
    ] or ["  (none ran)"]
    lines += ["", "Details: nodal scenario show " + str(summary["run_id"]) + " --logs"]
    return "\n".join(lines) + "\n"


def _send(rep: dict[str, Any], summary: dict[str, Any], mail: Mail) -> str:
    kind = rep["type"]
    title = f"[nodal] {summary['scenario']} on {summary['infra_id']}: {summary['status']}"
    if kind == "log":
        level = logging.WARNING if summary["status"] in ("FAILED", "ABORTED") else logging.INFO
        log.log(level, "%s — %s", title, summary["message"])
        return "logged"
    if kind == "webhook":
        timeout = float(rep.get("timeout", DEFAULT_TIMEOUT))
        resp = httpx.post(str(rep["url"]), json=summary, timeout=timeout)
        if resp.status_code >= 400:
            raise RuntimeError(f"webhook answered HTTP {resp.status_code}")
        return f"webhook answered HTTP {resp.status_code}"
    if not mail.smtp_host:
        raise RuntimeError("no SMTP host configured on this node (set NODAL_SMTP_HOST)")
    msg = EmailMessage()
    msg["Subject"], msg["From"] = title, mail.sender
    msg["To"] = ", ".join(rep["to"] if isinstance(rep["to"], list) else [rep["to"]])
    msg.set_content(mail_text(summary))
    timeout = float(rep.get("timeout", DEFAULT_TIMEOUT))
    with smtplib.SMTP(mail.smtp_host, mail.smtp_port, timeout=timeout) as smtp:
        smtp.send_message(msg)
    return f"mailed to {msg['To']}"


def report(
    store: ControlStore,
    run: dict[str, Any],
    spec: dict[str, Any],
    status: str,
    message: str,
    mail: Mail | None = None,
) -> list[dict[str, str]]:
    """Run every reporter of ``spec`` for this outcome; record and return each result."""
    summary = _summary(run, status, message)
    results = []
    for i, rep in enumerate(spec.get("reporters") or []):
        if not isinstance(rep, dict) or rep.get("type") not in TYPES:
            continue
        if rep.get("on") and status not in rep["on"]:
            continue
        name = str(rep.get("name") or f"{rep['type']}{i + 1}")
        try:
            outcome, text = SENT, _send(rep, summary, mail or Mail())
        except httpx.TimeoutException:
            outcome, text = (
                FAILED,
                f"webhook timed out after {float(rep.get('timeout', DEFAULT_TIMEOUT)):g} s",
            )
        except Exception as exc:  # noqa: BLE001 - a reporter's failure never ends a run
            outcome, text = FAILED, f"{type(exc).__name__}: {exc}"
        if outcome == FAILED:
            log.warning("reporter %s of run %s failed: %s", name, run["run_id"], text)
        results.append(
            {"reporter": name, "reporter_type": rep["type"], "outcome": outcome, "message": text}
        )
    if results:
        with store.write() as conn:
            conn.execute(
                sa.insert(run_reports),
                [{**r, "run_id": run["run_id"], "at": now_iso()} for r in results],
            )
    return results


def list_reports(store: ControlStore, run_id: int) -> list[dict[str, Any]]:
    with store.read() as conn:
        rows = conn.execute(
            sa.select(run_reports).where(run_reports.c.run_id == run_id).order_by(run_reports.c.id)
        ).mappings()
        return [dict(r) for r in rows]
