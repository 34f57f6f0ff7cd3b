"""Long-running processes: ``nodal runner|serve``."""

from __future__ import annotations

import argparse
from typing import Any

from engine.apinode.http.limits import LIMIT_OPTIONS, add_limit_options
from engine.cli.common import add
from engine.core.settings import Settings


def cmd_runner(s: Settings, a: argparse.Namespace) -> int:
    from engine import runner

    return runner.main(["--infra", a.infra])


def cmd_serve(s: Settings, a: argparse.Namespace) -> int:
    from engine import serving

    limits = [
        x for k, v in vars(a).items() if k in LIMITS and v is not None for x in (LIMITS[k], str(v))
    ]
    return serving.main(
        ["--infra", a.infra, "--port", str(a.port), "--host", a.host, "--workers", str(a.workers)]
        + limits
    )


LIMITS = {o.removeprefix("--").replace("-", "_"): o for o in LIMIT_OPTIONS}


def register(top: Any) -> None:
    p = add(
        top,
        "runner",
        cmd_runner,
        "Run the automation node of one infrastructure (foreground; start several for a hot "
        "standby: one holds the lease and runs).",
    )
    p.description = (
        f"{p.description} The others wait and take over within NODAL_RUNNER_LEASE_SECONDS + "
        "NODAL_RUNNER_RENEW_SECONDS when it dies."
    )
    p.add_argument("--infra", required=True)
    p = add(top, "serve", cmd_serve, "Run an API node (foreground).")
    p.add_argument("--infra", required=True)
    p.add_argument("--port", type=int, default=12000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--workers", type=int, default=1)
    add_limit_options(p)  # --max-connections, --header-timeout, … (README: Limits)
