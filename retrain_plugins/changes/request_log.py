"""The request log: why the change sensor asked for each partition, one object per tick.

``requests/<name>/<seq>.json`` on the retraining's storage (see :mod:`retrain_plugins.dagster.tags`
for why there): written by the sensor before it returns its requests, read by the runs and the CLI.
No Dagster here: the change detector and ``retrain state rebuild`` read where the numbering stops.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

from retrain_plugins.layout import storage
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.storage import Storage

KEEP_LOGS = 1000  # request logs kept: the last ticks' (reasons only, never what a run trains on)
PRUNE_EVERY = 100  # ticks between two prunings of the log (one listing of the folder)


class Requested(NamedTuple):
    """Why the sensor asked for one partition: reason, what changed, the data's fingerprint."""

    reason: str
    detail: str | None
    fingerprint: str | None = None


_ELSEWHERE: ContextVar[Storage | None] = ContextVar("retrain_request_log_elsewhere", default=None)


def request_log(spec: RetrainingSpec) -> Storage:
    """Where ``spec``'s sensor logs each tick's requests: ``<storage>/requests/<name>/``."""
    elsewhere = _ELSEWHERE.get()
    return elsewhere.child(spec.name) if elsewhere is not None else storage(spec).child(f"requests/{spec.name}")


@contextmanager
def request_logs_in(root: Storage) -> Iterator[None]:
    """Log the requests of ticks evaluated in this context under ``root`` instead: a dry tick
    (``retrain tick`` without ``--launch``, on a copy of the sensor's state) must not write the
    log that the real tick of the same number and its runs use."""
    token = _ELSEWHERE.set(root)
    try:
        yield
    finally:
        _ELSEWHERE.reset(token)


def write_request_log(spec: RetrainingSpec, seq: int, rows: Iterable[tuple[PartitionKey, str, str, str | None]]) -> None:
    """Record tick ``seq``'s requests (partition, reason, fingerprint, detail). The sensor's alone.

    Written whole or not at all, once per tick number (a rebuilt state store continues the
    numbering after :func:`last_logged_seq`).
    """
    partitions = [
        {"window": k.window, "cohort": k.cohort, "reason": reason, "fingerprint": fingerprint, "detail": detail}
        for k, reason, fingerprint, detail in sorted(rows, key=lambda row: row[0])
    ]
    payload = {"retraining": spec.name, "seq": seq, "partitions": partitions}
    log = request_log(spec)
    log.write_bytes(f"{seq}.json", json.dumps(payload, separators=(",", ":")).encode())
    if seq % PRUNE_EVERY == 0:
        for old in _logged(log):
            if old <= seq - KEEP_LOGS:
                log.delete(f"{old}.json")


def _logged(log: Storage) -> list[int]:
    names = (name[: -len(".json")] for name in log.glob("*.json"))
    return [int(stem) for stem in names if stem.isdigit()]


def last_logged_seq(spec: RetrainingSpec) -> int:
    """The highest tick number with a request log on the storage (0 when none): where a rebuilt
    state store's tick counter continues, so no run key or log of an earlier tick is used again."""
    return max(_logged(request_log(spec)), default=0)


def read_request_log(spec: RetrainingSpec, seq: int) -> dict[PartitionKey, Requested] | None:
    """Tick ``seq``'s requests by partition; None when that tick left no log (older versions)."""
    try:
        raw = json.loads(request_log(spec).read_bytes(f"{seq}.json"))
    except FileNotFoundError:
        return None
    return {PartitionKey(p["window"], p["cohort"]): Requested(p["reason"], p["detail"], p["fingerprint"]) for p in raw["partitions"]}
