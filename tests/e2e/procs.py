"""Start nodal processes as real subprocesses for end-to-end tests, and stop them by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env=full_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - the process may not be up yet
            pass
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def nodal(
    args: list[str], env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the real ``nodal`` CLI."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Flags that let Debian's Chromium run headless here (FACTS.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.contextmanager
def streamlit_app(
    app: str,
    env: dict[str, str],
    log: Path,
    port: int | None = None,
    flags: tuple[str, ...] = (),
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real Streamlit process for ``app`` (e.g. "apps/monitoring/app.py"): (url, process).
    ``flags``: more options (e.g. ``--secrets.files``); ``port``: a chosen one."""
    port = port or free_port()
    flags = ["--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless",
             "true", "--browser.gatherUsageStats", "false", *flags]  # fmt: skip
    proc = start(["-m", "streamlit", "run", app, *flags], env, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/_stcore/health").text == "ok", 60, app, log)
        yield url, proc
    finally:
        stop(proc)


_BALANCER_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {root}/nginx-error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/nginx-body;
    proxy_temp_path {root}/nginx-proxy;
    fastcgi_temp_path {root}/nginx-fastcgi;
    uwsgi_temp_path {root}/nginx-uwsgi;
    scgi_temp_path {root}/nginx-scgi;
    client_max_body_size 11m;
    upstream apinode {{
{servers}
        keepalive 16;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://apinode;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # A replica that dies mid-request: send the request to the other one.
            proxy_next_upstream error timeout non_idempotent;
            proxy_next_upstream_tries 2;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


def balancer_conf(root: Path, upstreams: list[str], listen: str) -> Path:
    """Write an nginx configuration (in ``root``, its own prefix) balancing ``listen`` over
    the API replicas ``upstreams`` (``host:port``), retrying a request on the other replica
    when one dies mid-request, as a production balancer in front of API nodes does; the
    file's path."""
    servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=30s;" for u in upstreams)
    conf = root / "nginx.conf"
    conf.write_text(_BALANCER_CONF.format(root=root, servers=servers, listen=listen))
    return conf
