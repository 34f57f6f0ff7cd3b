"""API node throughput and latency against MLflow's server and a bare Litestar endpoint.

One run, one machine, one model, one transaction, four servers (five measurements), each with
one worker pinned to CPU 0 while wrk (Debian's package) runs pinned to CPU 1:

- **nodal**: ``nodal serve``, single-record ``predict`` through the full path (JSON parsing,
  validation, card-profile enrichment, the card's windowed features (recipes/card_windows.yaml:
  one read and update of the online state, the embedded SQLite store of the node's home),
  features, model, audit log, metrics), sent the same transaction every time: its event is
  recorded once and then re-read (a client's retry);
- **nodal-fresh**: the same server, each request a new transaction (a wrk Lua script: a new
  ``transaction_id``, cards taken in turn among the data's cards (not the one ``nodal`` is
  sent), ``ts`` advancing at the demo data's rate of transactions, so every card keeps about
  its real number of events in its 7-day window): every request inserts an event, trims the
  card's old ones and reads the rest, the honest cost of the state read and update;
- **nodal-plain**: the fraud example without its card windows (features and model without
  them, retrained; ``--no-plain`` skips it), another ``nodal serve`` and home, for comparison;
- **bare**: a Litestar endpoint that only runs ``Booster.predict`` on a ready numpy row
  (the practical limit of Python + Litestar + LightGBM), sent the same request body;
- **mlflow**: ``mlflow models serve`` of the same LightGBM booster, sent the transaction's
  model inputs in its fastest format (``inputs``, ``dataframe_split`` or CSV, each tried
  in short runs first; the fastest is measured).

nodal and bare run on the same uvicorn with the same event loop, HTTP parser and protocol
class (uvloop, httptools and ``engine.apinode.http.protocol.ApiNodeProtocol``, as ``nodal serve``
uses them). nodal's queries take that protocol's direct lane (answered in the protocol,
without an ASGI round, see docs/architecture.md); the bare Litestar app has no such lane,
so it is served through ASGI and Litestar, as any Litestar app is. All servers stay up for
the whole run and are measured in interleaved rounds (nodal, nodal-fresh, nodal-plain, bare,
mlflow, then again), so a burst of load from elsewhere hits all of them alike; each figure is
the best round. The load average is
printed before and after: compare ratios, not absolutes.

Prints requests/s, p50/p99 at 1 and 16 connections and the ratios, the server-side p50/p99 of
nodal's ``predict`` (from its audit log; same transaction and fresh ones apart), the state
store's size afterwards and the server time of a 1,000-record ``predict-multi``.

    apt-get install -y wrk
    pip install -e ".[bench]"   # mlflow (or pass --mlflow /path/to/a/venv/bin/mlflow)
    flock /tmp/nodal-bench.lock python bench/bench_serving.py [--seconds 10] [--rounds 3]
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
    url: str,
    body: bytes,
    content_type: str,
    connections: int,
    seconds: int,
    tmp: Path,
    lua: str | None = None,
) -> dict[str, float]:
    """One wrk run: the same ``body`` every request, or what the Lua script ``lua`` makes."""
    script = tmp / "post.lua"
    script.write_text(
        lua
        or (
            f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{content_type}"\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
        )
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
    done = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"], "requests": done}


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


def state_of(loaded):  # noqa: ANN001, ANN201 - (the Windowed, its SqliteState)
    """The endpoint's windowed features and their store: refuses a package without windows,
    or a store other than the embedded one."""
    from engine.apinode.online_state import SqliteState
    from engine.project.windows import Windowed

    ep = loaded.endpoints[demo.ENDPOINT]
    live = [t for t in ep.enrichments if isinstance(t, Windowed)]
    if len(live) != 1 or not isinstance(live[0].state, SqliteState):
        raise SystemExit(f"expected one windows join in the embedded store, not {live}")
    return live[0], live[0].state


def fresh_lua(content_type: str, cards: list[str], base_s: int, step_s: float) -> str:
    """A wrk script sending TRANSACTION as a new transaction every request: the n-th (from
    ``__OFFSET__``, replaced before each run) has id ``T-fresh-<n>``, card ``cards[n % len]`` and time
    ``base_s + n * step_s``."""
    holders = {"transaction_id": "@ID@", "ts": "@TS@", "card_id": "@CARD@"}
    template = json.dumps({"features": {**TRANSACTION, **holders}})
    assert "%" not in template and list(holders) == [k for k in TRANSACTION if k in holders]
    for v in holders.values():
        template = template.replace(f'"{v}"', '"%s"')
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local cards = {{{", ".join(json.dumps(c) for c in cards)}}}
local template = {json.dumps(template)}
local n = __OFFSET__
function request()
  local body = string.format(template, "T-fresh-" .. n,
    os.date("!%Y-%m-%dT%H:%M:%S", {base_s} + math.floor(n * {step_s!r})), cards[n % #cards + 1])
  n = n + 1
  return wrk.format(nil, nil, nil, body)
end
"""


def fresh_plan(data_dir: Path) -> tuple[list[str], int, float]:
    """The data's cards (but TRANSACTION's), the first fresh time (a minute after the data's
    newest transaction) and the seconds between two transactions at the data's rate."""
    ref = ds.DatasetRef("transactions", Path(data_dir) / "transactions", "day")
    row = ds.query_df(
        "SELECT list(DISTINCT card_id ORDER BY card_id) AS cards, epoch(max(ts)) AS hi, "
        "epoch(min(ts)) AS lo, count(*) AS n FROM t",
        {"t": ref},
    ).iloc[0]
    cards = [c for c in row["cards"] if c != TRANSACTION["card_id"]]
    return cards, int(row["hi"]) + 60, float(row["hi"] - row["lo"]) / float(row["n"])


