"""Several "hosts" on one machine for tests: Linux network namespaces on a bridge.

Each host is its own network namespace with one address on a private bridge (and its own
loopback); the test process, in the root namespace, reaches every host through the
bridge's address. Nothing but the network is separated, so a test that wants separate
hosts also gives each one its own folder (``Host.root``) and never shares one.

Needs root (CI and this machine run as root). Everything made here (namespaces, links,
processes) is removed by :meth:`Hosts.close`, processes by the PID they were started with.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def available() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    subprocess.run([*(["ip", "netns", "exec", ns] if ns else []), "ip", *args], check=True)


@dataclass
class Host:
    name: str
    ns: str
    address: str
    root: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=list)  # removed when the hosts close

    def command(self, argv: list[str], user: str | None = None) -> list[str]:
        """``argv`` run inside this host's namespace (as ``user`` when given)."""
        inner = ["runuser", "-u", user, "--", *argv] if user else list(argv)
        return ["ip", "netns", "exec", self.ns, *inner]

    def start(
        self,
        argv: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        user: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen:
        """Start a process on this host (its own process group; output to ``log``)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                self.command(argv, user),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str], env: dict[str, str] | None = None, **kwargs):  # noqa: ANN003, ANN201
        """Run ``argv`` on this host to completion (``subprocess.run`` arguments)."""
        kwargs.setdefault("check", True)
        return subprocess.run(self.command(argv), env={**os.environ, **(env or {})}, **kwargs)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group at once (a host that dies)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


class Hosts:
    """A bridge and hosts on it: ``with Hosts(tmp) as hosts: api = hosts.add("api1")``.

    Addresses are 10.<a>.<b>.<n>/24 with <a>.<b> from this process's id and a count of the
    instances it made (links and names of a closed instance may linger a moment in the
    kernel), so neither two sessions nor two tests collide; the bridge (the test process's
    side) is .254.
    """

    _made = itertools.count()  # a new tag per instance: links of an earlier one may linger

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        tag = (os.getpid() % 3700) * 16 + next(Hosts._made) % 16  # < 60,000: 4 hex digits
        self.tag = f"{tag:x}"
        self.subnet = f"10.{200 + tag // 10000 % 50}.{tag % 250}"
        self.bridge = f"nb{self.tag}"
        self.gateway = f"{self.subnet}.254"
        self.hosts: dict[str, Host] = {}
        self._made_bridge = False

    def __enter__(self) -> Hosts:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made_bridge = True
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add(self, name: str) -> Host:
        n = len(self.hosts) + 1
        ns = f"nodal-{self.tag}-{name}"
        outside, inside = f"v{self.tag}o{n}", f"v{self.tag}i{n}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        host = Host(name, ns, f"{self.subnet}.{n}", self.root / name)
        self.hosts[name] = host
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", ns)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("addr", "add", f"{host.address}/24", "dev", inside, ns=ns)
        _ip("link", "set", inside, "up", ns=ns)
        _ip("link", "set", "lo", "up", ns=ns)
        host.root.mkdir(parents=True, exist_ok=True)
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            for proc in reversed(host.procs):
                with contextlib.suppress(Exception):
                    stop(proc, grace=5)
        for n, host in enumerate(self.hosts.values(), start=1):
            subprocess.run(["ip", "link", "del", f"v{self.tag}o{n}"], check=False)
            subprocess.run(["ip", "netns", "del", host.ns], check=False)
            for folder in host.scratch:
                shutil.rmtree(folder, ignore_errors=True)
        if self._made_bridge:
            subprocess.run(["ip", "link", "del", self.bridge], check=False)

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_port(address: str, port: int, timeout: float = 60.0, proc=None) -> None:  # noqa: ANN001
    """Wait until ``address:port`` accepts a TCP connection (from the root namespace)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process for {address}:{port} exited ({proc.returncode})")
        with contextlib.suppress(OSError), socket.create_connection((address, port), 0.5):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing answered on {address}:{port} within {timeout:.0f} s")


PG_BIN = Path("/usr/lib/postgresql/15/bin")


def start_postgres(host: Host, port: int = 5432) -> str:
    """A PostgreSQL server of its own on ``host`` (initdb in the host's folder, run as the
    ``postgres`` user); returns the SQLAlchemy URL of its ``nodal`` database."""
    # The postgres user cannot enter pytest's private temporary folders: a folder of its own.
    own = Path(tempfile.mkdtemp(prefix=f"nodal-pg-{host.name}-"))
    host.scratch.append(own)
    data, pwfile = own / "data", own / "pwfile"
    pwfile.write_text("nodal\n")
    for path in (own, pwfile):
        shutil.chown(path, "postgres")
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data),
         "-U", "nodal", "--pwfile", str(pwfile), "-A", "scram-sha-256"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
    proc = host.start(
        [str(PG_BIN / "postgres"), "-D", str(data), "-h", host.address, "-p", str(port),
         "-k", str(data), "-c", "fsync=off"],
        host.root / "postgres.log",
        user="postgres",
    )  # fmt: skip
    wait_port(host.address, port, proc=proc)
    for _ in range(50):
        done = subprocess.run(
            host.command([str(PG_BIN / "createdb"), "-h", host.address, "-p", str(port),
                          "-U", "nodal", "nodal"]),
            env={**os.environ, "PGPASSWORD": "nodal"}, capture_output=True,
        )  # fmt: skip
        if done.returncode == 0:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"createdb failed: {done.stderr.decode()[-300:]}")
    return f"postgresql+psycopg://nodal:nodal@{host.address}:{port}/nodal"
