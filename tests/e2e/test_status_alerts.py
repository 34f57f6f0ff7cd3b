"""Opening Monitoring's Status page only reads: a visitor never fires the status webhook. The
automation runner's tick sends a status change, once, to a real webhook receiver on
loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from engine.access import accounts
from engine.deployer import deployments as deployer
from engine.storage.control import monitored_status, runner_state
from nodal_demo import demo
from tests.e2e import procs
from tests.homes import copy_home, environ

MONITORING = Path(__file__).resolve().parents[2] / "apps" / "monitoring" / "app.py"
DEP = deployer.deployment_id_for(demo.PROJECT, demo.AUTOMATION_INFRA)
WATCHER = "automation-watch"  # a runner with nothing deployed: it only watches statuses
ACTOR = "test"  # an administrator of test homes (tests/homes.py)


class _Receiver:
    """A webhook receiver on loopback that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict] = []
        self.received = received

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's API
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def about(self, object_id: str) -> list[dict]:
        return [r for r in self.received if r.get("object_id") == object_id]


def _ticks(store) -> str | None:
    with store.read() as conn:
        return conn.execute(
            sa.select(runner_state.c.value).where(
                runner_state.c.infra_id == WATCHER, runner_state.c.key == "alive"
            )
        ).scalar()


def test_the_status_page_only_reads_and_the_runner_alerts_once(demo_env, tmp_path, monkeypatch):
    settings, store = copy_home(demo_env.settings, tmp_path)
    hook = _Receiver()
    env = {**environ(settings), "NODAL_STATUS_WEBHOOK": hook.url, "NODAL_POLL_SECONDS": "0.3"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    deployed = deployer.get_deployment(store, DEP)
    # The automation node reports that the deployment broke.
    deployer.report(store, DEP, deployed.node_version, "ERROR", "cannot activate the bundle")
    try:
        # A visitor opens the Status page, twice.
        for _ in range(2):
            at = AppTest.from_file(str(MONITORING), default_timeout=120)
            at.session_state["nodal_session_token"] = accounts.open_session(store, ACTOR)
            at.run()
            at.switch_page("views/status.py").run()
            assert not at.exception, at.exception
            table = at.dataframe[0].value.set_index("what")
            assert table.loc[f"{demo.PROJECT} on {demo.AUTOMATION_INFRA}", "status"] == "ERROR"
        assert hook.received == []  # no webhook for a page view
        with store.read() as conn:
            assert conn.execute(sa.select(monitored_status)).all() == []  # nothing written

        # The runner's tick sends the change, once.
        deployer.create_infra(store, WATCHER, "automation", "prod", actor=ACTOR)
        log = tmp_path / "runner.log"
        runner = procs.start(["-m", "engine.runner", "--infra", WATCHER], env, log)
        try:
            procs.wait_for(lambda: hook.about(DEP), 90, "the status webhook", log)
            seen: set[str | None] = set()

            def three_more_ticks() -> bool:  # each tick watches the statuses again
                seen.add(_ticks(store))
                return len(seen) > 3

            procs.wait_for(three_more_ticks, 90, "three more ticks of the runner", log)
        finally:
            procs.stop(runner)
        (alert,) = hook.about(DEP)
        assert alert["status"] == "ERROR" and alert["previous_status"] is None
        assert "cannot activate the bundle" in alert["message"]
        assert all(len(hook.about(r["object_id"])) == 1 for r in hook.received)
    finally:
        hook.server.shutdown()
