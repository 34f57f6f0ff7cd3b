"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from engine.core.settings import Settings


def store(settings: Settings):  # noqa: ANN201 - keeps sqlalchemy out of --help
    from engine.storage.control import open_store

    return open_store(settings.control_store_url)


def print_rows(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain text table, one line per row."""
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """``name=value`` options (``what`` names the option in the error) as a dict."""
    from engine.core.errors import NodalError

    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise NodalError(f"{what} {item!r}: write it as name=value")
        out[key.strip()] = value.strip()
    return out


def add(
    sub: Any, name: str, fn: Callable[[Settings, argparse.Namespace], int], help: str
) -> argparse.ArgumentParser:
    """Add a sub-command whose handler is ``fn(settings, args) -> exit code``."""
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(func=fn)
    return p
