"""Run tags that carry why a partition is being retrained."""

from __future__ import annotations

import json
from collections.abc import Mapping

from retrain_plugins.partitions import PartitionKey

RETRAINING_TAG = "retrain/retraining"  # which retraining's sensor requested the run
ATTEMPTS_TAG = "retrain/attempts"
SEQ_TAG = "retrain/seq"  # the change-sensor tick that requested the run (its savings-ledger row)
SERVING_TAG = "retrain/serving"  # a run of the serving assets alone (the bundle was behind the store)  # per partition: which request of the same data this is (1 = first)
REASON_TAG = "retrain/reason"
REASONS_TAG = "retrain/reasons"
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


DETAIL_TAG = "retrain/details"


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
