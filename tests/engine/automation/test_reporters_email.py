"""The e-mail reporter against a real SMTP server (aiosmtpd) on a free loopback port."""

from __future__ import annotations

import email
import socket
from email.message import Message

import pytest
from aiosmtpd.controller import Controller

from engine.automation import reporters, runs, scenarios
from engine.automation.node import AutomationNode
from nodal_demo import demo
from tests.homes import copy_home

INFRA = demo.AUTOMATION_INFRA


class _Inbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802, ANN001
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server():
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


@pytest.fixture
def node(demo_env, tmp_path) -> AutomationNode:
    settings, store = copy_home(demo_env.settings, tmp_path)
    return AutomationNode(settings, store, INFRA)


def _run(node: AutomationNode, spec: dict, mail: reporters.Mail) -> dict:
    project = node.project(demo.PROJECT)
    project.scenarios["mailed"] = spec
    run_id = runs.request_run(node.store, INFRA, demo.PROJECT, "mailed", "manual")
    assert runs.claim_run(node.store, run_id, node.active_bundle(demo.PROJECT))
    scenarios.execute(project, node.store, INFRA, run_id, node.active_bundle(demo.PROJECT), mail)
    return runs.get_run(node.store, run_id)


def test_a_failed_run_is_mailed_with_its_outcome_and_steps(node, smtp_server):
    port, inbox = smtp_server
    mail = reporters.Mail("127.0.0.1", port, "nodal@node.example")
    run = _run(
        node,
        {
            "steps": [
                {"name": "count_scored", "type": "sql", "sql": "SELECT count(*) FROM scored"},
                {"name": "broken", "type": "sql", "sql": "SELECT * FROM no_such_table"},
                {"name": "never", "type": "sql", "sql": "SELECT 1"},
            ],
            "reporters": [
                {"type": "email", "to": ["ops@bank.example", "lead@bank.example"]},
                {"type": "email", "to": ["ceo@bank.example"], "on": ["SUCCESS"]},
            ],
        },
        mail,
    )
    assert run["status"] == runs.FAILED
    reports = reporters.list_reports(node.store, run["run_id"])
    assert [(r["reporter"], r["outcome"]) for r in reports] == [("email1", "SENT")]
    assert reports[0]["message"] == "mailed to ops@bank.example, lead@bank.example"

    (recipients, msg) = inbox.messages[-1]  # only one mail: the SUCCESS-only one did not go
    assert len(inbox.messages) == 1
    assert recipients == ["ops@bank.example", "lead@bank.example"]
    assert msg["From"] == "nodal@node.example"
    assert msg["Subject"] == f"[nodal] mailed on {INFRA}: FAILED"
    body = msg.get_payload(decode=True).decode()
    assert f"Scenario mailed of project {demo.PROJECT} on {INFRA}: FAILED" in body
    assert f"Run {run['run_id']}, trigger: manual" in body
    lines = body.splitlines()
    assert any(line.split()[:2] == ["count_scored", "SUCCESS"] for line in lines)
    broken = next(line for line in lines if line.split()[:2] == ["broken", "FAILED"])
    assert "no_such_table" in broken  # the step's own error, not a generic word
    assert any(line.split()[:2] == ["never", "SKIPPED"] for line in lines)


def test_a_successful_run_is_mailed_and_an_unreachable_server_is_recorded(node, smtp_server):
    port, inbox = smtp_server
    spec = {
        "steps": [{"name": "q", "type": "sql", "sql": "SELECT 1"}],
        "reporters": [{"type": "email", "to": "ops@bank.example"}],
    }
    run = _run(node, spec, reporters.Mail("127.0.0.1", port))
    assert run["status"] == runs.SUCCESS and "reporter failed" not in run["message"]
    assert inbox.messages[-1][1]["Subject"] == f"[nodal] mailed on {INFRA}: SUCCESS"
    # Nobody listens on a fresh free port: the run still succeeds, the failure is on record.
    run = _run(node, spec, reporters.Mail("127.0.0.1", _free_port()))
    assert run["status"] == runs.SUCCESS and "reporter failed: email1" in run["message"]
    (report,) = reporters.list_reports(node.store, run["run_id"])
    assert report["outcome"] == "FAILED" and "ConnectionRefusedError" in report["message"]
