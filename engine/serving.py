"""The API node process: ``nodal serve`` (``python -m engine.serving --infra ID``).

A shim, as thin as mlflow's scoring-server one: parse the options, then run uvicorn on the
app factory :func:`engine.apinode.http.app.app_from_env` (the API node's HTTP layer lives
in ``engine/apinode/http/``). ``python -m engine.serving dev …`` runs the Design Studio's
dev server: a design project's API service as it is now, with no package or deployer.
"""

from __future__ import annotations

import argparse
import os
import sys

from engine.apinode.http.app import configure_logging, create_dev_app, server_options
from engine.apinode.http.limits import add_limit_options, limit_environ
from engine.core.settings import describe_settings, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodal serve",
        description="Run an API node: serve the API services deployed to one apinode infrastructure.",
        epilog="Settings (environment):\n" + describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--infra", required=True, help="apinode infrastructure id (nodal infra list)"
    )
    parser.add_argument("--port", type=int, default=12000, help="TCP port (default 12000)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    add_limit_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    configure_logging()
    os.environ["NODAL_API_INFRA"] = args.infra
    os.environ.update(limit_environ(args))
    try:
        load_settings()  # a bad limit is a clear error here, not in every worker
    except ValueError as exc:
        print(f"nodal serve: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        "engine.apinode.http.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        log_config=None,
        # No X-Forwarded-* rewriting (nothing here uses the client address), so uvicorn hands
        # the protocol the app itself and queries take the direct lane (apinode/http/protocol.py).
        proxy_headers=False,
        **server_options(),
    )
    return 0


def dev_main(argv: list[str] | None = None) -> int:
    """``python -m engine.serving dev --project P --service S --port N``: the dev server."""
    import tempfile
    from pathlib import Path

    import uvicorn

    from engine.design import apidesigner
    from engine.design import projects as design

    parser = argparse.ArgumentParser(
        prog="nodal api dev-server",
        description="Serve a design project's API service as it is now (no package, no deployer).",
    )
    parser.add_argument("--project", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--port", type=int, default=12100)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    settings = load_settings()
    project = design.open_project(settings, args.project)
    with tempfile.TemporaryDirectory() as tmp:
        endpoints = apidesigner.dev_service(project, args.service, Path(tmp))
        app = create_dev_app(settings, args.service, endpoints)
        configure_logging()
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    raise SystemExit(dev_main(args[1:]) if args[:1] == ["dev"] else main(args))
