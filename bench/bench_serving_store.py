"""API node throughput with its package loaded from S3 vs from the local home (issue 16).

The same method as ``bench_serving.py`` (one ``nodal serve`` worker pinned to CPU 0, wrk
pinned to CPU 1, single-record ``predict`` of one transaction, interleaved rounds whose
order alternates, best round kept) against two API nodes of the same infrastructure and package:

- **local**: the demo home, the package read from ``<home>/deployer/api_packages/…``;
- **s3**: another home (another host's), the control store shared, the package downloaded
  from a real S3 server (SeaweedFS on loopback, ``tests/s3server.py``) into its cache;
- **local2**: a second node on the demo home, as **local**: how far two identical nodes differ
  on this machine (the noise band).

The store is read when a package loads, never per request, so they should be equal: the
S3 server is stopped (SIGKILL) before the measurement, and every answer must still be a 200.

    apt-get install -y wrk
    flock /tmp/nodal-bench.lock python bench/bench_serving_store.py [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_serving import TRANSACTION, free_port, load_average, prepare, start, stop, wrk  # noqa: E402

from engine.deployer import api_deployer, apipackages  # noqa: E402
from engine.storage.control import open_store  # noqa: E402
from engine.storage.objects import S3ObjectStore  # noqa: E402
from nodal_demo import demo  # noqa: E402
from tests.s3server import seaweedfs  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best kept)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nodal-bench-store-"))
    print(f"preparing the fraud example in {tmp} …", flush=True)
    home, env, _ = prepare(tmp)
    control_url = f"sqlite:///{(home / 'control.db').resolve()}"
    store = open_store(control_url)
    version = api_deployer.list_api_deployments(store, demo.API_INFRA)[0].primary
    info = apipackages.get_package(store, demo.SERVICE, version)
    key = apipackages.object_key(demo.SERVICE, version)
    body = json.dumps({"features": TRANSACTION}).encode()
    path = f"/public/api/v1/{demo.SERVICE}/{demo.ENDPOINT}/predict"
    with seaweedfs(tmp / "seaweedfs") as s3:
        S3ObjectStore(
            f"s3://{s3.bucket}/bench", s3.endpoint, "us-east-1", s3.access_key, s3.secret_key
        ).put_file(key, home / key)  # published as the deployer would
        s3_home = tmp / "api-host" / "var"
        envs = {
            "local": {**env, "PYTHONPATH": str(REPO)},
            "local2": {**env, "PYTHONPATH": str(REPO)},  # the same again: the noise band
            "s3": {
                **{k: v for k, v in env.items() if k != "NODAL_HOME"},
                **s3.environ("bench"),  # it writes its compacted query logs there
                "NODAL_HOME": str(s3_home),
                "NODAL_CONTROL_URL": control_url,
                "PYTHONPATH": str(REPO),
            },
        }
        procs, urls = [], {}
        try:
            for name, e in envs.items():
                port = free_port()
                cmd = [sys.executable, "-m", "engine.serving", "--infra", demo.API_INFRA]
                procs.append(
                    start(
                        [*cmd, "--port", str(port)],
                        e,
                        tmp / f"{name}.log",
                        f"http://127.0.0.1:{port}/isAlive/",
                    )
                )
                urls[name] = f"http://127.0.0.1:{port}{path}"
            cached = s3_home / "apinode" / demo.API_INFRA / "cache" / key
            assert cached.is_file(), "the S3 node did not download its package"
            print(f"S3 node's package: {cached} (sha256 {info.sha256[:12]}…)", flush=True)
            answers = {n: httpx.post(u, content=body).json()["result"] for n, u in urls.items()}
            assert answers["local"] == answers["s3"] == answers["local2"], answers
            # The store is read when a package loads, not per request: measure with it down.
            os.kill(s3.pid, signal.SIGKILL)
            print(f"SeaweedFS (pid {s3.pid}) stopped: the nodes serve without their store")
            for u in urls.values():
                wrk(u, body, "application/json", 4, 2, tmp)  # warm-up
            runs: dict[str, dict[int, list[dict[str, float]]]] = {n: {1: [], 16: []} for n in urls}
            print(f"load average {load_average()}", flush=True)
            for r in range(args.rounds):
                order = list(urls.items())  # alternate who goes first: no order bias
                for name, u in order if r % 2 == 0 else order[::-1]:
                    for c in (1, 16):
                        runs[name][c].append(wrk(u, body, "application/json", c, args.seconds, tmp))
                print(f"round {r + 1}/{args.rounds}; load average {load_average()}", flush=True)
        finally:
            for proc in procs:
                stop(proc)
    print(f"\n{'node':<6} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    best = {
        n: {c: max(rs, key=lambda x: x["rps"]) for c, rs in by.items()} for n, by in runs.items()
    }
    for name, by in best.items():
        for c, res in by.items():
            print(
                f"{name:<6} {c:>5} {res['rps']:>9.0f} {res['p50_ms']:>8.3f} {res['p99_ms']:>8.3f}"
            )
    for c in (1, 16):
        for name in ("local2", "s3"):
            ratio = best[name][c]["rps"] / best["local"][c]["rps"]
            print(f"{name}/local at {c} connection(s): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
