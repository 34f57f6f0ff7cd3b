"""The design node: projects (create, open, run a scenario here), dataset import and
profiling, the Lab (train and compare models), bundle contents (data and model versions,
diff, revert) and the API Designer (test queries, dev service).

Runs behind the Design Studio and the CLI. May import the node packages it prepares work
for (``automation``, ``apinode``) and everything below them; never ``engine.monitoring``.
"""
