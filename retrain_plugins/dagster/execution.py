"""Run a retraining in-process: full materialization, a sensor tick, the runs it requested.

This is what the demo, the tests and the benchmarks drive; in production the Dagster daemon does
the same through the sensor and the run launcher. Every call goes through real Dagster machinery
(``materialize`` on a ``DagsterInstance``, ``build_sensor_context`` + ``evaluate_tick``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from dagster import (
    AddDynamicPartitionsRequest,
    AssetsDefinition,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    RunRequest,
    build_sensor_context,
    materialize,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG, RUN_KEY_TAG

from retrain_plugins.dagster.tags import RETRAINING_TAG
from retrain_plugins.errors import RetrainError
from retrain_plugins.partitions import PartitionKey, cohorts, encode_cohort, windows
from retrain_plugins.spec import RetrainingSpec


class Tick(NamedTuple):
    run_requests: list[RunRequest]
    skip_message: str | None
    cursor: str | None
    asset_events: tuple = ()  # observations and check evaluations, recorded on the instance


def retraining_assets(defs: Definitions, spec: RetrainingSpec, name: str | None = None) -> list[AssetsDefinition]:
    """The materializable assets of ``spec``'s retraining in ``defs`` (optionally: the one holding asset ``name``)."""
    return [
        a
        for a in defs.assets
        if isinstance(a, AssetsDefinition)
        and any(k.path[0] == spec.name and (name is None or k.path[-1] == name) for k in a.keys)
    ]


def _run_config(log_level: str | None) -> dict | None:
    return {"loggers": {"console": {"config": {"log_level": log_level}}}} if log_level else None


def full_build_tags(spec: RetrainingSpec, instance: DagsterInstance) -> dict[str, str]:
    """The tags of one run over every (window x cohort) partition of ``spec``: the partition range
    of the whole rectangle, and the retraining's tag (an in-process run records no asset selection,
    so the tag is what tells the change sensor that this run covers every partition, in_flight.py).

    With ``dynamic_cohorts`` the spec's cohorts are added to the instance first (its first keys; a
    tick adds new ones).
    """
    if spec.dynamic_cohorts:
        known = set(cohorts(spec, instance))
        instance.add_dynamic_partitions(f"{spec.name}_cohort", [encode_cohort(c) for c in spec.cohorts if c not in known])
    order = cohorts(spec, instance)
    if not order:
        raise RetrainError(f"retraining {spec.name!r} has no cohort partitions yet: list cohorts in the spec, or run `retrain tick --launch`")
    keys = [w.key for w in windows(spec)]
    return {
        ASSET_PARTITION_RANGE_START_TAG: str(PartitionKey(keys[0], order[0]).to_dagster()),
        ASSET_PARTITION_RANGE_END_TAG: str(PartitionKey(keys[-1], order[-1]).to_dagster()),
        RETRAINING_TAG: spec.name,
    }


def materialize_all(
    defs: Definitions,
    spec: RetrainingSpec,
    instance: DagsterInstance,
    tags: dict[str, str] | None = None,
    log_level: str | None = None,
) -> ExecuteInProcessResult:
    """Materialize every partition of the retraining (and the bundle) in one run."""
    return materialize(
        retraining_assets(defs, spec),
        instance=instance,
        resources=defs.resources,
        run_config=_run_config(log_level),
        tags={**full_build_tags(spec, instance), **(tags or {})},
    )


def tick(defs: Definitions, sensor_name: str, instance: DagsterInstance, cursor: str | None = None) -> Tick:
    """Evaluate one tick of ``sensor_name`` against ``instance``, recording its asset events there."""
    sensor_def = defs.resolve_sensor_def(sensor_name)
    context = build_sensor_context(
        instance=instance,
        definitions=defs,
        cursor=cursor,
        instance_ref=instance.get_ref() if instance.is_persistent else None,
    )
    data = sensor_def.evaluate_tick(context)
    # What the daemon does with a tick's asset events and dynamic partition requests, before
    # launching its runs (dagster/_daemon/sensor.py).
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    for request in data.dynamic_partitions_requests or []:
        if isinstance(request, AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    return Tick(list(data.run_requests or []), data.skip_message, data.cursor, tuple(data.asset_events))


def execute(
    defs: Definitions,
    spec: RetrainingSpec,
    requests: Sequence[RunRequest],
    instance: DagsterInstance,
    log_level: str | None = None,
    raise_on_error: bool = True,
) -> list[ExecuteInProcessResult]:
    """Execute run requests in-process, as the daemon would launch them (same tags, same selection).

    ``raise_on_error=False`` returns failed runs' results instead of raising (as a daemon records them).
    """
    results = []
    for request in requests:
        results.append(
            materialize(
                retraining_assets(defs, spec),
                instance=instance,
                resources=defs.resources,
                run_config=_run_config(log_level),
                selection=request.asset_selection,
                partition_key=request.partition_key,
                tags={**request.tags, **({RUN_KEY_TAG: request.run_key} if request.run_key else {})},
                raise_on_error=raise_on_error,
            )
        )
    return results
