"""The whole lifecycle on hosts that share no folder (issue 16): Linux network namespaces
made by the test, each "host" with its own address and its own folder.

- ``data``: PostgreSQL (the control store), SeaweedFS (the S3 object store) and Redis (the
  API nodes' online state), each bound to the host's address;
- ``design``: the design node and deployer, driven with the real CLI;
- ``auto1`` and ``auto2``: two runners of one automation infrastructure (one holds the
  lease, the other stands by);
- ``api1`` and ``api2``: two API nodes of one API infrastructure, behind nginx on ``lb``;
- ``mon``: Monitoring.

The design host builds, trains, bundles, packages and deploys; the runner holding the lease
downloads the bundle from S3 and runs the daily scenario; Monitoring, on its own host, shows
the map of the day it published; requests through nginx are all answered while a new API
package is deployed and while one API host's server is SIGKILLed; SIGKILLing the runner
that holds the lease hands its work to the other, which runs the next scenario from its own
download. Every host's home is its own folder; none lies inside another.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from engine.automation.lease import lease_info
from engine.storage.control import open_store, scenario_runs, served_enrichments
from nodal_demo import demo
from tests.e2e import hosts as h
from tests.e2e import procs
from tests.s3server import seaweedfs

pytestmark = pytest.mark.skipif(h.available() is not None, reason=str(h.available()))

REPO = procs.REPO
API_PORT, LB_PORT, MON_PORT, REDIS_PORT = 12000, 8080, 8503, 6379
PREDICT = f"/public/api/v1/{demo.SERVICE}/{demo.ENDPOINT}/predict"
RECORD = {
    "ts": "2026-11-10T02:13:00",
    "card_id": "C0000042",
    "merchant_id": "M000017",
    "merchant_category": "electronics",
    "amount": 412.5,
    "channel": "online",
    "card_present": False,
    "merchant_latitude": 25.76,
    "merchant_longitude": -80.19,
}


def _env(host: h.Host, shared: dict[str, str], data_dir: Path | None = None) -> dict[str, str]:
    """A host's settings: its own home, landing zone and compiled-model cache; the shared
    services by address."""
    return {
        **shared,
        "NODAL_HOME": str(host.root / "var"),
        "NODAL_DATA_DIR": str(data_dir or host.root / "data"),
        "NODAL_COMPILED_CACHE": str(host.root / "compiled"),
        "NODAL_BASEMAP": "none",
        "NODAL_POLL_SECONDS": "0.5",
        "NODAL_RUNNER_LEASE_SECONDS": "3",
        "NODAL_RUNNER_RENEW_SECONDS": "0.5",
        "NODAL_USER": "admin",
        "PYTHONUNBUFFERED": "1",
    }


def _nodal(host: h.Host, env: dict[str, str], *args: str, timeout: float = 600) -> str:
    done = host.run(
        [sys.executable, "-m", "engine.cli.main", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def _start_nodal(host: h.Host, env: dict[str, str], name: str, *args: str):  # noqa: ANN202
    return host.start(
        [sys.executable, "-m", "engine.cli.main", *args], host.root / f"{name}.log", env, cwd=REPO
    )


def _start_redis(host: h.Host) -> str:
    proc = host.start(
        ["redis-server", "--bind", host.address, "--port", str(REDIS_PORT), "--save", "",
         "--appendonly", "no", "--protected-mode", "no", "--dir", str(host.root)],
        host.root / "redis.log",
    )  # fmt: skip
    h.wait_port(host.address, REDIS_PORT, proc=proc)
    return f"redis://{host.address}:{REDIS_PORT}/0"


def _hammer(url: str, stop: threading.Event, out: list, prefix: str) -> None:
    with httpx.Client(timeout=30) as client:
        i = 0
        while not stop.is_set():
            record = {**RECORD, "transaction_id": f"{prefix}-{i}"}
            try:
                r = client.post(url, json={"features": record})
                gen = (
                    r.json().get("apiContext", {}).get("serviceGeneration")
                    if r.is_success
                    else None
                )
                out.append((record["transaction_id"], r.status_code, gen))
            except httpx.HTTPError as exc:
                out.append((record["transaction_id"], type(exc).__name__, None))
            i += 1


def _served(store) -> list[dict]:
    with store.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(served_enrichments)).mappings()]


def _runs(store, infra: str) -> list[dict]:
    with store.read() as conn:
        rows = conn.execute(
            sa.select(scenario_runs).where(scenario_runs.c.infra_id == infra)
        ).mappings()
        return [dict(r) for r in rows]


def test_the_lifecycle_on_hosts_that_share_no_folder(demo_env, tmp_path):  # noqa: PLR0915
    with contextlib.ExitStack() as stack:
        hosts = stack.enter_context(h.Hosts(tmp_path))
        data, design = hosts.add("data"), hosts.add("design")
        auto1, auto2 = hosts.add("auto1"), hosts.add("auto2")
        api1, api2, lb, mon = (
            hosts.add("api1"),
            hosts.add("api2"),
            hosts.add("lb"),
            hosts.add("mon"),
        )

        # The data host: the control store, the object store and the online state store.
        control_url = h.start_postgres(data)
        s3 = stack.enter_context(seaweedfs(data.root / "s3", host=data))
        shared = {
            "NODAL_CONTROL_URL": control_url,
            "NODAL_ONLINE_STORE_URL": _start_redis(data),
            **s3.environ("cluster"),
        }
        for host in (design, auto1, auto2):  # a landing zone each (a copy, no shared folder)
            shutil.copytree(demo_env.settings.data_dir, host.root / "data")
        control = open_store(control_url)

        # Design host: import, build, train, bundle, package, deploy — the real CLI.
        env = _env(design, shared)
        example = str(REPO / "examples" / "fraud")
        _nodal(design, env, "project", "import", example)
        _nodal(design, env, "project", "use", demo.PROJECT)
        _nodal(design, env, "flow", "build", "training_set")
        _nodal(design, env, "model", "train", "--model", demo.MODEL)
        _nodal(design, env, "flow", "build", "card_profiles")
        for infra, kind in ((demo.AUTOMATION_INFRA, "automation"), (demo.API_INFRA, "apinode")):
            _nodal(design, env, "infra", "create", infra, "--kind", kind, "--stage", "prod")
        _nodal(design, env, "bundle", "create", "b1")
        _nodal(design, env, "deploy", "bundle", "b1", "--infra", demo.AUTOMATION_INFRA)
        _nodal(design, env, "api", "package", "v1")
        _nodal(design, env, "api", "deploy", "v1", "--infra", demo.API_INFRA, "--access", "public")

        # Two runners on two hosts: one holds the lease, the other stands by.
        runner1 = _start_nodal(auto1, _env(auto1, shared), "runner", "runner", "--infra",
                               demo.AUTOMATION_INFRA)  # fmt: skip
        procs.wait_for(
            lambda: (i := lease_info(control, demo.AUTOMATION_INFRA)) is not None and i.held,
            90, "runner 1 holds the lease", auto1.root / "runner.log",
        )  # fmt: skip
        runner2 = _start_nodal(auto2, _env(auto2, shared), "runner", "runner", "--infra",
                               demo.AUTOMATION_INFRA)  # fmt: skip
        procs.wait_for(
            lambda: len(lease_info(control, demo.AUTOMATION_INFRA).standbys) == 1,
            60, "runner 2 stands by", auto2.root / "runner.log",
        )  # fmt: skip
        first = lease_info(control, demo.AUTOMATION_INFRA)
        assert f":{runner1.pid}:" in first.holder and f":{runner2.pid}:" in first.standbys[0]
        out = _nodal(design, env, "scenario", "run", "daily_scoring", "--infra",
                     demo.AUTOMATION_INFRA, "--timeout", "300")  # fmt: skip
        assert "SUCCESS" in out or "WARNING" in out, out
        ran = _runs(control, demo.AUTOMATION_INFRA)
        assert len({r["lease_epoch"] for r in ran}) == 1
        assert list((auto1.root / "var").rglob("cache/deployer/bundles/*/b1.zip"))  # downloaded
        assert not list((auto2.root / "var").rglob("scored"))  # the standby ran nothing

        # Monitoring on its own host: the map of the day the runner published, from S3.
        check_map = (
            "import json; from engine.core.settings import load_settings; "
            "from engine.storage.control import open_store; from engine.monitoring import maps; "
            "s = load_settings(); st = open_store(s.control_store_url); "
            f"d = maps.load_map_day(s, st, {demo.PROJECT!r}, {demo.AUTOMATION_INFRA!r}); "
            "print(json.dumps({'ok': d.ok, 'day': str(d.day), 'msg': d.message, "
            "'points': 0 if d.points is None else len(d.points)}))"
        )
        mon_env = {**_env(mon, shared), **s3.environ("cluster", node=True)}
        shown = json.loads(
            mon.run([sys.executable, "-c", check_map], env=mon_env, cwd=REPO,
                    capture_output=True, text=True).stdout.strip().splitlines()[-1]
        )  # fmt: skip
        assert shown["ok"] and shown["points"] > 0, shown
        app = mon.start(
            [sys.executable, "-m", "streamlit", "run", "apps/monitoring/app.py",
             "--server.headless=true", f"--server.address={mon.address}",
             f"--server.port={MON_PORT}", "--browser.gatherUsageStats=false"],
            mon.root / "monitoring.log", mon_env, cwd=REPO,
        )  # fmt: skip
        h.wait_port(mon.address, MON_PORT, proc=app)
        health = httpx.get(f"http://{mon.address}:{MON_PORT}/_stcore/health", timeout=30)
        assert health.text == "ok"

        # Two API hosts behind nginx: a version switch and a SIGKILL lose no request.
        servers = {
            host.name: _start_nodal(
                host,
                _env(host, shared),
                "serve",
                "serve",
                "--infra",
                demo.API_INFRA,
                "--host",
                host.address,
                "--port",
                str(API_PORT),
            )  # fmt: skip
            for host in (api1, api2)
        }
        for host in (api1, api2):
            procs.wait_for(
                lambda host=host: httpx.get(f"http://{host.address}:{API_PORT}/isAlive/",
                                            timeout=5).json().get("services"),
                120, f"the API node on {host.name}", host.root / "serve.log",
            )  # fmt: skip
        conf = procs.balancer_conf(lb.root, [f"{api1.address}:{API_PORT}",
                                             f"{api2.address}:{API_PORT}"],
                                   f"{lb.address}:{LB_PORT}")  # fmt: skip
        nginx = lb.start(["nginx", "-p", str(lb.root), "-c", str(conf)],
                         lb.root / "nginx.out")  # fmt: skip
        h.wait_port(lb.address, LB_PORT, proc=nginx)
        # Both API hosts serve the card profiles the daily run published, read from S3.
        procs.wait_for(
            lambda: len(served := _served(control)) >= 2
            and all(r["version"] and not r["problem"] for r in served),
            60, "the API hosts to serve the published profiles", api1.root / "serve.log",
        )  # fmt: skip
        target = f"http://{lb.address}:{LB_PORT}{PREDICT}"
        stop, results, threads = threading.Event(), [], []
        for t in range(4):
            thread = threading.Thread(target=_hammer, args=(target, stop, results, f"mh{t}"))
            thread.start()
            threads.append(thread)
        try:
            time.sleep(1.5)
            _nodal(design, env, "api", "package", "v2")
            _nodal(design, env, "api", "deploy", "v2", "--infra", demo.API_INFRA)
            procs.wait_for(lambda: any(g == "v2" for _, _, g in results[-40:]), 60,
                           "answers from v2", api1.root / "serve.log")  # fmt: skip
            before_kill = len(results)
            h.kill(servers["api1"])  # one API host's server dies
            time.sleep(2.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        failed = [r for r in results if r[1] != 200]
        assert not failed, failed[:5]
        assert len(results) > before_kill > 0
        assert {"v1", "v2"} <= {g for _, _, g in results}

        # SIGKILL the runner holding the lease: the other takes over and runs from its own
        # download of the bundle.
        h.kill(runner1)
        procs.wait_for(
            lambda: (i := lease_info(control, demo.AUTOMATION_INFRA)).held
            and i.epoch > first.epoch,
            30, "runner 2 takes over", auto2.root / "runner.log",
        )  # fmt: skip
        out = _nodal(design, env, "scenario", "run", "daily_scoring", "--infra",
                     demo.AUTOMATION_INFRA, "--timeout", "300")  # fmt: skip
        assert "SUCCESS" in out or "WARNING" in out, out
        epochs = sorted({r["lease_epoch"] for r in _runs(control, demo.AUTOMATION_INFRA)})
        assert len(epochs) == 2, epochs
        assert list((auto2.root / "var").rglob("cache/deployer/bundles/*/b1.zip"))
        assert runner2.poll() is None

        # No folder is shared: every host's home is its own, none inside another.
        homes = [host.root / "var" for host in hosts.hosts.values() if (host.root / "var").exists()]
        assert len(homes) >= 6
        for a in homes:
            assert all(a == b or not (a.is_relative_to(b) or b.is_relative_to(a)) for b in homes)
