"""What runs trained, read back from Dagster's event log into the change sensor's state.

One writer per fact: a run records what each partition's model now answers in its own records,
the ``sub_model`` materialization metadata (trained, rejected, skipped) or, for a partition that
failed and so is not materialized, an ``AssetObservation``, both with the training set's
``fingerprint``, ``status``, ``definition`` and the requesting tick (``sensor_seq``). The sensor
reads the events it has not applied yet at the start of every tick and writes its own copy.
Nothing is lost to a crash: an event is read until the tick that read it commits, and a run that
died before its event is an unsettled partition the sensor asks for again. It works against any
instance storage (SQLite, Postgres) and across hosts.

The cursor lags where it must. Storage ids are allocated when an event is inserted, not when it
commits: on Postgres, with runs writing at once, id 41 can commit after id 42 was read. So the
cursor is not "the newest id read" but the newest id that was read at least :data:`SETTLE_SECONDS`
ago (every lower id was allocated before it and has committed since, or it never will); events
above it are read again at every tick and the ``ingested`` ids in the state say which were
applied. SQLite storages commit in id order (an insert holds the database's write lock until it
commits), so there the cursor settles at once and nothing is read twice: re-reading the last
minute's events cost a tick 70 ms after a 48-partition build, ~1.4 s at 1,008.
"""

from __future__ import annotations

import time

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
from dagster._core.storage.event_log import ConsolidatedSqliteEventLogStorage, InMemoryEventLogStorage, SqliteEventLogStorage

from retrain_plugins.changes.state import StateStore
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.spec import RetrainingSpec

CURSOR = "outcomes_storage_id"  # state meta: every event at or below this storage id was applied
# How long an event insert may stay uncommitted after its storage id was allocated (Dagster writes
# one event per autocommitted statement: milliseconds, seconds on a loaded database).
SETTLE_SECONDS = 60.0
_IN_ORDER = (SqliteEventLogStorage, ConsolidatedSqliteEventLogStorage, InMemoryEventLogStorage)


def settle_seconds(instance: DagsterInstance) -> float:
    """How far the cursor lags on ``instance``'s event storage: 0 where ids commit in order (SQLite)."""
    return 0.0 if isinstance(instance.event_log_storage, _IN_ORDER) else SETTLE_SECONDS
_PAGE = 1000


def _events(instance: DagsterInstance, asset_key: AssetKey, after: int) -> list[tuple[int, float, str, dict]]:
    """(storage id, timestamp, partition, metadata) of the asset's materializations and
    observations after ``after``, oldest first."""
    found = []
    for fetch in (instance.fetch_materializations, instance.fetch_observations):
        cursor = None
        while True:
            result = fetch(AssetRecordsFilter(asset_key=asset_key, after_storage_id=after), limit=_PAGE, cursor=cursor, ascending=True)
            for record in result.records:
                event = record.asset_materialization or record.asset_observation
                if event is None or event.partition is None:
                    continue
                metadata = {name: value.value for name, value in event.metadata.items()}
                found.append((record.storage_id, record.timestamp, event.partition, metadata))
            if not result.has_more:
                break
            cursor = result.cursor
    return sorted(found, key=lambda item: item[0])


def refresh_state(spec: RetrainingSpec, state: StateStore, instance: DagsterInstance | None) -> StateStore:
    """``state`` with what runs recorded in ``instance`` since the sensor last read it (for tools
    that report the sensor's view between ticks: ``retrain status``, ``explain``, ``savings``)."""
    if instance is not None:
        with state.transaction():
            ingest_outcomes(state, instance, AssetKey([spec.name, "sub_model"]))
    return state


def ingest_outcomes(
    state: StateStore, instance: DagsterInstance, asset_key: AssetKey, now: float | None = None, settle: float | None = None
) -> int:
    """Copy the outcomes runs recorded since the last call into ``state``; return how many.

    An event older than what ``state`` already holds for its partition (a state rebuilt from the
    model store after it) does not overwrite it. Call inside the tick's transaction. ``now`` is
    the clock and ``settle`` the cursor's lag (default :func:`settle_seconds`); tests set both.
    """
    now = time.time() if now is None else now  # before the read: the settle rule needs it so
    settle = settle_seconds(instance) if settle is None else settle
    settled = int(state.get_meta(CURSOR) or 0)
    events = _events(instance, asset_key, settled)
    if not events:
        return 0
    seen = state.ingested()
    fresh = [event for event in events if event[0] not in seen]
    seen.update((event[0], now) for event in fresh)
    # Every id below one first read ``settle`` s before this read has committed by now, and
    # this read saw it: the cursor moves to the newest such id.
    settled = max([settled, *(storage_id for storage_id, at in seen.items() if at <= now - settle)])
    trained = state.trained()
    applied = 0
    for storage_id, timestamp, partition, meta in fresh:
        if not isinstance(meta.get("status"), str) or not isinstance(meta.get("fingerprint"), str):
            continue  # not one of ours (a materialization reported by other means)
        key = PartitionKey.from_dagster(partition)
        if (current := trained.get(key)) is None or current.trained_at <= timestamp:
            state.record_trained(
                key, meta["fingerprint"], int(meta.get("rows") or 0), meta["status"], meta.get("run_id"),
                meta.get("definition") or "", meta.get("training_seconds"), meta.get("error"), trained_at=timestamp,
            )
            applied += 1
        if isinstance(meta.get("sensor_seq"), int):
            state.record_outcome(meta["sensor_seq"], key, meta["status"], meta.get("run_id"), at=timestamp)
    state.record_ingested([event[0] for event in fresh], now, settled)
    state.set_meta(CURSOR, str(settled))
    return applied
