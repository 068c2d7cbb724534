"""Small DuckDB helpers: one way to connect, quote identifiers and read parquet globs."""

from __future__ import annotations

import os
import threading

import duckdb

_DATABASE: tuple[int, duckdb.DuckDBPyConnection] | None = None
_LOCK = threading.Lock()


def _database() -> duckdb.DuckDBPyConnection:
    # One in-memory database per process: opening a database costs ~20 ms here, a cursor on an
    # open one ~0.1 ms, and a sensor tick or a one-partition run opens half a dozen. Keyed by pid so
    # a forked child never shares its parent's database (DuckDB is not fork-safe).
    global _DATABASE
    with _LOCK:
        if _DATABASE is None or _DATABASE[0] != os.getpid():
            _DATABASE = (os.getpid(), duckdb.connect())
        return _DATABASE[1]


def connect() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with UTC session time zone (naive timestamps are UTC).

    A cursor on the process's in-memory database: its settings and registered frames are its own
    (connection-local), and closing it leaves the database open for the next caller. Use one
    connection per thread.
    """
    con = _database().cursor()
    con.execute("SET TimeZone = 'UTC'")
    return con


def ident(name: str) -> str:
    """Quote an identifier: column names come from user specs and data, never spliced raw."""
    return '"' + name.replace('"', '""') + '"'


def utc(expression: str) -> str:
    """A timestamp of any unit, naive (taken as UTC) or zone-aware, as a UTC ``TIMESTAMPTZ`` (us).

    DuckDB cannot compare ``TIMESTAMP_NS`` (pandas' default) with ``TIMESTAMPTZ``, and
    ``epoch_us`` rejects ``TIMESTAMPTZ_NS``; every timestamp read from a source goes through this.
    """
    return f"CAST({expression} AS TIMESTAMPTZ)"


def parquet(param: str) -> str:
    """``read_parquet`` over a glob bound as parameter ``param`` (no hive columns, by name)."""
    return f"read_parquet(${param}, union_by_name = true, hive_partitioning = false)"


def query(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> "pl.DataFrame":
    """Run a parameterized query and return a polars frame (through Arrow, no copies of types)."""
    import polars as pl

    return pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())
