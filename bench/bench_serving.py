"""API node throughput and latency against MLflow's server and a bare Litestar endpoint.

One run, one machine, one model, one transaction, three servers, each with one worker
pinned to CPU 0 while wrk (Debian's package) runs pinned to CPU 1:

- **nodal**: ``nodal serve``, single-record ``predict`` through the full path (JSON parsing,
  validation, card-profile enrichment, features, model, audit log, metrics);
- **bare**: a Litestar endpoint that only runs ``Booster.predict`` on a ready numpy row
  (the practical limit of Python + Litestar + LightGBM), sent the same request body;
- **mlflow**: ``mlflow models serve`` of the same LightGBM booster, sent the transaction's
  model inputs in its fastest format (``inputs``, ``dataframe_split`` or CSV, each tried
  in short runs first; the fastest is measured).

nodal and bare run on the same uvicorn with the same event loop, HTTP parser and protocol
class (uvloop, httptools and ``engine.apinode.http.protocol.ApiNodeProtocol``, as ``nodal serve``
uses them). nodal's queries take that protocol's direct lane (answered in the protocol,
without an ASGI round, see docs/architecture.md); the bare Litestar app has no such lane,
so it is served through ASGI and Litestar, as any Litestar app is. All three servers stay up for the whole run and are
measured in interleaved rounds (nodal, bare, mlflow, then again), so a burst of load from
elsewhere hits all of them alike; each figure is the best round. The load average is
printed before and after: compare ratios, not absolutes.

Prints requests/s, p50/p99 at 1 and 16 connections and the ratios, the server-side p50 of
nodal's ``predict`` (from its audit log) and the server time of a 1,000-record
``predict-multi``.

    apt-get install -y wrk
    pip install -e ".[bench]"   # mlflow (or pass --mlflow /path/to/a/venv/bin/mlflow)
    python bench/bench_serving.py [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.apinode import querylog  # noqa: E402
from engine.deployer import api_deployer  # noqa: E402
from engine.storage import datasets as ds  # noqa: E402
from engine.storage.control import open_store  # noqa: E402
from nodal_demo import demo  # noqa: E402

TRANSACTION = {
    "transaction_id": "T-bench-1",
    "ts": "2026-11-10T02:13:00",
    "card_id": "C0000042",
    "merchant_id": "M000017",
    "merchant_category": "electronics",
    "amount": 1299.99,
    "channel": "online",
    "card_present": False,
    "merchant_latitude": 25.76,
    "merchant_longitude": -80.19,
}

BARE_APP = """
import sys, numpy as np, lightgbm as lgb
from litestar import Litestar, post
booster = lgb.Booster(model_file=sys.argv[1])
row = np.array([[{row}]], dtype="float64")

@post("/predict", status_code=200, sync_to_thread=False)
def predict() -> dict:
    return {{"proba": float(booster.predict(row, num_threads=1)[0])}}

app = Litestar([predict])
if __name__ == "__main__":
    import uvicorn
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False,
        loop=sys.argv[3], http=sys.argv[4],
    )
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path, health: str, timeout: float = 120):
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *cmd],
        env={**os.environ, **env},
        stdout=open(log, "wb"),  # noqa: SIM115 - lives as long as the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    stop(proc)
    raise SystemExit(f"server did not start: {' '.join(cmd)}\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wrk(
    url: str, body: bytes, content_type: str, connections: int, seconds: int, tmp: Path
) -> dict[str, float]:
    script = tmp / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{content_type}"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
    )
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in ("50", "99")}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        raise SystemExit(f"errors during the run against {url}:\n{out}")
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"]}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def prepare(root: Path):  # noqa: ANN201 - (home, env, loaded service)
    from engine.apinode.node import ApiNode
    from tests.conftest import SMALL, make_settings

    settings = make_settings(root)
    store = open_store(settings.control_store_url)
    demo.prepare(settings, store, SMALL)
    env = {"NODAL_HOME": str(settings.home), "NODAL_DATA_DIR": str(settings.data_dir)}
    dep = api_deployer.list_api_deployments(store, demo.API_INFRA)[0]
    loaded = ApiNode(settings, store, demo.API_INFRA).load_version(demo.SERVICE, dep.primary)
    return settings.home, env, loaded


