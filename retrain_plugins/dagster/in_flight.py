"""What this retraining's queued and running runs cover, asked of the Dagster instance.

The sensor derives "in flight" from Dagster's run records (never a flag of its own that could
outlive a crash): a partition a queued or running run covers is not requested again, and no
serving-only run is asked for while a run that will publish the bundle is on its way. The runs
that count are the ones that train this retraining: those its sensor requested (tagged
``retrain/retraining=<name>``, as ``materialize_all`` and ``retrain materialize --all`` tag their
in-process runs) and those launched from the UI or GraphQL whose selection holds its
``sub_model`` asset (a materialization, a backfill's runs, a single-run launch). A backfill still
requested (the UI's "backfill all partitions") counts for what it has yet to materialize, before its
daemon has created the runs (its loop is 30 s) and between them, and for the bundle it will publish.
"""

from __future__ import annotations

from typing import NamedTuple

from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, PartitionKeyRange, RunsFilter
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG, PARTITION_NAME_TAG

from retrain_plugins.dagster.assets import asset_keys
from retrain_plugins.dagster.tags import RETRAINING_TAG
from retrain_plugins.partitions import PartitionKey, partitions_def
from retrain_plugins.spec import RetrainingSpec


class InFlight(NamedTuple):
    """What is on its way for one retraining, read once per tick."""

    covered: dict[str, set[PartitionKey]]  # "run <id>" / "backfill <id>" -> the partitions it will train
    publishing: bool  # a run or backfill on its way will publish the bundle

    @property
    def partitions(self) -> set[PartitionKey]:
        return set().union(*self.covered.values())


def _selects(run: DagsterRun, key: AssetKey) -> bool:
    # An in-process run (materialize(), execute_in_process) records no selection: its job's assets.
    return key in run.asset_selection if run.asset_selection else True


def in_flight(spec: RetrainingSpec, instance: DagsterInstance) -> InFlight:
    """This retraining's queued and running runs and requested backfills: the partitions each will
    train, and whether one will publish the bundle.

    A run publishes when its selection holds ``model_bundle``: a retraining run the sensor requested
    promotes its sub-models in its train step and publishes in its bundle step, so a tick in
    between sees the store ahead of the bundle and must not ask for a serving run of its own. A run
    that dies before publishing is no longer in flight: the next tick asks then. A backfill counts
    for what it has yet to materialize (target minus materialized minus failed and downstream).
    """
    keys = asset_keys(spec)
    ours = set(keys.values())
    sub_model, bundle = keys["sub_model"], keys["model_bundle"]
    covered: dict[str, set[PartitionKey]] = {}
    publishing = False
    for backfill in instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])):
        data = backfill.asset_backfill_data  # None for a job's (partition set) backfill: its runs count
        if data is None:
            continue
        remaining = data.target_subset - data.materialized_subset - data.failed_and_downstream_subset
        publishing |= bundle in remaining.non_partitioned_asset_keys
        subset = remaining.partitions_subsets_by_asset_key.get(sub_model)
        if subset is not None and not subset.is_empty:
            covered[f"backfill {backfill.backfill_id}"] = {PartitionKey.from_dagster(k) for k in subset.get_partition_keys()}
    definition = None
    for run in instance.get_runs(filters=RunsFilter(statuses=_UNFINISHED)):
        if run.tags.get(RETRAINING_TAG) != spec.name and not ours & set(run.asset_selection or ()):
            continue  # another retraining's, or not a retraining's at all
        publishing |= _selects(run, bundle)
        if not _selects(run, sub_model):
            continue
        start, end = run.tags.get(ASSET_PARTITION_RANGE_START_TAG), run.tags.get(ASSET_PARTITION_RANGE_END_TAG)
        if start and end:
            definition = definition or partitions_def(spec)
            found = definition.get_partition_keys_in_range(PartitionKeyRange(start, end), dynamic_partitions_store=instance)
        elif run.tags.get(PARTITION_NAME_TAG):
            found = [run.tags[PARTITION_NAME_TAG]]
        else:
            continue
        covered[f"run {run.run_id[:8]}"] = {PartitionKey.from_dagster(k) for k in found}
    return InFlight(covered, publishing)


_UNFINISHED = [
    DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING, DagsterRunStatus.MANAGED,
]
