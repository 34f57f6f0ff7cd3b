"""The only two modules that open databases: Parquet datasets via DuckDB, and the control store."""
