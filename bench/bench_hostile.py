"""A worker's memory under a hostile mix: does it stay flat?

Starts a real ``nodal serve`` (one worker, pinned to CPU 0) serving the demo's fraud model
in a temporary home, then for ``--seconds`` (60) runs, from this process on CPU 1, over raw
sockets on loopback:

- **slow headers**: connections that send one header byte a second (slowloris);
- **half bodies**: connections that declare a 100 kB body, send 10 bytes and wait;
- **pipeliners**: connections that pipeline ``predict`` requests and never read an answer;
- **floods**: waves of connections opened and left idle, past the worker's connection cap;
- **normal traffic**: clients sending ``predict`` on kept-alive connections and reading
  the answers (their answers/s, status counts and latency are printed).

Every hostile connection reconnects as soon as the worker closes it. The worker's RSS
(``/proc/PID/status``) is printed every 5 s with what the clients saw; the script stops
by itself. The limits are the defaults unless given (``--header-timeout`` etc. are passed
to ``nodal serve``).

    flock /tmp/nodal-bench.lock python bench/bench_hostile.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_serving import TRANSACTION, free_port, prepare, start, stop  # noqa: E402

from nodal_demo import demo  # noqa: E402

PATH = f"/public/api/v1/{demo.SERVICE}/{demo.ENDPOINT}/predict"
BODY = json.dumps({"features": TRANSACTION}).encode()
PREDICT = (
    f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
    + b"Content-Length: %d\r\n\r\n" % len(BODY)
    + BODY
)


class Tally:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.latencies: list[float] = []

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def take(self) -> tuple[dict[str, int], list[float]]:
        counts, lat = self.counts, self.latencies
        self.counts, self.latencies = {}, []
        return counts, lat


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while chunk := await reader.read(65536):
        data += chunk
    return data


def _status(answer: bytes) -> str:
    m = re.match(rb"HTTP/1\.1 (\d+)", answer)
    return m.group(1).decode() if m else "closed"


async def slow_headers(port: int, tally: Tally, stop_at: float) -> None:
    while time.monotonic() < stop_at:
        try:
            reader, writer = await _open(port)
            closed = asyncio.ensure_future(_until_closed(reader))
            for byte in PREDICT[:200]:
                if closed.done() or time.monotonic() > stop_at:
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(1)
            answer = await asyncio.wait_for(closed, max(0.1, stop_at - time.monotonic()))
            tally.add(f"slow headers: {_status(answer)}")
            writer.close()
        except (TimeoutError, OSError):
            tally.add("slow headers: error")
            await asyncio.sleep(0.2)


async def half_body(port: int, tally: Tally, stop_at: float) -> None:
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode()
    while time.monotonic() < stop_at:
        try:
            reader, writer = await _open(port)
            writer.write(head + BODY[:10])
            answer = await asyncio.wait_for(
                _until_closed(reader), max(0.1, stop_at - time.monotonic())
            )
            tally.add(f"half body: {_status(answer)}")
            writer.close()
        except (TimeoutError, OSError):
            tally.add("half body: error")
            await asyncio.sleep(0.2)


async def pipeliner(port: int, tally: Tally, stop_at: float) -> None:
    burst = PREDICT * 200
    while time.monotonic() < stop_at:
        try:
            _, writer = await _open(port)
            while time.monotonic() < stop_at:
                writer.write(burst)
                try:  # the worker stops reading: our buffer fills and drain waits
                    await asyncio.wait_for(writer.drain(), 1.0)
                    tally.add("pipelined requests sent", 200)
                except TimeoutError:
                    tally.add("pipeliner: stalled a second")
                    if writer.transport.get_write_buffer_size() > 8 << 20:
                        break  # do not grow this (client) process without bound either
            writer.transport.abort()
        except OSError:
            tally.add("pipeliner: error")
            await asyncio.sleep(0.2)


async def flood(port: int, tally: Tally, stop_at: float, size: int) -> None:
    while time.monotonic() < stop_at:
        conns = []
        for _ in range(size):
            try:
                conns.append(await _open(port))
            except OSError:
                tally.add("flood: connect failed")
        refused = 0
        for reader, _ in conns:
            try:
                first = await asyncio.wait_for(reader.read(200), 0.01)
                refused += first.startswith(b"HTTP/1.1 503")
            except (TimeoutError, OSError):
                pass
        tally.add("flood: connections opened", len(conns))
        tally.add("flood: 503 at once", refused)
        await asyncio.sleep(3)
        for _, writer in conns:
            writer.transport.abort()


async def normal(port: int, tally: Tally, stop_at: float) -> None:
    while time.monotonic() < stop_at:
        try:
            reader, writer = await _open(port)
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                writer.write(PREDICT)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
                await asyncio.wait_for(reader.readexactly(length), 10)
                tally.latencies.append(time.perf_counter() - t0)
                tally.add(f"normal: {_status(head)}")
                if b"connection: close" in head.lower():
                    break
                await asyncio.sleep(0.002)
            writer.close()
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            tally.add(f"normal: {type(exc).__name__}")
            await asyncio.sleep(0.2)


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


async def run(port: int, pid: int, seconds: float, mix: dict[str, int]) -> list[float]:
    tally, start_at = Tally(), time.monotonic()
    stop_at = start_at + seconds
    tasks = [
        *(slow_headers(port, tally, stop_at) for _ in range(mix["slow"])),
        *(half_body(port, tally, stop_at) for _ in range(mix["half"])),
        *(pipeliner(port, tally, stop_at) for _ in range(mix["pipeliners"])),
        *(normal(port, tally, stop_at) for _ in range(mix["normal"])),
        flood(port, tally, stop_at, mix["flood"]),
    ]
    running = [asyncio.ensure_future(t) for t in tasks]
    rss = [rss_mb(pid)]
    print(f"{'t':>4} {'RSS MB':>8}  what the clients saw in the last 5 s", flush=True)
    print(f"{0:>4} {rss[0]:>8.1f}  (before the mix)", flush=True)
    while time.monotonic() < stop_at:
        await asyncio.sleep(min(5, max(0, stop_at - time.monotonic())))
        counts, lat = tally.take()
        rss.append(rss_mb(pid))
        p50 = f", normal p50 {statistics.median(lat) * 1e3:.1f} ms" if lat else ""
        ok = counts.get("normal: 200", 0)
        print(
            f"{time.monotonic() - start_at:>4.0f} {rss[-1]:>8.1f}  normal 200: {ok / 5:.0f}/s{p50}; "
            + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if k != "normal: 200"),
            flush=True,
        )
    for t in running:
        t.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    return rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--slow", type=int, default=200, help="slow-header connections")
    parser.add_argument("--half", type=int, default=200, help="half-body connections")
    parser.add_argument("--pipeliners", type=int, default=50, help="never-reading pipeliners")
    parser.add_argument("--normal", type=int, default=8, help="well-behaved clients")
    parser.add_argument("--flood", type=int, default=1200, help="connections per flood wave")
    parser.add_argument("--serve-option", action="append", default=[], metavar="OPT=VALUE",
                        help="a nodal serve option, e.g. --serve-option=--header-timeout=5")  # fmt: skip
    parser.add_argument("--home", help="keep the prepared demo home here (reused if present)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the clients on CPU 1, the worker on CPU 0
    with tempfile.TemporaryDirectory(prefix="nodal-hostile-") as tmp:
        root = Path(args.home or tmp)
        env = {"NODAL_HOME": str(root / "var"), "NODAL_DATA_DIR": str(root / "data")}
        if not (root / "var").exists():
            print("preparing the demo home (the fraud model)…", flush=True)
            _, env, _ = prepare(root)
        port = free_port()
        cmd = [sys.executable, "-m", "engine.serving", "--infra", demo.API_INFRA, "--port",
               str(port), *args.serve_option]  # fmt: skip
        log = root / "serve.log"
        proc = start(cmd, env, log, f"http://127.0.0.1:{port}/isAlive/")
        try:
            mix = {k: getattr(args, k) for k in ("slow", "half", "pipeliners", "normal", "flood")}
            print(f"nodal serve pid {proc.pid} on port {port}; mix {mix}", flush=True)
            rss = asyncio.run(run(port, proc.pid, args.seconds, mix))
            settled = rss[2:] or rss
            print(
                f"RSS: before {rss[0]:.1f} MB, max {max(rss):.1f} MB, "
                f"from 10 s on {min(settled):.1f}–{max(settled):.1f} MB"
            )
        finally:
            stop(proc)
        lines = log.read_text().splitlines()
        print(f"server log: {len(lines)} lines; last: {lines[-3:] if lines else []}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
