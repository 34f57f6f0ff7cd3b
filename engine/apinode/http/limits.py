"""What one API node worker grants one client connection (engine/apinode/http/protocol.py
enforces it; the values are settings: NODAL_API_MAX_CONNECTIONS, NODAL_API_MAX_PIPELINE,
NODAL_API_HEADER_TIMEOUT, NODAL_API_BODY_TIMEOUT)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from engine.core.settings import Settings


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-worker connection cap, per-connection pipelining cap and receive deadlines."""

    max_connections: int
    max_pipeline: int
    header_timeout: float  # seconds from a request's first byte (or the connection) to its headers
    body_timeout: float  # seconds from the headers to the end of the body; also how long a
    # client may leave answers unread while the worker holds its connection's writes

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_connections=settings.api_max_connections,
            max_pipeline=settings.api_max_pipeline,
            header_timeout=settings.api_header_timeout,
            body_timeout=settings.api_body_timeout,
        )


DEFAULT_LIMITS = ConnectionLimits.from_settings(Settings())


# ``nodal serve`` options for the connection limits: each sets its NODAL_API_* setting for
# the workers (engine/apinode/http/limits.py; README "Limits").
LIMIT_OPTIONS = {
    "--max-connections": ("api_max_connections", int),
    "--max-pipeline": ("api_max_pipeline", int),
    "--header-timeout": ("api_header_timeout", float),
    "--body-timeout": ("api_body_timeout", float),
}


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    settings = {f.name: f for f in fields(Settings)}
    for option, (name, kind) in LIMIT_OPTIONS.items():
        f = settings[name]
        parser.add_argument(
            option,
            type=kind,
            default=None,
            help=f"{f.metadata['help']} Sets {f.metadata['env']} (default {f.default}).",
        )


def limit_environ(args: argparse.Namespace) -> dict[str, str]:
    """The NODAL_API_* variables the limit options given on the command line set."""
    settings = {f.name: f for f in fields(Settings)}
    out = {}
    for option, (name, _) in LIMIT_OPTIONS.items():
        value = getattr(args, option.removeprefix("--").replace("-", "_"))
        if value is not None:
            out[settings[name].metadata["env"]] = str(value)
    return out
