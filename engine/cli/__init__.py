"""The ``nodal`` command: ``main`` builds the parser from one module per area (projects,
flow, quality, models, bundles, deployer, scenarios, dashboards, api, processes) plus the
commands other packages register through the ``nodal.commands`` entry point. Each command
is a thin adapter over one engine call; a command given no ``--project`` acts on the
current project (``nodal project use``), never on a built-in default.

The top layer: may import any engine package.
"""
