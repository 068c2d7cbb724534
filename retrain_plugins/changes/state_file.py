"""The change-detection state store's SQLite file: open, upgrade, damage checks, transactions.

:class:`StateFile` is what :class:`retrain_plugins.changes.state.StateStore` is built on: the
schema is versioned with SQLite's ``user_version`` (:mod:`retrain_plugins.changes.state_schema`
holds the SQL), an older file is upgraded in one transaction when opened, a newer one is refused,
and a damaged one is a :class:`StoreError` naming ``retrain state rebuild``. A sensor tick makes
all its writes in one :meth:`StateFile.transaction`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retrain_plugins.changes.state_schema import _CHECKED, _CORRUPT, _SCHEMA, MIGRATIONS, SCHEMA_VERSION
from retrain_plugins.errors import StoreError


class StateFile:
    """The state store's SQLite file: opened at :data:`SCHEMA_VERSION` (upgraded in one
    transaction when older, refused when newer or damaged), one connection per call or one
    transaction for a whole tick (:meth:`transaction`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tx: sqlite3.Connection | None = None
        self.created = not self.path.exists()
        with self._connect() as con:
            self._check(con)
            if self._version(con) == SCHEMA_VERSION:
                return
            # One write transaction for the whole upgrade (Python's sqlite3 would run DDL outside
            # one): a concurrent opener waits on the lock, then finds the store already upgraded.
            con.execute("BEGIN IMMEDIATE")
            version = self._version(con)
            if version == SCHEMA_VERSION:
                return
            # Version 0 is a new file, or one from before versioning that holds the version 1 tables
            # (hence IF NOT EXISTS). Statements are split on ';' (none inside a literal).
            steps = ([_SCHEMA] if version == 0 else []) + [MIGRATIONS[v] for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1)]
            for script in steps:
                for statement in filter(str.strip, script.split(";")):
                    con.execute(statement)
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _version(self, con: sqlite3.Connection) -> int:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"state store {self.path} has schema version {version}, newer than this retrain_plugins "
                f"understands ({SCHEMA_VERSION}): upgrade retrain_plugins (the store is left untouched)"
            )
        return version

    def _check(self, con: sqlite3.Connection, full: bool = False) -> None:
        """Refuse a damaged file on open: SQLite reads only the pages a query touches, so a
        truncated store would otherwise fail later, in the middle of a tick.

        On open, the tables every tick reads are checked (ms); the append-only logs (``ledger``,
        ``requests``: 120 ms at 80 MB) only with ``full`` (``retrain verify``) and, like every
        page, when a query touches a damaged one (see :meth:`_connect`).
        """
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        problems = []
        for table in sorted(tables if full else tables & _CHECKED):
            problems += [row[0] for row in con.execute(f"PRAGMA quick_check({table})") if row[0] != "ok"]
        if problems:
            raise self._corrupt("; ".join(problems[:3]))

    def check(self) -> None:
        """Check every page of every table; raise :class:`StoreError` naming the file if damaged."""
        with self._connect() as con:
            self._check(con, full=True)

    def _corrupt(self, problem: str) -> StoreError:
        return StoreError(
            f"state store {self.path} is damaged ({problem}): move it aside and run `retrain state rebuild` "
            "to rebuild the change-detection state from the data and the model store"
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Make every write inside one transaction: all of them land, or none (a killed tick).

        A sensor tick commits its listing, cells, definition, acknowledgements, request log and
        ledger this way, so a crash anywhere leaves the store as the previous tick left it.
        """
        if self._tx is not None:
            yield
            return
        with self._connect() as con:
            self._tx = con
            try:
                yield
            finally:
                self._tx = None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self._tx is not None:  # inside transaction(): its connection, its one transaction
            yield self._tx
            return
        try:
            con = sqlite3.connect(self.path, timeout=30.0)
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(str(exc)) from exc
        try:
            con.execute("PRAGMA journal_mode=WAL")
            with con:  # one transaction
                yield con
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) in _CORRUPT:
                raise self._corrupt(str(exc)) from exc
            raise
        finally:
            con.close()
