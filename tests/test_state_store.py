"""The change-detection state store's schema is versioned, upgraded atomically, never misread."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from retrain_plugins import StoreError
from retrain_plugins.changes import state_file as state_module  # the file: schema, versions, upgrades
from retrain_plugins.changes.state import SCHEMA_VERSION, FileState, StateStore
from retrain_plugins.partitions import PartitionKey


def _version(path) -> int:
    with sqlite3.connect(path) as con:
        return con.execute("PRAGMA user_version").fetchone()[0]


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as con:
        return {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _columns(path, table: str) -> list[str]:
    with sqlite3.connect(path) as con:
        return [row[1] for row in con.execute(f"PRAGMA table_info({table})")]


def test_a_new_store_is_created_at_the_current_version(tmp_path):
    path = tmp_path / "state.sqlite"
    StateStore(path).set_meta("k", "v")
    assert _version(path) == SCHEMA_VERSION
    assert {"files", "cells", "trained", "ledger", "meta", "requests", "counters"} <= _tables(path)
    assert StateStore(path).get_meta("k") == "v"  # reopening changes nothing


def test_a_store_from_before_versioning_is_adopted_with_its_data(tmp_path):
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as con:  # what the first releases wrote: the tables, user_version 0
        con.executescript(state_module._SCHEMA)
        con.execute("INSERT INTO meta VALUES ('definition', 'abc')")
    assert _version(path) == 0
    assert StateStore(path).get_meta("definition") == "abc"
    assert _version(path) == SCHEMA_VERSION


def test_a_store_from_a_newer_version_is_refused_untouched(tmp_path):
    path = tmp_path / "state.sqlite"
    StateStore(path).set_meta("k", "v")
    with sqlite3.connect(path) as con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than .* upgrade retrain_plugins"):
        StateStore(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_migrations_run_in_order_and_keep_the_data(tmp_path, monkeypatch):
    path = tmp_path / "state.sqlite"
    StateStore(path).record_trained(PartitionKey("2025-01-01", "north"), "fp", 10, "trained", "run", "def")
    monkeypatch.setattr(state_module, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    monkeypatch.setattr(
        state_module,
        "MIGRATIONS",
        {
            SCHEMA_VERSION + 1: "ALTER TABLE trained ADD COLUMN note TEXT",
            SCHEMA_VERSION + 2: "CREATE TABLE extra (x INTEGER); INSERT INTO extra SELECT rows FROM trained",
        },
    )
    store = StateStore(path)
    assert _version(path) == SCHEMA_VERSION + 2
    assert "note" in _columns(path, "trained")
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT x FROM extra").fetchall() == [(10,)]  # the second step saw the first's data
    assert store.trained()[PartitionKey("2025-01-01", "north")].fingerprint == "fp"


def test_a_failing_migration_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "state.sqlite"
    StateStore(path).set_meta("k", "v")
    monkeypatch.setattr(state_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(
        state_module, "MIGRATIONS", {SCHEMA_VERSION + 1: "CREATE TABLE extra (x INTEGER); ALTER TABLE no_such_table ADD y"}
    )
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        StateStore(path)
    assert _version(path) == SCHEMA_VERSION and "extra" not in _tables(path)  # all or nothing
    monkeypatch.setattr(state_module, "SCHEMA_VERSION", SCHEMA_VERSION)
    assert StateStore(path).get_meta("k") == "v"


def test_a_version_3_store_is_migrated_with_its_rows(tmp_path):
    """Version 4 adds ctime_ns, inode and a content token to ``files``; rows of a version 3 store
    are kept, their new fields unknown (None), so their files are re-inspected once. Version 5
    adds the acknowledged baselines, version 7 the ingested event ids, both empty (a version 6
    cursor was the newest id read: every id below it was applied, what a settled cursor means)."""
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as con:  # what the version 3 code wrote
        con.executescript(state_module._SCHEMA)
        for version in (2, 3):
            con.executescript(state_module.MIGRATIONS[version])
        con.execute("INSERT INTO files VALUES ('labels', '/d/a.parquet', 10, 20, 1, 2)")
        con.execute("INSERT INTO online_files VALUES ('fv', '/d/f.parquet', 30, 40)")
        con.execute("INSERT INTO cells VALUES ('2025-01-01', 'north', 5, 'dg', 'lab')")
        con.execute("INSERT INTO counters VALUES ('tick', 7)")
        con.execute("PRAGMA user_version = 3")
    store = StateStore(path)
    store.record_trained(PartitionKey("2025-01-01", "north"), "fp", 5, "trained", "run", "def")
    assert _version(path) == SCHEMA_VERSION == 7
    assert store.acknowledged() == {} and store.ingested() == {}
    assert {"ctime_ns", "inode", "token"} <= set(_columns(path, "files"))
    assert store.files() == {("labels", "/d/a.parquet"): FileState(10, 20, 1, 2, None, None, None)}
    assert store.cells() == {("2025-01-01", "north"): (5, "dg")}
    assert store.next_seq() == 8
    assert store.scans() == 0


def test_file_states_round_trip_and_count_the_passes(tmp_path):
    store = StateStore(tmp_path / "state.sqlite")
    state = FileState(10, 20, 1, 2, 30, 40, "ab" * 32)
    store.save_files({("labels", "/d/a.parquet"): state})
    store.save_files({})
    assert store.files() == {("labels", "/d/a.parquet"): state} and store.scans() == 2
    store.refresh_files({("labels", "/d/a.parquet"): (31, 41)})
    assert store.files()[("labels", "/d/a.parquet")] == state._replace(ctime_ns=31, inode=41)
    assert store.scans() == 2  # a refresh is not a pass


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "truncated to its header"])
def test_a_damaged_store_raises_store_error_naming_the_file_and_the_fix(tmp_path, damage):
    path = tmp_path / "state.sqlite"
    store = StateStore(path)
    store.save_files({("labels", f"/d/{i:06d}.parquet"): FileState(i, i, i, i, i, i, "t" * 64) for i in range(2000)})
    data = path.read_bytes()
    assert not (tmp_path / "state.sqlite-wal").exists()  # the last connection checkpointed
    path.write_bytes(
        {"random bytes": os.urandom(len(data)), "truncated": data[: len(data) // 2], "truncated to its header": data[:100]}[damage]
    )
    with pytest.raises(StoreError, match=f"state store {path} is damaged .*retrain state rebuild"):
        StateStore(path)
