"""Reconciliation: every partition whose data differs from what its model was trained on.

A tick's file diff finds what changed *since the last tick*; that alone would lose a change for
good when a tick dies after recording what it saw but before Dagster received its requests, or
when a run fails or is killed. So each tick also compares, for every partition, the fingerprint of
its data now (from the observed cells, no data read) with the one its sub-model was trained on,
and re-requests any that differ (reason ``retry``). Which of those are really requested is the
sensor's call: not while a run for it is in flight, and with a bounded number of attempts and
exponential backoff per (partition, fingerprint) (:func:`admit`).

Partitions stale only because the definition changed (policy ``mark_stale``), or rolled back to an
older model by hand, are measured from the fingerprint their data had then (*acknowledged*), not
from the one their model was trained on: a definition change never turns into a full retrain on a
later tick, and a rollback is not undone by the next tick.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from typing import NamedTuple

from retrain_plugins.changes.fingerprints import EMPTY, Cell, partition_fingerprint
from retrain_plugins.changes.state import Trained
from retrain_plugins.partitions import PartitionKey, training_windows
from retrain_plugins.spec_changes import RetrySpec

RETRY = "retry"
SETTLED = ("trained", "rejected", "skipped")  # outcomes that answer a fingerprint for good


def settled(
    record: Trained | None, fingerprint: str, definition: str, acknowledged: tuple[str, float] | None
) -> bool:
    """Whether a partition whose data has ``fingerprint`` needs no run.

    ``acknowledged``: (fingerprint, when) accepted without a run: the data at a definition change
    under ``mark_stale``, or at a rollback to an older model (a human chose what serves this data).
    It holds until the partition is trained again.
    """
    if fingerprint == EMPTY:
        return record is None or record.fingerprint == EMPTY
    if record is None:
        return False
    if acknowledged is not None and acknowledged[1] >= record.trained_at:
        return acknowledged[0] == fingerprint
    if record.definition != definition:
        return True  # stale by a definition change seen before baselines were kept: changed cells decide
    return record.fingerprint == fingerprint and record.status in SETTLED


class Unsettled(NamedTuple):
    partition: PartitionKey
    fingerprint: str
    rows: int
    detail: str


def unsettled(
    cells: Mapping[tuple[str, str], Cell],
    trained: Mapping[PartitionKey, Trained],
    acknowledged: Mapping[PartitionKey, tuple[str, float]],
    definition: str,
    window_keys: list[str],
    cohorts: Iterable[str],
    lookback: int,
    skip: Collection[PartitionKey] = (),
    held_windows: Collection[str] = (),
) -> list[Unsettled]:
    """Every partition (of ``cohorts``, outside ``held_windows`` and ``skip``) that is not settled."""
    found = []
    for window in window_keys:
        if window in held_windows:
            continue
        span = training_windows(window, window_keys, lookback)
        for cohort in cohorts:
            key = PartitionKey(window, cohort)
            if key in skip:
                continue
            fingerprint = partition_fingerprint(cells, span, cohort)
            record = trained.get(key)
            if settled(record, fingerprint, definition, acknowledged.get(key)):
                continue
            rows = sum(cells[(w, cohort)].rows for w in span if (w, cohort) in cells)
            if record is not None and record.status == "failed" and record.fingerprint == fingerprint:
                detail = f"its last run failed on this data: {record.error}"
            else:
                detail = f"{rows} rows differ from what its model was trained on (a request lost, or a run that did not finish)"
            found.append(Unsettled(key, fingerprint, rows, detail))
    return found


def with_data(
    cells: Mapping[tuple[str, str], Cell], window_keys: list[str], cohorts: Iterable[str], lookback: int
) -> set[PartitionKey]:
    """The partitions (of ``cohorts``) whose training data in ``cells`` is not empty."""
    return {
        PartitionKey(window, cohort)
        for window in window_keys
        for cohort in cohorts
        if partition_fingerprint(cells, training_windows(window, window_keys, lookback), cohort) != EMPTY
    }


class Admission(NamedTuple):
    admitted: list  # the changes to request now, each with its attempt number
    in_flight: list[PartitionKey]  # a run for it is queued or running
    waiting: list[tuple[PartitionKey, float]]  # backing off: seconds until the next attempt
    gave_up: list[PartitionKey]  # max_attempts reached for this data


def admit(
    changes: Iterable,
    in_flight: Collection[PartitionKey],
    attempts: Mapping[tuple[PartitionKey, str], tuple[int, float]],
    retry: RetrySpec,
    now: float | None = None,
    trained: Mapping[PartitionKey, Trained] | None = None,
) -> Admission:
    """Which of ``changes`` (``PartitionChange``) to request now.

    ``attempts`` counts, per (partition, fingerprint), the requests already made for that data
    (the sensor's request log). The first request is immediate; the ``n``-th further one waits
    ``backoff_seconds * 2 ** (n - 1)`` after the previous, up to ``max_attempts`` requests in all;
    then the partition is reported as given up until its data changes (a new fingerprint).
    Requests made before the partition was last trained on other data (``trained``: by hand, a
    backfill) are answered: data that comes back to what they asked for is new work.
    """
    now = time.time() if now is None else now
    admitted, flying, waiting, gave_up = [], [], [], []
    for change in changes:
        key = change.partition
        if key in in_flight:
            flying.append(key)
            continue
        made, last = attempts.get((key, change.fingerprint), (0, 0.0))
        record = (trained or {}).get(key)
        if made and record is not None and record.trained_at > last and record.fingerprint != change.fingerprint:
            made, last = 0, 0.0
        if made >= retry.max_attempts:
            gave_up.append(key)
            continue
        due = last + retry.backoff_seconds * 2 ** (made - 1) if made else now
        if due > now:
            waiting.append((key, due - now))
            continue
        admitted.append((change, made + 1))
    return Admission(admitted, flying, waiting, gave_up)
