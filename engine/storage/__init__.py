"""Storage: the only two modules that open databases: Parquet datasets via DuckDB
(``datasets``) and the control store via SQLAlchemy (``control``).

Runs in every process. May import ``engine.core`` only.
"""
