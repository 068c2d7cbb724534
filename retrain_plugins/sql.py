"""Small DuckDB helpers: one way to connect, quote identifiers and read parquet globs."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import duckdb

from retrain_plugins.remote import is_remote, protocol, reading_filesystem

if TYPE_CHECKING:
    import polars as pl

# (pid, database, protocol -> the fsspec filesystem registered on that database for it)
_DATABASE: tuple[int, duckdb.DuckDBPyConnection, dict] | None = None
_LOCK = threading.Lock()


def _database() -> tuple[duckdb.DuckDBPyConnection, dict]:
    # One in-memory database per process: opening a database costs ~20 ms here, a cursor on an
    # open one ~0.1 ms, and a sensor tick or a one-partition run opens half a dozen. Keyed by pid so
    # a forked child never shares its parent's database (DuckDB is not fork-safe).
    global _DATABASE
    with _LOCK:
        if _DATABASE is None or _DATABASE[0] != os.getpid():
            _DATABASE = (os.getpid(), duckdb.connect(), {})
        return _DATABASE[1], _DATABASE[2]


def _flatten(paths: Iterable) -> Iterable[str]:
    for path in paths:
        if isinstance(path, (list, tuple, set, frozenset)):
            yield from _flatten(path)
        elif path is not None:
            yield str(path)


def register_filesystems(paths: Iterable) -> None:
    """Make the process's DuckDB database read ``paths`` that are fsspec URLs (``s3://...``).

    Each remote URL's fsspec filesystem (:func:`retrain_plugins.remote.reading_filesystem`) is
    registered with ``register_filesystem`` once per protocol; DuckDB then lists globs and reads files through
    it. No extension (httpfs) is loaded or downloaded. Registration is database-wide: every later
    cursor of the process reads that protocol too. Local paths need nothing.
    """
    remote = list({protocol(p): p for p in _flatten(paths) if is_remote(p)}.values())  # one URL per protocol
    if not remote:
        return
    database, registered = _database()
    for url in remote:
        fs = reading_filesystem(url)
        names = [fs.protocol] if isinstance(fs.protocol, str) else list(fs.protocol)
        with _LOCK:
            if registered.get(names[0]) is fs:
                continue
            # Another instance of this protocol's filesystem (configuration changed, fsspec's cache
            # cleared): DuckDB names a filesystem by its first protocol and refuses to register a
            # second one under the same name, so the old one goes.
            if database.filesystem_is_registered(names[0]):
                database.unregister_filesystem(names[0])
            database.register_filesystem(fs)
            registered[names[0]] = fs


_HELD = threading.local()


@contextlib.contextmanager
def listings_held() -> Iterator[None]:
    """Inside it, this thread's connections keep the object-store listings already taken.

    For one step that reads the same sources for many partitions (a training run): each glob is
    listed once for the step, not once per connection (measured on moto, a 12-partition run: 346
    LIST requests, 52 held, validation's folder listings included), and every partition reads the
    same listing. What a run reads is what it records (each partition's fingerprint), so an object
    that lands meanwhile is seen by the sensor's next tick, which lists afresh. Listings are the
    filesystem's, shared by the process: a connection opened outside this (another thread) still
    empties them, which costs this step a listing again, never a stale one.
    """
    _HELD.depth = getattr(_HELD, "depth", 0) + 1
    try:
        yield
    finally:
        _HELD.depth -= 1


def connect(*paths: str | Iterable[str]) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with UTC session time zone (naive timestamps are UTC).

    A cursor on the process's in-memory database: its settings and registered frames are its own
    (connection-local), and closing it leaves the database open for the next caller. Use one
    connection per thread, and one per read: an object-store glob is listed once per connection.
    ``paths`` (globs, files or lists of them) are what the caller will read: those that are fsspec
    URLs get their filesystem registered (:func:`register_filesystems`).
    """
    register_filesystems(paths)
    database, registered = _database()
    # What this connection reads is listed after it opened: listings cached for an earlier
    # connection are dropped (a source's new objects are never missed), and the listings this one's
    # globs take answer its reads' metadata requests. Copied under the lock: another thread may be
    # registering a filesystem (a code server answers several calls at once).
    if not getattr(_HELD, "depth", 0):
        with _LOCK:
            remote = list(registered.values())
        for fs in remote:
            fs.invalidate_cache()
    con = database.cursor()
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
