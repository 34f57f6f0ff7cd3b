"""nodal engine: the shared library under every nodal process (no UI code here).

One subpackage per part of the node architecture, layered top to bottom (a package may
import only the ones below it; ``a | b`` are independent of each other). The contracts are
written once, in ``[tool.importlinter]`` of pyproject.toml, and ``make test`` checks them:

    cli                           the ``nodal`` command
    runner | serving              the two process entry points (shims)
    design | monitoring           the design node; the monitoring pages' engine
    automation | apinode          the automation node; the API node
    deployer                      bundles, API packages, infrastructures, deployments
    models                        saved models, compiled forests, batch scoring
    project                       a project's definitions and how a flow builds them
    storage                       the only modules that open databases
    core                          settings, home layout, errors, artifacts
"""

__version__ = "0.1.0"
