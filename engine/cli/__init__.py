"""The ``nodal`` command: ``main`` builds the parser from one module per area (projects,
flow, quality, models, bundles, deployer, scenarios, api, processes) plus the commands
other packages register through the ``nodal.commands`` entry point. Each command is a
thin adapter over one engine call.

The top layer: may import any engine package.
"""
