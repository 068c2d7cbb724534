"""Run tags that carry why a partition is being retrained, and the lookup that reads the request log.

Tags are size-capped in practice, so the per-partition tags are only set when they fit (~4,000
characters: about 150 partitions of reasons, fewer of details). Whatever the run's size, a run
the change sensor requested finds each partition's reason and detail in the **request log** of
the tick that asked (its ``retrain/seq`` tag): one small JSON object per tick on the retraining's
storage, ``requests/<name>/<seq>.json``, written by the sensor before it returns its requests
(:mod:`retrain_plugins.changes.request_log`).

Why there, and not in the sensor's state or Dagster's event log: the state is SQLite on the
sensor's host and runs may start elsewhere (a run launcher, Kubernetes); an asset observation
emitted by a tick is stored only by whoever evaluates it (the daemon does, a
``build_sensor_context`` caller must), and a run would have to search the event log for it. The
storage is what every run already reads and writes its models on, wherever it runs (a local
folder, ``s3://``), so the lookup needs nothing that a run does not already have. One writer per
fact: only the sensor writes the log; runs only read it. Runs without ``retrain/seq`` (started by
hand, a UI backfill) use the tags, then ``manual``. The sensor keeps the logs of its last
:data:`retrain_plugins.changes.request_log.KEEP_LOGS` ticks with requests (a run of an older tick,
a re-execution say, reads its tags).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from retrain_plugins.changes.request_log import Requested, read_request_log
from retrain_plugins.changes.state import read_requests
from retrain_plugins.layout import state_path
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.spec import RetrainingSpec

RETRAINING_TAG = "retrain/retraining"  # the retraining a run trains: its sensor's requests, in-process full builds
ATTEMPTS_TAG = "retrain/attempts"  # per partition: which request of the same data this is (1 = first)
SEQ_TAG = "retrain/seq"  # the change-sensor tick that requested the run (its savings-ledger row, its request log)
SERVING_TAG = "retrain/serving"  # a run of the serving assets alone (the bundle was behind the store)
REASON_TAG = "retrain/reason"
REASONS_TAG = "retrain/reasons"
DETAIL_TAG = "retrain/details"
_MAX_TAG = 4000


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
