"""The change sensor: request runs for exactly the partitions whose training set changed.

Each tick runs :func:`retrain_plugins.changes.detector.detect_changes` (file listing first, exact
fingerprints only where files changed) and turns the affected partitions into as few runs as
possible: one run per (window range x cohort range) rectangle, which Dagster executes as a single
run thanks to the assets' single-run backfill policy. New cohorts of a dynamic cohort dimension
are added in the same tick as their runs are requested. Run keys carry a tick sequence number
from the state store, not the fingerprint: a partition whose data changes back to an earlier state
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
from retrain_plugins.changes.state import StateStore
from retrain_plugins.dagster.assets import RetrainingAssets
from retrain_plugins.dagster.tags import detail_tags, reason_tags
from retrain_plugins.fallback import fallback_affected
from retrain_plugins.feast_view import load_feature_service_view
from retrain_plugins.layout import model_store_root
from retrain_plugins.partitions import cohort_partitions_def, cohorts, encode_cohort, rectangles, windows
from retrain_plugins.sources import LABELS
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.store import ModelStore
from retrain_plugins.verify import damaged_current


def run_requests_for(
    spec: RetrainingSpec,
    assets: RetrainingAssets,
    changes: Sequence[PartitionChange],
    seq: int,
    cohort_order: Sequence[str],
    refresh_online: bool = True,
    refresh_fallback: bool = True,
) -> list[RunRequest]:
    """Group ``changes`` into rectangle runs, each tagged with its partitions' reasons.

    ``refresh_online=False`` leaves the online store out of the runs (no feature file changed);
    ``refresh_fallback=False`` leaves the fallback model out (no change can reach its inputs, see
    :func:`retrain_plugins.fallback.fallback_affected`).
    """
    left_out = {
        key
        for key, refresh in ((assets.online_features.key, refresh_online), (assets.fallback_model.key, refresh_fallback))
        if not refresh
    }
    selection = [k for k in assets.keys if k not in left_out]
    by_key = {c.partition: c for c in changes}
    window_keys = [w.key for w in windows(spec)]
    requests = []
    for i, (start, end, members) in enumerate(rectangles(by_key, window_keys, cohort_order)):
        inside = [by_key[k] for k in members]
        requests.append(
            RunRequest(
                run_key=f"{spec.name}:{seq}:{i}",
                asset_selection=selection,
                tags={
                    ASSET_PARTITION_RANGE_START_TAG: str(start.to_dagster()),
                    ASSET_PARTITION_RANGE_END_TAG: str(end.to_dagster()),
                    **reason_tags({c.partition: c.reason for c in inside}),
                    **detail_tags({c.partition: c.detail for c in inside}),
                },
            )
        )
    return requests


def describe(report: ChangeReport) -> str:
    """One line on what a detection pass saw besides the requested partitions."""
    parts = [f"{len(report.changed_files)} changed file(s) of {report.files_seen}"]
    if report.changed_files:
        parts.append(f"{report.cells_joined} cell(s) re-fingerprinted")
    if report.unreadable:
        parts.append("unreadable, skipped until fixed: " + "; ".join(report.unreadable.values()))
    if report.new_cohorts and not any(c.reason == "new_cohort" for c in report.changes):
        parts.append(f"cohorts in the data but not in the spec (not trained): {report.new_cohorts}")
    if report.vanished_cohorts:
        parts.append(f"cohorts no longer in the data (their sub-models are kept): {report.vanished_cohorts}")
    if report.stale_by_definition:
        parts.append(f"{report.stale_by_definition} sub-model(s) stale by definition change (policy mark_stale)")
    return ", ".join(parts)


def _repairs(spec: RetrainingSpec, state: StateStore, changes: Sequence[PartitionChange]) -> list[PartitionChange]:
    """Partitions whose serving artifact is missing or corrupted: retrain them (reason ``repair``)."""
    requested = {c.partition for c in changes}
    trained = state.trained()
    repairs = []
    for key, problem in damaged_current(ModelStore(model_store_root(spec))).items():
        record = trained.get(key)
        if key in requested or (record is not None and record.status == "repairing"):
            continue
        fingerprint = record.fingerprint if record else ""
        if record is not None:  # mark it, so the next ticks do not ask again while the run is pending
            state.record_trained(key, record.fingerprint, record.rows, "repairing", record.run_id, record.definition, error=problem)
        repairs.append(PartitionChange(key, "repair", fingerprint, record.rows if record else 0, problem))
    return repairs


def _record_savings(state: StateStore, seq: int, changes: Sequence[PartitionChange]) -> None:
    requested = {c.partition for c in changes}
    others = [r for k, r in state.trained().items() if k not in requested and r.status == "trained"]
    avoided = sum(r.training_seconds or 0.0 for r in others)
    reasons = ",".join(sorted({c.reason for c in changes}))
    state.record_ledger(seq, len(requested), len(others), avoided, reasons)


def build_change_sensor(
    spec: RetrainingSpec,
    assets: RetrainingAssets,
    minimum_interval_seconds: int = 60,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
):
    """The change sensor of one retraining."""

    @sensor(
        name=f"{spec.name}_change_sensor",
        asset_selection=assets.keys,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Requests runs for exactly the (window, cohort) partitions whose training set changed "
            "(new or late label rows, edited rows, changed feature rows, drift, new cohorts), "
            "grouped into few runs, each tagged with its reasons."
        ),
    )
    def change_sensor(context: SensorEvaluationContext):
        view = load_feature_service_view(spec)
        state = state_store(spec)
        known = cohorts(spec, context.instance)
        report = detect_changes(spec, view, state, known)
        report.changes.extend(_repairs(spec, state, report.changes))
        summary = describe(report)
        if not report.changes:
            report.commit()
            return SkipReason(f"no partition changed ({summary})")
        seq = state.next_seq()
        added = [c for c in report.new_cohorts if spec.dynamic_cohorts and c not in known]
        features_changed = any(source != LABELS for source in report.changed_sources)
        fallback = fallback_affected(spec, view, {c.partition.window for c in report.changes})
        requests = run_requests_for(spec, assets, report.changes, seq, [*known, *added], features_changed, fallback)
        dynamic = (
            [cohort_partitions_def(spec).build_add_request([encode_cohort(c) for c in added])] if added else []
        )
        state.log_requests(seq, [(c.partition, c.reason, c.fingerprint, c.detail) for c in report.changes])
        _record_savings(state, seq, report.changes)
        report.commit()
        context.log.info(
            f"{len(report.changes)} partition(s) in {len(requests)} run(s): "
            + ", ".join(f"{c.partition} ({c.reason}: {c.detail})" for c in report.changes)
            + f"; {summary}"
        )
        return SensorResult(run_requests=requests, cursor=str(seq), dynamic_partitions_requests=dynamic)

    return change_sensor
