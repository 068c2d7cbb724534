"""The state store's schema, its migrations and the records it returns.

:data:`SCHEMA_VERSION` is what the code writes; :data:`MIGRATIONS` holds the SQL that takes a
store from version ``n - 1`` to ``n`` (append; never edit a released step).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping
from typing import NamedTuple

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    source TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ts_min INTEGER, ts_max INTEGER, PRIMARY KEY (source, path));
CREATE TABLE IF NOT EXISTS cells (
    window TEXT NOT NULL, cohort TEXT NOT NULL, rows INTEGER NOT NULL, digest TEXT NOT NULL,
    PRIMARY KEY (window, cohort));
CREATE TABLE IF NOT EXISTS trained (
    window TEXT NOT NULL, cohort TEXT NOT NULL, fingerprint TEXT NOT NULL, rows INTEGER NOT NULL,
    status TEXT NOT NULL, run_id TEXT, trained_at REAL NOT NULL, definition TEXT NOT NULL,
    training_seconds REAL, error TEXT, PRIMARY KEY (window, cohort));
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER NOT NULL, at REAL NOT NULL, requested INTEGER NOT NULL, skipped INTEGER NOT NULL,
    seconds_avoided REAL NOT NULL, reasons TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER NOT NULL, window TEXT NOT NULL, cohort TEXT NOT NULL, reason TEXT NOT NULL,
    fingerprint TEXT NOT NULL, detail TEXT, requested_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
SCHEMA_VERSION = 7
# version n -> the SQL that migrates a version n - 1 store (append; never edit a released step)
MIGRATIONS: dict[int, str] = {
    # 2: each cell's label digest (its label rows alone), so a label-only change is narrowed to the
    # cells whose labels changed before any feature join. NULL (a migrated cell) means "unknown".
    2: "ALTER TABLE cells ADD COLUMN label_digest TEXT",
    # 3: the feature files the online store was last loaded from, so appended files load alone.
    3: "CREATE TABLE online_files (source TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, "
    "mtime_ns INTEGER NOT NULL, PRIMARY KEY (source, path))",
    # 4: git's other index fields and a content token per source file, so an edit that keeps size
    # and mtime (cp -p, rsync -t, tar x) is seen. NULL (a migrated row) means "unknown": the file is
    # re-inspected once and its fingerprints decide.
    4: "ALTER TABLE files ADD COLUMN ctime_ns INTEGER; ALTER TABLE files ADD COLUMN inode INTEGER; "
    "ALTER TABLE files ADD COLUMN token TEXT",
    # 5: per partition, a data fingerprint accepted without a run (a definition change under
    # mark_stale, a rollback): the baseline its later changes are measured from, until it is trained.
    5: "CREATE TABLE acknowledged (window TEXT NOT NULL, cohort TEXT NOT NULL, fingerprint TEXT NOT NULL, "
    "at REAL NOT NULL, PRIMARY KEY (window, cohort))",
    # 6: what each requested partition's run ended with (the sensor's copy of the run's event, keyed
    # by the tick that requested it): the savings ledger counts promoted, rejected, failed and skipped apart.
    6: "CREATE TABLE outcomes (seq INTEGER NOT NULL, window TEXT NOT NULL, cohort TEXT NOT NULL, "
    "status TEXT NOT NULL, run_id TEXT, at REAL NOT NULL)",
    # 7: run events read above the settled cursor (:mod:`retrain_plugins.dagster.outcomes`): the
    # recent storage ids are re-read every tick, these say which were applied already.
    7: "CREATE TABLE ingested (storage_id INTEGER PRIMARY KEY, seen_at REAL NOT NULL)",
}
SCANS = "file_scan"  # counters row: detection passes whose file states were committed (full_check_every)
_FILE_COLUMNS = "size, mtime_ns, ts_min, ts_max, ctime_ns, inode, token"
# SQLite's result codes for a file that is not a database or whose pages are damaged
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_CHECKED = {"files", "cells", "trained", "meta", "counters", "online_files"}  # read by every tick


def in_region(region: Mapping[str, Collection[str] | None], cell: tuple[str, str]) -> bool:
    """Whether a (window, cohort) cell lies in ``region`` (window -> its cohorts, None: all of them)."""
    window, cohort = cell
    return window in region and (region[window] is None or cohort in region[window])


class FileState(NamedTuple):
    size: int
    mtime_ns: int
    ts_min: int | None  # microseconds since epoch of the file's first and last timestamp
    ts_max: int | None
    ctime_ns: int | None = None  # None: recorded before schema version 4 (unknown)
    inode: int | None = None
    token: str | None = None  # content digest (sources.content_token), None: unknown


class Trained(NamedTuple):
    fingerprint: str
    rows: int
    status: str
    run_id: str | None
    trained_at: float
    definition: str
    training_seconds: float | None
    error: str | None


class LedgerRow(NamedTuple):
    seq: int
    at: float
    requested: int
    skipped: int
    seconds_avoided: float
    reasons: str
