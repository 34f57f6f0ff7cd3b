"""The many-host harness itself: hosts reach each other by address and not by loopback,
and a PostgreSQL server of its own runs on one of them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa

from tests.e2e import hosts as h

pytestmark = pytest.mark.skipif(h.available() is not None, reason=str(h.available()))

FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read())"


def test_hosts_reach_each_other_by_address_not_by_loopback(tmp_path):
    with h.Hosts(tmp_path) as hosts:
        a, b = hosts.add("a"), hosts.add("b")
        (a.root / "hello.txt").write_text("from a")
        server = a.start(
            [sys.executable, "-m", "http.server", "8080", "--bind", a.address],
            a.root / "http.log",
            cwd=a.root,
        )
        h.wait_port(a.address, 8080, proc=server)
        out = b.run([sys.executable, "-c", FETCH, f"http://{a.address}:8080/hello.txt"],
                    capture_output=True, text=True)  # fmt: skip
        assert "from a" in out.stdout
        with pytest.raises(subprocess.CalledProcessError):  # b's loopback is not a's
            b.run([sys.executable, "-c", FETCH, "http://127.0.0.1:8080/hello.txt"],
                  capture_output=True)  # fmt: skip
        assert a.root != b.root


def test_a_postgresql_server_of_its_own_on_one_host(tmp_path):
    with h.Hosts(tmp_path) as hosts:
        db = hosts.add("db")
        url = h.start_postgres(db)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar() == 1
        engine.dispose()
