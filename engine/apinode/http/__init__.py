"""The API node's HTTP layer: request parsing and errors (``messages``), query handlers
(``handlers``), the direct ASGI lane (``lane``), the Litestar app (``app``) and the
httptools protocol that answers queries in one write (``protocol``).

The only package of ``engine`` (with ``engine.serving``) that imports litestar.
"""
