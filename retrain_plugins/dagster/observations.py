"""What the change sensor saw, reported into Dagster: observations and source-file checks.

Each tick the change sensor returns, beside its run requests, asset events the daemon records
before it launches anything (``SensorResult(asset_events=...)``), so the UI shows what changed
before any run:

- an ``AssetObservation`` of each ``training_set`` partition whose fingerprint changed this tick,
  with ``data_version`` = that fingerprint (the same value the partition's training set and
  sub-model record as ``fingerprint`` once trained), and the reason and detail as metadata. Only
  changed partitions are observed: a tick without file changes emits none.
- an evaluation of the check ``source_files_valid`` of the ``labels`` or ``features`` source asset
  when what it would say differs from its latest evaluation: failed, naming every unreadable or
  invalid file and the column(s) at fault, or passed again once they are fixed or gone.

Why ``training_set`` and not the sources: the fingerprint belongs to one training set (its
cohort's label rows over the lookback windows, joined point-in-time with features), which shares
the sub-models' (window, cohort) partitions; the label and feature sources are unpartitioned, and a
feature file reaches every cohort. The observations are a record, not the decider: Dagster derives
a materializable asset's data version from its materializations only, partitioned staleness is one
hop deep, and the sensor's affected-set mapping (lookback, TTL) is what decides what runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetChecksDefinition,
    AssetKey,
    AssetObservation,
    DagsterInstance,
    MetadataValue,
    asset_check,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from retrain_plugins.changes.report import ChangeReport, PartitionChange
from retrain_plugins.changes.fingerprints import EMPTY
from retrain_plugins.changes.state import Trained
from retrain_plugins.feast_view import load_feature_service_view
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.sources import LABELS, FileProblem, file_problems
from retrain_plugins.spec import RetrainingSpec

SOURCE_CHECK = "source_files_valid"
SOURCE_ASSETS = ("labels", "features")
NOT_REQUESTED = "none"  # an observation's reason when its data needs no run (the same data as its sub-model's)


def source_asset(source: str) -> str:
    """The source asset a source's files belong to: ``labels``, or ``features`` for every feature view."""
    return "labels" if source == LABELS else "features"


def source_check_key(spec: RetrainingSpec, asset: str) -> AssetCheckKey:
    return AssetCheckKey(AssetKey([spec.name, asset]), SOURCE_CHECK)


def observations(
    spec: RetrainingSpec,
    report: ChangeReport,
    admitted: Sequence[PartitionChange],
    trained: Mapping[PartitionKey, Trained],
    seq: int | None,
) -> list[AssetObservation]:
    """One observation per partition whose fingerprint changed this tick (``report.observed``).

    ``admitted`` are the changes this tick requests (in run ``seq``); a change the sensor holds
    (a run in flight, backing off) is observed with ``requested: False``. A partition the sensor
    sees for the first time (a new state store: the first tick, or one rebuilt from the model
    store) with the data its sub-model was trained on is not observed: nothing changed for it, and
    its training set's materialization already records that fingerprint.
    """
    asset_key = AssetKey([spec.name, "training_set"])
    changes = {c.partition: c for c in report.changes}
    requested = {c.partition for c in admitted}
    events = []
    for key, seen in report.observed.items():
        change, record = changes.get(key), trained.get(key)
        if change is None and seen.previous == EMPTY and record is not None and record.fingerprint == seen.fingerprint:
            continue
        if change is not None:
            reason, detail = change.reason, change.detail
        elif record is not None and record.fingerprint == seen.fingerprint:
            reason, detail = NOT_REQUESTED, "the same data as its sub-model was trained on: nothing to retrain"
        else:
            reason, detail = NOT_REQUESTED, "not retrained (see the sensor's tick log)"
        asked = key in requested
        metadata: dict[str, Any] = {
            "partition": str(key),
            "reason": reason,
            "detail": detail,
            "rows": seen.rows,
            "fingerprint": seen.fingerprint,
            "previous_fingerprint": seen.previous,
            "trained_fingerprint": record.fingerprint if record is not None else None,
            "requested": asked,
            "sensor_seq": seq if asked else None,
        }
        events.append(
            AssetObservation(
                asset_key=asset_key,
                partition=key.to_dagster(),
                tags={DATA_VERSION_TAG: seen.fingerprint},
                metadata={k: v for k, v in metadata.items() if v is not None},
                description=f"{reason}: {detail}" + (f" (requested by tick {seq})" if asked else ""),
            )
        )
    return events


