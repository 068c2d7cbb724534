"""The sensor reads what runs recorded from Dagster's event log, and misses none of it.

Storage ids are allocated at insert, not at commit: on PostgreSQL an event can commit after one
with a higher id was read. The test below makes that happen for real (an insert held open in a
transaction of its own while the instance writes a later event) and checks the sensor's state
still gets the earlier event, once. The others check, on a SQLite instance, that events re-read
while the cursor lags are applied once and that the cursor settles.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy
from dagster import AssetKey, AssetMaterialization, DagsterInstance
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

from retrain_plugins.changes.state import StateStore
from retrain_plugins.dagster.outcomes import CURSOR, SETTLE_SECONDS, ingest_outcomes, settle_seconds
from retrain_plugins.partitions import PartitionKey

from .postgres import write_postgres_instance

SUB_MODEL = AssetKey(["churn", "sub_model"])
EARLY, LATE = PartitionKey("2025-01-01", "north"), PartitionKey("2025-02-01", "south")


def _outcome(key: PartitionKey, fingerprint: str, seq: int) -> AssetMaterialization:
    """What a run records for a trained partition (the fields the sensor reads)."""
    metadata = {"status": "trained", "fingerprint": fingerprint, "rows": 10, "definition": "d", "sensor_seq": seq}
    return AssetMaterialization(asset_key=SUB_MODEL, partition=key.to_dagster(), metadata=metadata)


def _entry(materialization: AssetMaterialization) -> EventLogEntry:
    """The event log entry ``report_runless_asset_event`` stores for ``materialization``."""
    event = DagsterEvent(
        DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name=RUNLESS_JOB_NAME,
        event_specific_data=StepMaterializationData(materialization),
    )
    return EventLogEntry(None, logging.INFO, "", RUNLESS_RUN_ID, time.time(), dagster_event=event)


def _ingest(state: StateStore, instance: DagsterInstance, now: float | None = None, settle: float | None = None) -> int:
    with state.transaction():
        return ingest_outcomes(state, instance, SUB_MODEL, now=now, settle=settle)


def _outcome_rows(state: StateStore) -> list[tuple]:
    with state._connect() as con:
        return con.execute("SELECT seq, window, cohort, status FROM outcomes ORDER BY seq").fetchall()


def test_an_event_committed_after_a_newer_one_was_read_is_still_applied(postgres, tmp_path, monkeypatch):
    db = postgres.create_database("outcomes_out_of_order")
    for name, value in postgres.env(db).items():
        monkeypatch.setenv(name, value)
    home = write_postgres_instance(tmp_path / "dagster_home")
    state = StateStore(tmp_path / "state.sqlite")
    engine = sqlalchemy.create_engine(postgres.url(db))
    with DagsterInstance.from_config(str(home)) as instance, engine.connect() as held:
        # a run's insert: its id is allocated now, its transaction commits later
        transaction = held.begin()
        held.execute(instance.event_log_storage.prepare_insert_event(_entry(_outcome(EARLY, "early-fp", 1))))
        instance.report_runless_asset_event(_outcome(LATE, "late-fp", 2))  # a higher id, committed
        assert settle_seconds(instance) == SETTLE_SECONDS  # ids may commit out of order here
        assert _ingest(state, instance) == 1
        assert set(state.trained()) == {LATE}
        transaction.commit()

        rows = postgres.query(db, "SELECT partition FROM event_logs WHERE asset_key IS NOT NULL ORDER BY id")
        # the held insert has the lower id: it committed after the higher one was read
        assert [PartitionKey.from_dagster(p) for (p,) in rows] == [EARLY, LATE]
        assert _ingest(state, instance) == 1
        assert state.trained()[EARLY].fingerprint == "early-fp" and state.trained()[LATE].fingerprint == "late-fp"
        assert _ingest(state, instance) == 0  # both read again while the cursor lags, applied once
        assert _outcome_rows(state) == [(1, "2025-01-01", "north", "trained"), (2, "2025-02-01", "south", "trained")]
    engine.dispose()


def test_the_cursor_settles_once_nothing_older_can_still_commit(tmp_path):
    """The lag as on Postgres (``settle=SETTLE_SECONDS``), on a SQLite instance's real events."""
    state = StateStore(tmp_path / "state.sqlite")
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        instance.report_runless_asset_event(_outcome(EARLY, "fp-1", 1))
        first_read, lag = time.time(), SETTLE_SECONDS
        assert _ingest(state, instance, now=first_read, settle=lag) == 1
        assert _ingest(state, instance, now=first_read + 1, settle=lag) == 0  # read again, not applied again
        assert int(state.get_meta(CURSOR) or 0) == 0 and len(state.ingested()) == 1

        instance.report_runless_asset_event(_outcome(LATE, "fp-2", 2))
        assert _ingest(state, instance, now=first_read + lag, settle=lag) == 1
        # the first event was read SETTLE_SECONDS ago: the cursor moves to it, the newer stays re-read
        (newer,) = state.ingested()
        assert 0 < int(state.get_meta(CURSOR)) < newer
        assert _ingest(state, instance, now=first_read + 2 * lag, settle=lag) == 0
        assert state.ingested() == {}
        assert _ingest(state, instance, now=first_read + 3 * lag, settle=lag) == 0
        assert [row[:3] for row in _outcome_rows(state)] == [(1, "2025-01-01", "north"), (2, "2025-02-01", "south")]


def test_on_sqlite_the_cursor_settles_at_once(tmp_path):
    """SQLite commits event ids in order: nothing is read twice (a tick after a 1,008-partition
    build would otherwise re-read every one of its events for a minute)."""
    state = StateStore(tmp_path / "state.sqlite")
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        assert settle_seconds(instance) == 0
        for i, key in enumerate((EARLY, LATE)):
            instance.report_runless_asset_event(_outcome(key, f"fp-{i}", i))
        assert _ingest(state, instance) == 2
        assert state.ingested() == {} and int(state.get_meta(CURSOR)) > 0
        assert _ingest(state, instance) == 0
