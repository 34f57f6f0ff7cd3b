"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.core.settings import Settings


def store(settings: Settings):  # noqa: ANN201 - keeps sqlalchemy out of --help
    """The control store; on a home with no account yet, ``NODAL_USER`` becomes its first
    administrator (said on stderr): the CLI then acts as that person, checked like anyone."""
    import sys

    from engine.access import accounts
    from engine.storage.control import open_store

    control = open_store(settings.control_store_url)
    if not accounts.has_users(control) and accounts.bootstrap_admin(control, settings.user):
        print(
            f"nodal: this home had no account; {settings.user} (NODAL_USER) is now its "
            "administrator",
            file=sys.stderr,
        )
    return control


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


PROJECT_HELP = "the project (default: the current project, see `nodal project use`)"


def add_project(p: argparse.ArgumentParser, help: str = PROJECT_HELP) -> None:
    """The ``--project NAME`` option (none given: the current project)."""
    p.add_argument("--project", metavar="NAME", help=help)


def project_name(s: Settings, a: argparse.Namespace) -> str:
    """``--project``, else the current project, else a one-line error naming both ways."""
    from engine.design import selection

    return choose(
        "pass --project NAME or set one with nodal project use NAME",
        selection.project_name,
        s.home,
        a.project,
    )


def open_project(s: Settings, a: argparse.Namespace):  # noqa: ANN201 - Project, imported lazily
    """The design project of ``--project`` (else the current project)."""
    from engine.core import home as layout
    from engine.core.errors import NodalError
    from engine.design import projects as design

    name = project_name(s, a)
    if not a.project and not layout.design_project(s.home, name).exists():
        raise NodalError(
            f"the current project {name!r} is not on the design node any more: "
            "choose another with nodal project use NAME (or pass --project NAME)"
        )
    if not layout.design_project(s.home, name).exists():
        return design.open_project(s, name)  # names what is missing
    return design.open_as(s, store(s), s.user, name)  # acts as NODAL_USER, checked


def choose(how: str, fn: Callable[..., str], *args: Any) -> str:
    """``fn(*args)`` (an ``engine.design.selection`` lookup); its refusal gets ``: how``."""
    from engine.design import selection

    try:
        return fn(*args)
    except selection.SelectionError as exc:
        raise selection.SelectionError(f"{exc}: {how}") from None


def read_text_file(path: str) -> str:
    """A definition file given on the command line (``-``: standard input)."""
    import sys

    from engine.core.errors import NodalError

    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise NodalError(f"cannot read {path}: {exc.strerror or exc}") from None


def add(
    sub: Any, name: str, fn: Callable[[Settings, argparse.Namespace], int], help: str
) -> argparse.ArgumentParser:
    """Add a sub-command whose handler is ``fn(settings, args) -> exit code``."""
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(func=fn)
    return p
