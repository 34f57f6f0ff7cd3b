"""The deployer: bundles and API packages (immutable, checksummed), stages,
infrastructures, deployments with their history, the API Deployer's traffic splits, API
keys, and rollback of any deployment.

Runs on the deployer (the Console and the CLI write desired state); nodes read it. May
import ``engine.models`` and below; never a node package.
"""
