"""The project: its definitions (datasets, recipes, checks, metrics, scenarios, triggers,
models' monitoring declarations, dashboards and maps, API services) as plain files, safe
concurrent saves of them, and building its flow.

Runs wherever a project lives: the design node, and the automation node on its activated
bundles. May import ``engine.storage`` and ``engine.core``.
"""