def model_inputs(loaded) -> tuple[Path, list[float], list[str]]:  # noqa: ANN001
    """The model file, and the transaction encoded exactly as nodal encodes it."""
    ep = loaded.endpoints[demo.ENDPOINT]
    row = ep._row(TRANSACTION)
    return ep.model.path / "model.txt", [float(x) for x in row[0]], ep.model.feature_names


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Server:
    """One server under test: its URL and the request body it is sent (or, with ``lua``, the
    wrk script making each request's body, started at ``offset``: a count of what was sent)."""

    def __init__(
        self, name: str, url: str, body: bytes, content_type: str, lua: str | None = None
    ) -> None:
        self.name, self.url, self.body, self.content_type = name, url, body, content_type
        self.lua, self.offset = lua, 0

    def run(self, connections: int, seconds: int, tmp: Path) -> dict[str, float]:
        lua = self.lua and self.lua.replace("__OFFSET__", str(self.offset))
        res = wrk(self.url, self.body, self.content_type, connections, seconds, tmp, lua)
        self.offset += res["requests"] + 100  # and what was sent but not answered (≤ conns)
        return res

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
    parser.add_argument(
        "--no-plain", action="store_true", help="skip nodal-plain (the example without windows)"
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
    windowed, state = state_of(loaded)
    print(f"windowed features {[f.name for f in windowed.spec.features]} in {state.path}")
    model_file, row, names = model_inputs(loaded)
    cards, base_s, step_s = fresh_plan(Path(env["NODAL_DATA_DIR"]))
    print(f"nodal-fresh: {len(cards)} cards in turn, a transaction every {step_s:.1f} s of data")
    plain_home = None
    if not args.no_plain:
        from bench.bench_card_state import example_without_windows
        from bench.bench_card_state import prepare as prepare_plain

        print("preparing the fraud example without its card windows …", flush=True)
        plain, env_plain = prepare_plain(
            tmp / "plain", example_without_windows(tmp / "example_plain")
        )
        env_plain.pop("NODAL_POLL_SECONDS")  # as the nodal server: the default
        plain_home = plain.home

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
    bare_py.write_text(BARE_APP.format(row=", ".join(repr(x) if x == x else "np.nan" for x in row)))
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
        check = {**TRANSACTION, "transaction_id": "T-fresh-check", "card_id": cards[0]}
        check["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base_s - 30))
        lua = fresh_lua(js, cards, base_s, step_s)
        servers.append(
            Server("nodal-fresh", url, json.dumps({"features": check}).encode(), js, lua)
        )
        if plain_home is not None:
            port = free_port()
            proc = start(
                [*cmd, "--port", str(port)],
                env_plain,
                tmp / "nodal_plain.log",
                f"http://127.0.0.1:{port}/isAlive/",
            )
            procs.append(proc)
            plain_url = url.replace(url.split("/")[2], f"127.0.0.1:{port}")
            servers.append(Server("nodal-plain", plain_url, transaction, js))
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
            server.run(4, 2, tmp)  # warm-up
        runs: dict[str, dict[int, list[dict[str, float]]]] = {
            s.name: {1: [], 16: []} for s in servers
        }
        for r in range(args.rounds):
            for server in servers:
                for c in (1, 16):
                    runs[server.name][c].append(server.run(c, args.seconds, tmp))
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
    sides = ds.query_df(
        "SELECT CASE WHEN json_extract_string(features, '$.transaction_id') LIKE 'T-fresh-%' "
        "THEN 'nodal-fresh' ELSE 'nodal' END AS server, quantile_cont(duration_us, 0.5) AS p50, "
        f"quantile_cont(duration_us, 0.99) AS p99, count(*) AS n, count(DISTINCT "
        f"json_extract_string(features, '$.transaction_id')) AS ids FROM {table} "
        "WHERE method = 'predict' AND status = 200 GROUP BY 1 ORDER BY 1"
    ).to_dict("records")
    if plain_home is not None:
        table = querylog.scan_sql(plain_home, demo.API_INFRA)
        sides += ds.query_df(
            "SELECT 'nodal-plain' AS server, quantile_cont(duration_us, 0.5) AS p50, "
            f"quantile_cont(duration_us, 0.99) AS p99, count(*) AS n, 1 AS ids FROM {table} "
            "WHERE method = 'predict' AND status = 200"
        ).to_dict("records")
    held = state.key_events(windowed.spec.space)
    print()
    print(
        f"best of {args.rounds} interleaved rounds of {args.seconds} s; load average now {load_average()}"
    )
    print(
        f"{'server':<11} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  (all rounds' req/s)"
    )
    for name, by_c in results.items():
        for c, r in by_c.items():
            every = ", ".join(f"{x['rps']:.0f}" for x in runs[name][c])
            print(
                f"{name:<11} {c:>5} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}  ({every})"
            )
    print()
    for name in (s.name for s in servers if s.name.startswith("nodal")):
        for c in (1, 16):
            n, m, b = results[name][c], results["mlflow"][c], results["bare"][c]
            print(
                f"{name:<11} {c:>2} connections: /mlflow throughput ×{n['rps'] / m['rps']:.1f} "
                f"(p99 {n['p99_ms']:.2f} vs {m['p99_ms']:.2f} ms); /bare {n['rps'] / b['rps']:.0%}"
            )
    for side in sides:
        print(
            f"{side['server']} server-side predict: p50 {side['p50']:.0f} µs, "
            f"p99 {side['p99']:.0f} µs over {side['n']:,} queries ({side['ids']:,} transactions)"
        )
    print(
        f"online state afterwards: {len(held)} cards, {sum(held.values()):,} events, "
        f"at most {max(held.values(), default=0)} per card"
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
