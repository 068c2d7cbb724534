"""The change sensor: request runs for exactly the partitions whose training set changed.

Each tick runs :func:`retrain_plugins.changes.detector.detect_changes` (file listing first, exact
fingerprints only where files changed) and turns the affected partitions into as few runs as
possible: one run per (window range x cohort range) rectangle, which Dagster executes as a single
run thanks to the assets' single-run backfill policy. Run keys carry a tick sequence number from
the state store, not the fingerprint: a partition whose data changes back to an earlier state
must still run again. The cursor is that sequence number; all other state is in the state store.
"""


from collections.abc import Sequence

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from retrain_plugins.changes.detector import ChangeReport, PartitionChange, detect_changes, state_store
from retrain_plugins.dagster.assets import RetrainingAssets
from retrain_plugins.dagster.tags import reason_tags
from retrain_plugins.feast_view import load_feature_service_view
from retrain_plugins.partitions import rectangles, windows
from retrain_plugins.spec import RetrainingSpec


def run_requests_for(
    spec: RetrainingSpec, assets: RetrainingAssets, changes: Sequence[PartitionChange], seq: int
) -> list[RunRequest]:
    """Group ``changes`` into rectangle runs, each tagged with its partitions' reasons."""
    reasons = {c.partition: c.reason for c in changes}
    window_keys = [w.key for w in windows(spec)]
    requests = []
    for i, (start, end, members) in enumerate(rectangles(reasons, window_keys, spec.cohorts)):
        inside = {k: reasons[k] for k in members}
        requests.append(
            RunRequest(
                run_key=f"{spec.name}:{seq}:{i}",
                asset_selection=[a.key for a in (*assets.partitioned, assets.model_bundle)],
                tags={
                    ASSET_PARTITION_RANGE_START_TAG: str(start.to_dagster()),
                    ASSET_PARTITION_RANGE_END_TAG: str(end.to_dagster()),
                    **reason_tags(inside),
                },
            )
        )
    return requests


def _describe(report: ChangeReport) -> str:
    parts = [f"{len(report.changed_files)} changed file(s) of {report.files_seen}"]
    if report.unreadable:
        parts.append("unreadable: " + "; ".join(report.unreadable.values()))
    if report.unknown_cohorts:
        parts.append(f"cohorts in the data but not in the spec: {report.unknown_cohorts}")
    return ", ".join(parts)


def build_change_sensor(
    spec: RetrainingSpec,
    assets: RetrainingAssets,
    minimum_interval_seconds: int = 60,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
):
    """The change sensor of one retraining."""

    @sensor(
        name=f"{spec.name}_change_sensor",
        asset_selection=[a.key for a in (*assets.partitioned, assets.model_bundle)],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Requests runs for exactly the (window, cohort) partitions whose training set changed "
            "(new or late label rows, edited rows, changed feature rows), grouped into few runs."
        ),
    )
    def change_sensor(context: SensorEvaluationContext):
        view = load_feature_service_view(spec)
        state = state_store(spec)
        report = detect_changes(spec, view, state)
        summary = _describe(report)
        if not report.changes:
            report.commit()
            return SkipReason(f"no partition changed ({summary})")
        seq = state.next_seq()
        requests = run_requests_for(spec, assets, report.changes, seq)
        state.log_requests(seq, [(c.partition, c.reason, c.fingerprint, c.detail) for c in report.changes])
        report.commit()
        context.log.info(
            f"{len(report.changes)} partition(s) in {len(requests)} run(s): "
            + ", ".join(f"{c.partition} ({c.reason})" for c in report.changes)
            + f"; {summary}"
        )
        return SensorResult(run_requests=requests, cursor=str(seq))

    return change_sensor