def model_inputs(loaded) -> tuple[Path, list[float], list[str]]:  # noqa: ANN001
    """The model file, and the transaction encoded exactly as nodal encodes it."""
    ep = loaded.endpoints[demo.ENDPOINT]
    row = ep._row(TRANSACTION)
    return ep.model.path / "model.txt", [float(x) for x in row[0]], ep.model.feature_names


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Server:
    """One server under test: its URL and the request body it is sent."""

    def __init__(self, name: str, url: str, body: bytes, content_type: str) -> None:
        self.name, self.url, self.body, self.content_type = name, url, body, content_type

    def check(self) -> str:
        resp = httpx.post(
            self.url, content=self.body, headers={"Content-Type": self.content_type}, timeout=30
        )
        if resp.status_code != 200:
            raise SystemExit(f"{self.name} answered {resp.status_code}: {resp.text[:300]}")
        return resp.text[:160]


def mlflow_formats(row: list[float], names: list[str]) -> dict[str, tuple[bytes, str]]:
    """The transaction's model inputs in each format MLflow's server takes."""
    js = "application/json"
    csv = ",".join(names) + "\n" + ",".join(repr(x) if x == x else "" for x in row) + "\n"
    split = {"dataframe_split": {"columns": names, "data": [row]}}
    return {
        "inputs": (json.dumps({"inputs": [row]}).encode(), js),
        "dataframe_split": (json.dumps(split).encode(), js),
        "csv": (csv.encode(), "text/csv"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best kept)")
    parser.add_argument(
        "--mlflow",
        default=str(Path(sys.executable).parent / "mlflow"),
        help="the mlflow executable (default: next to this Python)",
    )
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(
                f"{tool} is missing: apt-get install -y {tool if tool == 'wrk' else 'util-linux'}"
            )
    if not Path(args.mlflow).exists():
        raise SystemExit(f"no mlflow at {args.mlflow}: pip install -e '.[bench]' or pass --mlflow")
    from engine.apinode.http.app import server_options

    options = server_options()
    tmp = Path(tempfile.mkdtemp(prefix="nodal-bench-"))
    print(f"preparing the fraud example in {tmp} …", flush=True)
    home, env, loaded = prepare(tmp)
    model_file, row, names = model_inputs(loaded)

    # MLflow model folder of the same booster (saved by mlflow's own Python).
    mlflow_model = tmp / "mlflow_model"
    mlflow_py = Path(args.mlflow).parent / "python"
    subprocess.run(
        [
            str(mlflow_py),
            "-c",
            "import sys, lightgbm as lgb, mlflow.lightgbm; "
            "mlflow.lightgbm.save_model(lgb.Booster(model_file=sys.argv[1]), sys.argv[2])",
            str(model_file),
            str(mlflow_model),
        ],
        check=True,
        capture_output=True,
    )
    bare_py = tmp / "bare_app.py"
    bare_py.write_text(BARE_APP.format(row=", ".join(repr(x) for x in row)))
    transaction = json.dumps({"features": TRANSACTION}).encode()
    js = "application/json"
    print(f"uvicorn for nodal and bare: {options}; load average {load_average()}", flush=True)

    servers: list[Server] = []
    procs: list[subprocess.Popen] = []
    try:
        port = free_port()
        cmd = [sys.executable, "-m", "engine.serving", "--infra", demo.API_INFRA]
        proc = start(
            [*cmd, "--port", str(port)],
            {**env, "PYTHONPATH": str(REPO)},
            tmp / "nodal.log",
            f"http://127.0.0.1:{port}/isAlive/",
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}/public/api/v1/{demo.SERVICE}/{demo.ENDPOINT}/predict"
        servers.append(Server("nodal", url, transaction, js))
        port = free_port()
        cmd = [sys.executable, str(bare_py), str(model_file), str(port), *options.values()]
        proc = start(cmd, {}, tmp / "bare.log", f"http://127.0.0.1:{port}/schema")
        procs.append(proc)
        servers.append(Server("bare", f"http://127.0.0.1:{port}/predict", transaction, js))
        port = free_port()
        mlflow_cmd = [args.mlflow, "models", "serve", "-m", str(mlflow_model)]
        proc = start(
            [*mlflow_cmd, "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-w", "1"],
            {"PATH": f"{Path(args.mlflow).parent}:{os.environ.get('PATH', '')}"},  # its uvicorn
            tmp / "mlflow.log",
            f"http://127.0.0.1:{port}/ping",
            timeout=180,
        )
        procs.append(proc)
        mlflow_url = f"http://127.0.0.1:{port}/invocations"
        formats = mlflow_formats(row, names)
        speed = {}
        for fmt, (body, ctype) in formats.items():
            probe = Server("mlflow", mlflow_url, body, ctype)
            print(f"mlflow {fmt}: {probe.check()}", flush=True)
            speed[fmt] = wrk(mlflow_url, body, ctype, 4, 3, tmp)["rps"]
        fastest = max(speed, key=speed.get)
        print(f"mlflow input formats (req/s): {speed} → using {fastest}", flush=True)
        servers.append(Server("mlflow", mlflow_url, *formats[fastest]))

        for server in servers:
            print(f"{server.name}: {server.check()}", flush=True)
            wrk(server.url, server.body, server.content_type, 4, 2, tmp)  # warm-up
        runs: dict[str, dict[int, list[dict[str, float]]]] = {
            s.name: {1: [], 16: []} for s in servers
        }
        for r in range(args.rounds):
            for server in servers:
                for c in (1, 16):
                    res = wrk(server.url, server.body, server.content_type, c, args.seconds, tmp)
                    runs[server.name][c].append(res)
            print(f"round {r + 1}/{args.rounds} done; load average {load_average()}", flush=True)

        nodal = servers[0]
        multi = json.dumps({"items": [{"features": TRANSACTION}] * 1000}).encode()
        server_ms, client_ms = [], []
        for _ in range(20):
            t0 = time.perf_counter()
            answer = httpx.post(nodal.url + "-multi", content=multi, timeout=30)
            client_ms.append((time.perf_counter() - t0) * 1000)
            server_ms.append(answer.json()["timing"]["total"] / 1000)
    finally:
        for proc in procs:
            stop(proc)

    results = {
        name: {c: max(rs, key=lambda x: x["rps"]) for c, rs in by_c.items()}
        for name, by_c in runs.items()
    }
    table = querylog.scan_sql(home, demo.API_INFRA)
    p50_us = ds.query_df(
        f"SELECT quantile_cont(duration_us, 0.5) AS p50, count(*) AS n FROM {table} "
        "WHERE method = 'predict' AND status = 200"
    )
    print()
    print(
        f"best of {args.rounds} interleaved rounds of {args.seconds} s; load average now {load_average()}"
    )
    print(
        f"{'server':<8} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  (all rounds' req/s)"
    )
    for name, by_c in results.items():
        for c, r in by_c.items():
            every = ", ".join(f"{x['rps']:.0f}" for x in runs[name][c])
            print(
                f"{name:<8} {c:>5} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}  ({every})"
            )
    print()
    for c in (1, 16):
        n, m, b = results["nodal"][c], results["mlflow"][c], results["bare"][c]
        print(
            f"{c:>2} connections: nodal/mlflow throughput ×{n['rps'] / m['rps']:.1f} "
            f"(p99 {n['p99_ms']:.2f} vs {m['p99_ms']:.2f} ms); "
            f"nodal/bare {n['rps'] / b['rps']:.0%}"
        )
    print(
        f"nodal server-side p50 of predict: {p50_us['p50'][0]:.0f} µs over {p50_us['n'][0]:,} queries"
    )
    print(
        f"nodal predict-multi, 1,000 records: server time median {statistics.median(server_ms):.1f} ms "
        f"(min {min(server_ms):.1f}, max {max(server_ms):.1f}); "
        f"round trip median {statistics.median(client_ms):.1f} ms"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
