"""The change sensor: request runs for exactly the partitions whose training set changed.

Each tick runs :func:`retrain_plugins.changes.detector.detect_changes` (file listing first, exact
fingerprints only where files changed) and turns the affected partitions into as few runs as
possible: one run per (window range x cohort range) rectangle, which Dagster executes as a single
run thanks to the assets' single-run backfill policy. New cohorts of a dynamic cohort dimension
are added in the same tick as their runs are requested. Run keys carry a tick sequence number
from the state store, not the fingerprint: a partition whose data changes back to an earlier state
must still run again. The cursor is that sequence number; all other state is in the state store.
Each tick also returns what it saw as asset events (observations of the changed partitions, the
source files' check; see :mod:`retrain_plugins.dagster.observations`), which the daemon records.
"""

from collections.abc import Mapping, Sequence

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from retrain_plugins.changes.detector import detect_changes, state_store
from retrain_plugins.changes.report import ChangeReport, PartitionChange
from retrain_plugins.changes.fingerprints import Cell
from retrain_plugins.changes.reconcile import Admission, admit, with_data
from retrain_plugins.changes.state import StateStore, Trained
from retrain_plugins.dagster.assets import RetrainingAssets
from retrain_plugins.dagster.observations import observations, source_check_evaluations
from retrain_plugins.dagster.in_flight import in_flight
from retrain_plugins.dagster.outcomes import ingest_outcomes
from retrain_plugins.bundle import bundle_is_stale
from retrain_plugins.changes.request_log import write_request_log
from retrain_plugins.dagster.tags import REASON_TAG, RETRAINING_TAG, SEQ_TAG, SERVING_TAG, attempt_tags, detail_tags, reason_tags
from retrain_plugins.fallback import fallback_affected
from retrain_plugins.feast_view import load_feature_service_view
from retrain_plugins.layout import model_store
from retrain_plugins.partitions import (
    PartitionKey,
    cohort_partitions_def,
    cohorts,
    encode_cohort,
    rectangles,
    windows,
)
from retrain_plugins.sources import LABELS
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.trainers import check_trainer_spec
from retrain_plugins.validation import remote_feature_sources
from retrain_plugins.verify import damaged_current