def _listed(problems: Sequence[FileProblem]) -> list[dict[str, Any]]:
    return [
        {"file": p.path, "source": p.source, "columns": list(p.columns), "problem": p.message}
        for p in sorted(problems, key=lambda p: (p.path, p.message))
    ]


def _check_body(asset: str, problems: Sequence[FileProblem]) -> dict[str, Any]:
    """``passed``, ``metadata`` and ``description`` of one source asset's check, from its problems."""
    listed = _listed(problems)
    if problems:
        named = "; ".join(
            f"{p['file']}" + (f" (column {', '.join(map(repr, p['columns']))})" if p["columns"] else " (unreadable)")
            for p in listed
        )
        description = f"{len(listed)} unusable {asset} file(s), left out until fixed: {named}"
    else:
        description = f"every {asset} file is usable"
    return {
        "passed": not problems,
        "metadata": {"problems": MetadataValue.json(listed), "files_with_problems": len(listed)},
        "description": description[:2000],
    }


def _previous(instance: DagsterInstance, key: AssetCheckKey) -> list | None:
    """The ``problems`` list of the check's latest evaluation (None: never evaluated, or in progress)."""
    record = instance.get_latest_asset_check_evaluation_record(key)
    if record is None or record.event is None or record.event.dagster_event is None:
        return None
    evaluation = record.event.dagster_event.event_specific_data
    if not isinstance(evaluation, AssetCheckEvaluation):
        return None  # planned: a run executing the check has not reported yet
    value = evaluation.metadata.get("problems")
    return value.value if value is not None else None


def source_check_evaluations(
    spec: RetrainingSpec, instance: DagsterInstance, problems: Sequence[FileProblem]
) -> list[AssetCheckEvaluation]:
    """Evaluations of ``source_files_valid`` whose outcome differs from the latest one recorded.

    ``problems`` are every unusable file the tick saw: the sensor re-reads a file that failed until
    it is fixed (its listing is not recorded), so an empty list means every file is usable. Two
    reads of the event log per tick; nothing is emitted while the outcome stays the same.
    """
    evaluations = []
    for asset in SOURCE_ASSETS:
        key = source_check_key(spec, asset)
        mine = [p for p in problems if source_asset(p.source) == asset]
        body = _check_body(asset, mine)
        if _previous(instance, key) == body["metadata"]["problems"].value:
            continue
        evaluations.append(
            AssetCheckEvaluation(
                asset_key=key.asset_key, check_name=SOURCE_CHECK, severity=AssetCheckSeverity.ERROR, **body
            )
        )
    return evaluations


def build_source_checks(spec: RetrainingSpec) -> tuple[AssetChecksDefinition, ...]:
    """``source_files_valid`` on the ``labels`` and ``features`` source assets.

    The change sensor reports its evaluations (:func:`source_check_evaluations`); executing the
    check (the UI's "Execute", or a job) validates every file of the source now, with the same
    rules as the sensor and the training step.
    """

    def make(asset: str) -> AssetChecksDefinition:
        @asset_check(
            asset=AssetKey([spec.name, asset]),
            name=SOURCE_CHECK,
            description=(
                f"Every {asset} file is readable parquet with the columns the retraining reads, of the "
                "right types, and no empty key, time or cohort values. Reported by the change sensor "
                "when the outcome changes; executing it checks every file now."
            ),
        )
        def source_files_valid() -> AssetCheckResult:
            view = load_feature_service_view(spec)
            names = [LABELS] if asset == "labels" else [fv.name for fv in view.views]
            body = _check_body(asset, file_problems(spec, view, only=names))
            return AssetCheckResult(severity=AssetCheckSeverity.ERROR, **body)

        return source_files_valid

    return tuple(make(asset) for asset in SOURCE_ASSETS)
