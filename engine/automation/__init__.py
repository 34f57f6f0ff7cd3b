"""The automation node: activates deployed bundles (``node``), runs scenarios and their
steps (``scenarios``, ``runs``, ``steps``, ``step_types``), reports runs (``reporters``),
retrains, publishes dashboard extracts and evaluates models (drift and performance,
written for Monitoring to read). ``scheduler`` is what the runner schedules and when it
catches up after downtime, ``lease`` makes one runner per infrastructure the one that does
(the others stand by); the process entry point is ``engine/runner.py``.

May import ``engine.deployer`` and below; never ``engine.apinode``.
"""
