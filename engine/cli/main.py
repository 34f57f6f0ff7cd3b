"""``nodal``: the command line ops, CI pipelines and ``make demo`` use.

Every command is a thin adapter over one engine function (one module per area in
``engine/cli/``). Packages add their own commands through the ``nodal.commands`` entry
point: a module with ``register(subparsers)`` (the worked example adds ``nodal data`` and
``nodal demo`` that way, so the platform never imports it).
Expected failures (bad input, a refused deployment, a failed check) are
:class:`engine.core.errors.NodalError`: they print ``error: …`` and exit 2, with no traceback.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from engine.cli import (
    api,
    bundles,
    dashboards,
    deployer,
    enrichments,
    flow,
    models,
    people,
    processes,
    projects,
    quality,
    scenarios,
)
from engine.core.errors import NodalError
from engine.core.settings import describe_settings, load_settings

EXIT_USER_ERROR = 2
COMMAND_MODULES = (
    projects,
    flow,
    quality,
    models,
    bundles,
    deployer,
    scenarios,
    dashboards,
    api,
    enrichments,
    people,
    processes,
)
PLUGIN_GROUP = "nodal.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodal",
        description="nodal: design, bundle, deploy, score in batch and real time, monitor.",
        epilog="Settings (environment):\n" + describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(top)
    for plugin in entry_points(group=PLUGIN_GROUP):
        plugin.load().register(top)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ValueError as exc:  # a NODAL_* variable with a value it cannot take
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return args.func(settings, args)
    except KeyboardInterrupt:
        return 130
    except NodalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
