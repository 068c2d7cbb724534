"""Small DuckDB helpers: one way to connect, quote identifiers and read parquet globs."""

from __future__ import annotations

import duckdb


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with UTC session time zone (naive timestamps are UTC)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def ident(name: str) -> str:
    """Quote an identifier: column names come from user specs and data, never spliced raw."""
    return '"' + name.replace('"', '""') + '"'


def parquet(param: str) -> str:
    """``read_parquet`` over a glob bound as parameter ``param`` (no hive columns, by name)."""
    return f"read_parquet(${param}, union_by_name = true, hive_partitioning = false)"


def query(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> "pl.DataFrame":
    """Run a parameterized query and return a polars frame (through Arrow, no copies of types)."""
    import polars as pl

    return pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())
