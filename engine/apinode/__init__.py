"""The API node: pulls its deployment and loads verified packages (``node``), validates
records and computes their features (``realtime``), keeps the query audit log and metrics
(``querylog``); its HTTP layer (Litestar, the direct lane, the httptools protocol) is
``engine.apinode.http``. The process entry point is ``engine/serving.py``.

May import ``engine.deployer`` and below; never ``engine.automation``.
"""
