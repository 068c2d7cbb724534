"""Run tags that carry why a partition is being retrained, and the request log a run reads it from.

Tags are size-capped in practice, so the per-partition tags are only set when they fit (~4,000
characters: about 150 partitions of reasons, fewer of details). Whatever the run's size, a run
the change sensor requested finds each partition's reason and detail in the **request log** of
the tick that asked (its ``retrain/seq`` tag): one small JSON object per tick on the retraining's
storage, ``requests/<name>/<seq>.json``, written by the sensor before it returns its requests.

Why there, and not in the sensor's state or Dagster's event log: the state is SQLite on the
sensor's host and runs may start elsewhere (a run launcher, Kubernetes); an asset observation
emitted by a tick is stored only by whoever evaluates it (the daemon does, a
``build_sensor_context`` caller must), and a run would have to search the event log for it. The
storage is what every run already reads and writes its models on, wherever it runs (a local
folder, ``s3://``), so the lookup needs nothing that a run does not already have. One writer per
fact: only the sensor writes the log; runs only read it. Runs without ``retrain/seq`` (started by
hand, a UI backfill) use the tags, then ``manual``. The sensor keeps the logs of its last
:data:`KEEP_LOGS` ticks with requests (a run of an older tick, a re-execution say, reads its tags).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

from retrain_plugins.changes.state import read_requests
from retrain_plugins.layout import state_path, storage
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.storage import Storage

RETRAINING_TAG = "retrain/retraining"  # which retraining's sensor requested the run
ATTEMPTS_TAG = "retrain/attempts"  # per partition: which request of the same data this is (1 = first)
SEQ_TAG = "retrain/seq"  # the change-sensor tick that requested the run (its savings-ledger row, its request log)
SERVING_TAG = "retrain/serving"  # a run of the serving assets alone (the bundle was behind the store)
REASON_TAG = "retrain/reason"
REASONS_TAG = "retrain/reasons"
DETAIL_TAG = "retrain/details"
_MAX_TAG = 4000
KEEP_LOGS = 1000  # request logs kept: the last ticks' (reasons only, never what a run trains on)
PRUNE_EVERY = 100  # ticks between two prunings of the log (one listing of the folder)


def reason_tags(reasons: Mapping[PartitionKey, str]) -> dict[str, str]:
    """Tags for one run: the distinct reasons, and the reason of each partition when it fits."""
    tags = {REASON_TAG: ",".join(sorted(set(reasons.values())))}
    per = json.dumps({str(k): r for k, r in sorted(reasons.items())}, separators=(",", ":"))
    if len(per) <= _MAX_TAG:
        tags[REASONS_TAG] = per
    return tags


def reason_for(tags: Mapping[str, str], key: PartitionKey) -> str:
    """The reason recorded for ``key`` in a run's tags; ``manual`` for runs started by hand."""
    if REASONS_TAG in tags:
        found = json.loads(tags[REASONS_TAG]).get(str(key))
        if found:
            return found
    return tags.get(REASON_TAG, "manual") or "manual"


def detail_tags(details: Mapping[PartitionKey, str]) -> dict[str, str]:
    """What changed, per partition (row counts, windows, drifting features), when it fits a tag."""
    text = json.dumps({str(k): d for k, d in sorted(details.items())}, separators=(",", ":"))
    return {DETAIL_TAG: text} if len(text) <= _MAX_TAG else {}


def detail_for(tags: Mapping[str, str], key: PartitionKey) -> str | None:
    if DETAIL_TAG in tags:
        return json.loads(tags[DETAIL_TAG]).get(str(key))
    return None


def attempt_tags(attempts: Mapping[PartitionKey, int]) -> dict[str, str]:
    """Per partition, the attempt number of this request for its data, when the tag fits."""
    text = json.dumps({str(k): n for k, n in sorted(attempts.items())}, separators=(",", ":"))
    return {ATTEMPTS_TAG: text} if len(text) <= _MAX_TAG else {}


# -- the request log -------------------------------------------------------------------------


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


class RequestLookup:
    """Each partition's reason and detail for one run, whatever its size.

    In order: the request log of the run's tick on the storage; for a tick logged before that
    existed, the sensor's own request log when its state is on this host (read only); then the
    run's tags (which hold the per-partition values only when they fit); ``manual`` without any.
    """

    def __init__(self, spec: RetrainingSpec, tags: Mapping[str, str]):
        self.tags = tags
        self.logged: dict[PartitionKey, Requested] = {}
        seq = tags.get(SEQ_TAG)
        if seq is None:
            return
        found = read_request_log(spec, int(seq))
        if found is None:
            rows = read_requests(state_path(spec), int(seq)) or []
            found = {key: Requested(reason, detail, fingerprint) for _, key, reason, fingerprint, detail in rows}
        self.logged = found

    def __call__(self, key: PartitionKey) -> Requested:
        if key in self.logged:
            return self.logged[key]
        return Requested(reason_for(self.tags, key), detail_for(self.tags, key))