def run_requests_for(
    spec: RetrainingSpec,
    assets: RetrainingAssets,
    changes: Sequence[PartitionChange],
    seq: int,
    cohort_order: Sequence[str],
    refresh_online: bool = True,
    refresh_fallback: bool = True,
    attempts: Mapping[PartitionKey, int] | None = None,
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
                    RETRAINING_TAG: spec.name,
                    SEQ_TAG: str(seq),
                    **reason_tags({c.partition: c.reason for c in inside}),
                    **detail_tags({c.partition: c.detail for c in inside}),
                    **attempt_tags({c.partition: (attempts or {}).get(c.partition, 1) for c in inside}),
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
    if report.refused:
        parts.append("label rows of no partition (empty cohort), not trained: " + "; ".join(report.refused.values()))
    if report.new_cohorts and not any(c.reason == "new_cohort" for c in report.changes):
        parts.append(f"cohorts in the data but not in the spec (not trained): {report.new_cohorts}")
    if report.vanished_cohorts:
        parts.append(f"cohorts no longer in the data (their sub-models are kept): {report.vanished_cohorts}")
    if report.stale_by_definition:
        parts.append(f"{report.stale_by_definition} sub-model(s) stale by definition change (policy mark_stale)")
    return ", ".join(parts)


def _repairs(spec: RetrainingSpec, trained: Mapping[PartitionKey, Trained], changes: Sequence[PartitionChange]) -> list[PartitionChange]:
    """Partitions whose serving artifact is missing or corrupted: retrain them (reason ``repair``).

    Nothing is marked: whether a repair is under way is Dagster's run state (see
    :func:`~retrain_plugins.dagster.in_flight.in_flight`), so a tick that dies after requesting
    one cannot block the next.
    """
    requested = {c.partition for c in changes}
    repairs = []
    for key, problem in damaged_current(model_store(spec)).items():
        if key in requested:
            continue
        record = trained.get(key)
        fingerprint = record.fingerprint if record else ""
        repairs.append(PartitionChange(key, "repair", f"repair:{fingerprint}", record.rows if record else 0, problem))
    return repairs


def serving_request(spec: RetrainingSpec, assets: RetrainingAssets, seq: int) -> RunRequest:
    """A run of the serving assets alone (fallback, bundle): publishes what the store holds."""
    return RunRequest(
        run_key=f"{spec.name}:{seq}:serving",
        asset_selection=[assets.fallback_model.key, assets.model_bundle.key],
        tags={RETRAINING_TAG: spec.name, SERVING_TAG: "true", REASON_TAG: "repair"},
    )


def _held(admission: Admission) -> str:
    """What the sensor did not request although the data differs, and why."""
    parts = []
    if admission.in_flight:
        parts.append(f"{len(admission.in_flight)} partition(s) with a run in flight")
    if admission.waiting:
        parts.append(
            "backing off: " + ", ".join(f"{k} (next attempt in {seconds:.0f} s)" for k, seconds in sorted(admission.waiting))
        )
    if admission.gave_up:
        parts.append(
            "gave up after the attempts allowed by change_detection.retry (until their data changes or they "
            "are materialized by hand): " + ", ".join(map(str, sorted(admission.gave_up)))
        )
    return "; ".join(parts)


def _with_data(spec: RetrainingSpec, state: StateStore, known: Sequence[str]) -> set[PartitionKey]:
    """The partitions with data as the last tick observed it (a build covers those: an empty one
    trains nothing); every partition before any tick observed anything."""
    stored = state.cells()
    keys = [w.key for w in windows(spec)]
    if not stored:
        return {PartitionKey(w, c) for w in keys for c in known}
    return with_data({k: Cell(*v) for k, v in stored.items()}, keys, known, spec.windows.lookback)


def _deferred(flying: Mapping[str, set[PartitionKey]]) -> str:
    them = "it" if len(flying) == 1 else "them"
    return (
        f"every partition has a run in flight ({', '.join(sorted(flying))}): change detection waits for {them} to "
        f"finish, and the first tick after {them} sees whatever changed meanwhile"
    )


def _record_savings(state: StateStore, seq: int, changes: Sequence[PartitionChange]) -> None:
    requested = {c.partition for c in changes}
    others = [r for k, r in state.trained().items() if k not in requested and r.status == "trained"]
    avoided = sum(r.training_seconds or 0.0 for r in others)
    reasons = ",".join(sorted({c.reason for c in changes}))
    state.record_ledger(seq, len(requested), len(others), avoided, reasons)


# Dagster's sensor daemon evaluates its sensors once per loop of this many seconds
# (dagster._daemon.sensor.MIN_INTERVAL_LOOP_TIME; tests/test_definitions.py checks they agree).
DAEMON_LOOP_SECONDS = 5


def dagster_interval(seconds: int) -> int:
    """The ``minimum_interval_seconds`` that makes the daemon tick every ``seconds`` (rounded up
    to its loop): one second under the loop multiple. The daemon skips a sensor whose last tick
    started less than the minimum ago, measured a few ms earlier in its loop than that tick
    started, so a minimum of exactly 5 s ticked every 5 or 10 s (mean 8 s) and 10 s every 10 or
    15 s; 4 s and 9 s tick every 5 and 10 s (measured with ``dagster-daemon run``)."""
    loops = max(1, -(-int(seconds) // DAEMON_LOOP_SECONDS))
    return loops * DAEMON_LOOP_SECONDS - 1


def build_change_sensor(
    spec: RetrainingSpec,
    assets: RetrainingAssets,
    interval_seconds: int = 10,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
):
    """The change sensor of one retraining, ticking every ``interval_seconds`` (rounded up to
    the daemon's 5 s loop, see :func:`dagster_interval`)."""

    @sensor(
        name=f"{spec.name}_change_sensor",
        asset_selection=assets.keys,
        minimum_interval_seconds=dagster_interval(interval_seconds),
        default_status=default_status,
        description=(
            "Requests runs for exactly the (window, cohort) partitions whose training set changed "
            "(new or late label rows, edited rows, changed feature rows, drift, new cohorts), "
            "grouped into few runs, each tagged with its reasons."
        ),
    )
    def change_sensor(context: SensorEvaluationContext):
        check_trainer_spec(spec)  # a trainer typo fails the tick, before anything is recorded or requested
        known = cohorts(spec, context.instance)
        # Runs in flight are read before their outcomes: a run not in flight now has finished, and
        # its events are in the event log for ingest_outcomes below (read the other way round, a
        # run finishing in between would be neither, and its partitions asked for twice). The same
        # snapshot answers whether a run on its way will publish the bundle, further down.
        flying = in_flight(spec, context.instance)
        busy = flying.partitions
        state = state_store(spec)
        if known and busy and busy >= _with_data(spec, state, known):
            # A full build is under way: whatever changed, every partition is held until it ends.
            # Detecting now would only compete with its training for the cores; this tick records
            # nothing (no listing, no cells), so the first tick after the build sees every change.
            return SensorResult(skip_reason=_deferred(flying.covered))
        view = load_feature_service_view(spec)
        with state.transaction():  # what runs recorded since the last tick (they never write this state)
            ingest_outcomes(state, context.instance, assets.sub_model_key)
        report = detect_changes(spec, view, state, known)
        trained = state.trained()
        report.changes.extend(_repairs(spec, trained, report.changes))
        admission = admit(report.changes, busy, state.attempts(), spec.change_detection.retry, trained=trained)
        changes = [change for change, _ in admission.admitted]
        summary = "; ".join(filter(None, [describe(report), _held(admission)]))
        # What this tick saw, for the UI (observations, source checks): recorded by the daemon
        # before it launches the runs; the sensor's own state below stays the decider.
        checks = source_check_evaluations(spec, context.instance, report.file_problems)
        # One transaction: the listing, cells, baselines, request log and ledger land together or
        # not at all. Dying after it but before Dagster has the requests loses nothing either: the
        # next tick finds those partitions unsettled and not in flight, and asks again.
        with state.transaction():
            report.commit()
            if not changes:
                events = [*observations(spec, report, [], trained, None), *checks]
                if bundle_is_stale(spec) and not flying.publishing:
                    # A promoted model the bundle does not route to (a run that died before
                    # publishing, or one that selected only the partitioned assets): publish.
                    seq = state.next_seq()
                    context.log.info(f"bundle.json is behind the model store: publishing; {summary}")
                    return SensorResult(
                        run_requests=[serving_request(spec, assets, seq)], cursor=str(seq), asset_events=events
                    )
                return SensorResult(skip_reason=f"no partition changed ({summary})", asset_events=events)
            seq = state.next_seq()
            added = [c for c in report.new_cohorts if spec.dynamic_cohorts and c not in known]
            # Feast cannot load object-store feature sources into the online store (online.py): such
            # runs leave online_features out rather than fail on it.
            features_changed = any(source != LABELS for source in report.changed_sources) and not remote_feature_sources(view)
            fallback = fallback_affected(spec, view, {c.partition.window for c in changes})
            attempts = {change.partition: n for change, n in admission.admitted}
            requests = run_requests_for(spec, assets, changes, seq, [*known, *added], features_changed, fallback, attempts)
            state.log_requests(seq, [(c.partition, c.reason, c.fingerprint, c.detail) for c in changes])
            # Where runs read their partitions' reasons (tags are size-capped; tags.py says why
            # there). Inside the transaction: a tick whose log cannot be written requests nothing.
            write_request_log(spec, seq, [(c.partition, c.reason, c.fingerprint, c.detail) for c in changes])
            _record_savings(state, seq, changes)
        dynamic = [cohort_partitions_def(spec).build_add_request([encode_cohort(c) for c in added])] if added else []
        context.log.info(
            f"{len(changes)} partition(s) in {len(requests)} run(s): "
            + ", ".join(f"{c.partition} ({c.reason}: {c.detail})" for c in changes)
            + f"; {summary}"
        )
        return SensorResult(
            run_requests=requests,
            cursor=str(seq),
            dynamic_partitions_requests=dynamic,
            asset_events=[*observations(spec, report, changes, trained, seq), *checks],
        )

    return change_sensor
