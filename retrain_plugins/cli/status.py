"""Per-partition status and explanations, from the state store and the model store.

States: ``current`` (trained on the data as last observed), ``stale: data changed`` (observed data
differs from what the sub-model was trained on: a run is pending or failed), ``stale: definition
changed`` (trained under an older feature service / label / trainer definition), ``skipped``
(no labelled rows or one label class), ``never trained``; with the Dagster instance, each
followed by the runs or backfills in flight for the partition, if any ("... (run 1a2b3c4d in flight)").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from retrain_plugins.changes.detector import state_store
from retrain_plugins.changes.report import DEFINITION
from retrain_plugins.changes.fingerprints import EMPTY, Cell, partition_fingerprint
from retrain_plugins.layout import model_store
from retrain_plugins.partitions import PartitionKey, training_windows, windows
from retrain_plugins.spec import RetrainingSpec

if TYPE_CHECKING:
    from dagster import DagsterInstance

HEADERS = ("window", "cohort", "state", "rows", "auc_holdout", "reason", "trained_at")


def _state(spec: RetrainingSpec, instance: "DagsterInstance | None"):
    """The sensor's state, with the outcomes runs recorded in ``instance`` since its last tick."""
    state = state_store(spec)
    if instance is None:
        return state
    from retrain_plugins.dagster.outcomes import refresh_state

    return refresh_state(spec, state, instance)


def _in_flight(spec: RetrainingSpec, instance: "DagsterInstance | None") -> dict[PartitionKey, str]:
    """Partition -> the runs (or requested backfills) in ``instance`` covering it."""
    if instance is None:
        return {}
    from retrain_plugins.dagster.in_flight import in_flight

    out: dict[PartitionKey, list[str]] = {}
    for label, keys in sorted(in_flight(spec, instance).covered.items()):
        for key in keys:
            out.setdefault(key, []).append(label)
    return {key: ", ".join(labels) for key, labels in out.items()}


def partition_states(spec: RetrainingSpec, instance: "DagsterInstance | None" = None) -> list[dict[str, Any]]:
    """One dict per known partition (static cohorts, plus any cohort seen in the data or trained).

    With ``instance`` (the Dagster instance the runs record into), what runs did since the last
    sensor tick is read first; without it, the state as the last tick left it.
    """
    state = _state(spec, instance)
    entries = model_store(spec).entries()
    trained = state.trained()
    cells = {k: Cell(*v) for k, v in state.cells().items()}
    definition = state.get_meta(DEFINITION)
    attempts = state.attempts()
    acknowledged = state.acknowledged()
    most = spec.change_detection.retry.max_attempts
    keys = [w.key for w in windows(spec)]
    cohorts = sorted(set(spec.cohorts) | {c for _, c in cells} | {k.cohort for k in trained})
    running = _in_flight(spec, instance)
    rows = []
    for window in keys:
        for cohort in cohorts:
            key = PartitionKey(window, cohort)
            record, entry = trained.get(key), entries.get(key)
            observed = partition_fingerprint(cells, training_windows(window, keys, spec.windows.lookback), cohort) if cells else None
            if record is None:
                status = "never trained" if observed not in (None, EMPTY) else "no data"
            elif definition is not None and record.definition != definition and record.status == "trained":
                status = "stale: definition changed"
            elif record.run_id == "rollback" and acknowledged.get(key, ("", 0.0))[0] == observed:
                status = "rolled back: serves an older model until the data changes"
            elif observed is not None and observed != record.fingerprint:
                status = "stale: data changed"
                made = attempts.get((key, observed), (0, 0.0))[0]
                if made:
                    status += f" ({made} of {most} requests made" + ("; given up until the data changes)" if made >= most else ")")
            elif record.status == "skipped":
                status = "skipped"
            elif record.status == "failed":
                status = f"failed: {record.error}"
            elif record.status == "rejected":
                status = "current (newest candidate rejected by the gate)"
            else:
                status = "current"
            if key in running:
                status += f" ({running[key]} in flight)"
            rows.append(
                {
                    "partition": key,
                    "state": status,
                    "record": record,
                    "entry": entry,
                    "observed_fingerprint": observed,
                }
            )
    return rows


def status_rows(spec: RetrainingSpec, instance: "DagsterInstance | None" = None) -> list[tuple]:
    from datetime import datetime

    out = []
    for item in partition_states(spec, instance):
        key, record, entry = item["partition"], item["record"], item["entry"]
        out.append(
            (
                key.window,
                key.cohort,
                item["state"],
                record.rows if record else None,
                entry.get("auc_holdout") if entry else None,
                entry.get("reason") if entry else None,
                datetime.fromtimestamp(record.trained_at).strftime("%Y-%m-%d %H:%M:%S") if record else None,
            )
        )
    return out


def explain(spec: RetrainingSpec, key: PartitionKey, instance: "DagsterInstance | None" = None) -> str:
    """Why ``key`` was or was not retrained: its state, model, and the requests that named it."""
    item = next((i for i in partition_states(spec, instance) if i["partition"] == key), None)
    if item is None:
        return f"{key}: not a partition of {spec.name!r} (windows {windows(spec)[0].key}..{windows(spec)[-1].key})"
    record, entry = item["record"], item["entry"]
    lines = [f"partition {key} of {spec.name!r}: {item['state']}"]
    if record:
        lines.append(
            f"  last run {record.run_id}: {record.status} on {record.rows} rows, fingerprint {record.fingerprint}"
        )
    lines.append(f"  data as last observed by the sensor: fingerprint {item['observed_fingerprint']}")
    if entry:
        lines.append(
            f"  serving model {entry['path']} (sha256 {entry['sha256'][:16]}), reason {entry.get('reason')}, "
            f"holdout AUC {entry.get('auc_holdout')}, change: {entry.get('change') or '-'}"
        )
    history = [r for r in state_store(spec).requests() if r[1] == key]
    if history:
        lines.append("  requested by the change sensor:")
        lines += [f"    tick {seq}: {reason} ({detail})" for seq, _, reason, _, detail in history]
    else:
        lines.append("  never requested by the change sensor (no change reached it since it was trained)")
    return "\n".join(lines)


def savings(spec: RetrainingSpec, instance: "DagsterInstance | None" = None) -> list[tuple]:
    """The savings ledger, per sensor update: (tick, at, requested, promoted, rejected, failed or
    pending, partitions not retrained, training seconds avoided, reasons).

    Requested partitions are split by what their runs ended with (recorded by the runs): a
    candidate the gate rejected, or a run that failed or has not finished, is no retrain.
    """
    from datetime import datetime

    state = _state(spec, instance)
    outcomes = state.outcomes()
    rows = []
    for row in state.ledger():
        done = outcomes.get(row.seq, {})
        promoted, rejected = done.get("trained", 0), done.get("rejected", 0)
        rows.append(
            (
                row.seq,
                datetime.fromtimestamp(row.at).strftime("%Y-%m-%d %H:%M:%S"),
                row.requested,
                promoted,
                rejected,
                row.requested - promoted - rejected,
                row.skipped,
                round(row.seconds_avoided, 3),
                row.reasons,
            )
        )
    return rows
