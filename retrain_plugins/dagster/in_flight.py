"""What this retraining's queued and running runs cover, asked of the Dagster instance.

The sensor derives "in flight" from Dagster's run records (never a flag of its own that could
outlive a crash): a partition a queued or running run covers is not requested again, and no
serving-only run is asked for while a run that will publish the bundle is on its way.
"""

from __future__ import annotations

from dagster import DagsterInstance, DagsterRunStatus, PartitionKeyRange, RunsFilter
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG, PARTITION_NAME_TAG

from retrain_plugins.dagster.assets import asset_keys
from retrain_plugins.dagster.tags import RETRAINING_TAG, SERVING_TAG
from retrain_plugins.partitions import PartitionKey, partitions_def
from retrain_plugins.spec import RetrainingSpec


def serving_in_flight(spec: RetrainingSpec, instance: DagsterInstance) -> bool:
    """Whether a queued or running run will publish this retraining's bundle.

    That is a serving-only run (:func:`serving_request`), or any run whose selection holds the
    ``model_bundle`` asset: a retraining run the sensor requested promotes its sub-models in its
    train step and publishes in its bundle step, so a tick in between sees the store ahead of the
    bundle and must not ask for a serving run of its own. A run that dies before publishing is no
    longer in flight: the next tick asks then.
    """
    tags = {RETRAINING_TAG: spec.name, SERVING_TAG: "true"}
    if instance.get_runs(filters=RunsFilter(tags=tags, statuses=_UNFINISHED), limit=1):
        return True
    bundle = asset_keys(spec)["model_bundle"]
    return any(bundle in (run.asset_selection or ()) for run in instance.get_runs(filters=RunsFilter(statuses=_UNFINISHED)))


def in_flight(spec: RetrainingSpec, instance: DagsterInstance) -> set[PartitionKey]:
    """Partitions of this retraining that a queued or running run (requested by its sensor) covers."""
    runs = instance.get_runs(filters=RunsFilter(tags={RETRAINING_TAG: spec.name}, statuses=_UNFINISHED))
    if not runs:
        return set()
    definition = partitions_def(spec)
    keys: set[PartitionKey] = set()
    for run in runs:
        start, end = run.tags.get(ASSET_PARTITION_RANGE_START_TAG), run.tags.get(ASSET_PARTITION_RANGE_END_TAG)
        if start and end:
            found = definition.get_partition_keys_in_range(PartitionKeyRange(start, end), dynamic_partitions_store=instance)
        elif run.tags.get(PARTITION_NAME_TAG):
            found = [run.tags[PARTITION_NAME_TAG]]
        else:
            continue
        keys |= {PartitionKey.from_dagster(k) for k in found}
    return keys


_UNFINISHED = [
    DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING, DagsterRunStatus.MANAGED,
]
