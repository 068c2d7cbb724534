"""Which partitions changed since their sub-model was trained, and why.

Cheap first: only windows that a changed source file can reach are re-fingerprinted (see
:mod:`retrain_plugins.changes.scan`; a tick without file changes reads no data). Where only label
files reach a window, the
label rows alone are digested first (no join), and the feature join runs only for the cohorts whose
label rows changed; a feature file's windows are joined for every cohort. Changed (window, cohort)
cells, compared with the cells last observed, make their partitions and the partitions' lookback
followers candidates;
a candidate is requested when its exact training-set fingerprint differs from the one its
sub-model was trained on (a rewritten but identical file requests nothing).

A change of definition (feature service, labels, lookback, trainer) re-baselines every cell and
follows the spec's policy: ``mark_stale`` requests nothing, ``retrain_all`` requests every
partition with data.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import polars as pl

from retrain_plugins.changes.drift import detect_drift
from retrain_plugins.changes.fingerprints import EMPTY, Cell, definition_version, frame_cells, partition_fingerprint
from retrain_plugins.changes.reconcile import RETRY, unsettled
from retrain_plugins.changes.report import DEFINITION, ChangeReport, Observed, PartitionChange
from retrain_plugins.changes.scan import scan_files
from retrain_plugins.changes.state import StateStore, Trained, in_region
from retrain_plugins.columns import model_features
from retrain_plugins.tasks import resolve_task
from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.layout import state_path, training_set_rel, training_sets
from retrain_plugins.partitions import PartitionKey, Window, dependents, training_windows, windows
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.sources import LABELS
from retrain_plugins.training_sets import WINDOW_COL, asof_training_set, blank_cohort_rows, label_rows

def state_store(spec: RetrainingSpec) -> StateStore:
    """The retraining's state store; a missing one is rebuilt from the model store (no surprise full retrain)."""
    state = StateStore(state_path(spec))
    if state.created:
        from retrain_plugins.changes.rebuild import rebuild_trained
        from retrain_plugins.changes.request_log import last_logged_seq
        from retrain_plugins.layout import model_store

        rebuild_trained(state, model_store(spec), last_logged_seq(spec))
    return state


def current_fingerprint(spec: RetrainingSpec, state: StateStore, key: PartitionKey) -> str:
    """The fingerprint of ``key``'s data as the sensor last observed it (its stored cells)."""
    keys = [w.key for w in windows(spec)]
    cells = {k: Cell(*v) for k, v in state.cells().items()}
    return partition_fingerprint(cells, training_windows(key.window, keys, spec.windows.lookback), key.cohort)


def _reason(trained: Trained | None, rows: int, known: bool) -> str:
    if not known:
        return "new_cohort"
    if trained is None or trained.fingerprint == EMPTY:
        return "new_data"
    if rows > trained.rows:
        return "late_data"
    return "edited_rows"


def _reference(spec: RetrainingSpec, key: PartitionKey, keys: Sequence[str]) -> pl.DataFrame | None:
    """What the current model of ``key`` saw: its own training set, else the previous window's."""
    i = keys.index(key.window)
    storage = training_sets(spec)
    for window in (key.window, keys[i - 1] if i else None):
        if window is not None:
            try:
                return pl.read_parquet(io.BytesIO(storage.read_bytes(training_set_rel(PartitionKey(window, key.cohort)))))
            except FileNotFoundError:
                continue
    return None


def _label_changed_cells(
    spec: RetrainingSpec,
    state: StateStore,
    before: dict[tuple[str, str], tuple[int, str]],
    windows: list[Window],
    excluded: frozenset[str],
) -> set[tuple[str, str]]:
    """Cells of ``windows`` whose label rows changed (new, edited, gone), from a scan without any join.

    A cell without a recorded label digest (a store from before they were kept) counts as changed.
    """
    if not windows:
        return set()
    keys = {w.key for w in windows}
    labels = frame_cells(spec, None, label_rows(spec, windows, None, excluded))
    recorded = state.label_digests()

    def changed(cell: tuple[str, str]) -> bool:
        if cell not in labels or cell not in before or recorded.get(cell) is None:
            return True
        return labels[cell] != Cell(before[cell][0], recorded[cell])

    return {k for k in set(labels) | {k for k in before if k[0] in keys} if changed(k)}


def _region(
    spec: RetrainingSpec,
    state: StateStore,
    before: dict[tuple[str, str], tuple[int, str]],
    all_windows: list[Window],
    reached: set[str],
    by_features: set[str],
    affected: set[str],
    excluded: frozenset[str],
) -> dict[str, frozenset[str] | None]:
    """The cells to re-fingerprint with the feature join: window key -> cohorts (None: every cohort).

    A window a changed feature file reaches changes for any cohort: the training windows of its
    affected dependents are joined for every cohort. Where only label files reach a window, a cell's
    training rows change exactly when its label rows do (its features come from unchanged files), so
    label digests pick the cells, and the training windows of their dependents are joined for those
    cohorts only.
    """
    keys, lookback = [w.key for w in all_windows], spec.windows.lookback
    region: dict[str, frozenset[str] | None] = {}

    def spread(window: str, cohort: str | None) -> None:
        for d in dependents(window, keys, lookback):
            if d not in affected:
                continue
            for t in training_windows(d, keys, lookback):
                if cohort is None:
                    region[t] = None
                elif t not in region or region[t] is not None:
                    region[t] = region.get(t, frozenset()) | {cohort}

    for window in reached & by_features:
        spread(window, None)
    label_only = [w for w in all_windows if w.key in reached - by_features]
    for window, cohort in _label_changed_cells(spec, state, before, label_only, excluded):
        spread(window, cohort)
    return region


def refused_rows(spec: RetrainingSpec, files: Sequence[str]) -> dict[str, str]:
    """Label ``files`` holding rows with a blank cohort, with a line saying so (they train nothing)."""
    column = spec.labels.cohort_column
    return {
        path: f"{path}: {n} label row(s) with an empty cohort value in column {column!r}, not trained"
        for path, n in blank_cohort_rows(spec, files=files).items()
    }


def detect_changes(
    spec: RetrainingSpec, view: FeatureServiceView, state: StateStore, known_cohorts: Sequence[str]
) -> ChangeReport:
    """Compare the sources with the state store; return the partitions to retrain and why.

    ``known_cohorts`` are the cohorts that have partitions now; cells of other cohorts are new
    cohorts (requested with reason ``new_cohort``; for static cohorts they are only reported).
    """
    all_windows = windows(spec)
    keys = [w.key for w in all_windows]
    lookback = spec.windows.lookback
    definition = definition_version(spec, view)
    scan = scan_files(spec, view, state, all_windows)
    pending, unreadable, reached, by_features, blocked, seen = scan[:6]
    definition_changed = state.get_meta(DEFINITION) not in (None, definition)
    if definition_changed:
        reached = by_features = set(keys)
    held = {d for b in blocked for d in dependents(b, keys, lookback)}
    affected = {d for w in reached for d in dependents(w, keys, lookback)} - held
    before = state.cells()
    excluded = frozenset(unreadable)
    region = _region(spec, state, before, all_windows, reached, by_features, affected, excluded)

    frame = asof_training_set(spec, view, all_windows, None, excluded, only=region) if region else None
    now = {k: (c.rows, c.digest) for k, c in frame_cells(spec, view, frame).items()} if frame is not None else {}
    now_labels = {k: c.digest for k, c in frame_cells(spec, None, frame).items()} if frame is not None else {}
    observed = {k: v for k, v in before.items() if not in_region(region, k)} | now
    changed_cells = {k for k in set(now) | {k for k in before if in_region(region, k)} if now.get(k) != before.get(k)}

    cells = {k: Cell(*v) for k, v in observed.items()}
    known = set(known_cohorts)
    data_cohorts = {c for _, c in observed}
    new_cohorts = sorted(data_cohorts - known) if spec.dynamic_cohorts else []
    trained = state.trained()
    if definition_changed:
        candidates = {PartitionKey(w, c) for w in affected for c in data_cohorts & known | set(new_cohorts)}
    else:
        candidates = {
            PartitionKey(d, c) for (w, c) in changed_cells for d in dependents(w, keys, lookback) if d in affected
        }
        # Trained partitions of the affected windows too: one whose rows all vanished has no
        # cell left to compare (its fingerprint is now EMPTY, unlike the one it was trained on).
        candidates |= {
            k
            for k, r in trained.items()
            if k.window in affected
            and r.fingerprint != EMPTY
            and partition_fingerprint(cells, training_windows(k.window, keys, lookback), k.cohort) == EMPTY
        }
    changes = []
    observed: dict[PartitionKey, Observed] = {}
    cells_before = {k: Cell(*v) for k, v in before.items()}
    for key in sorted(candidates, key=lambda k: (keys.index(k.window), k.cohort)):
        if key.cohort not in known and key.cohort not in new_cohorts:
            continue
        span = training_windows(key.window, keys, lookback)
        fingerprint = partition_fingerprint(cells, span, key.cohort)
        rows = sum(cells[(w, key.cohort)].rows for w in span if (w, key.cohort) in cells)
        previous = partition_fingerprint(cells_before, span, key.cohort)
        if previous != fingerprint:
            observed[key] = Observed(fingerprint, previous, rows)
        record = trained.get(key)
        if definition_changed and spec.change_detection.definition_change == "retrain_all" and fingerprint != EMPTY:
            changes.append(PartitionChange(key, "definition_change", fingerprint, rows, f"definition {definition}"))
            continue
        if definition_changed:
            continue
        if record is not None and record.definition == definition and record.fingerprint == fingerprint:
            continue  # unchanged (a failed or unfinished run of this data is reconciliation's)
        if record is None and fingerprint == EMPTY:
            continue
        reason = _reason(record, rows, key.cohort in known)
        detail = f"{rows} rows in {span[0]}..{span[-1]}" + (f" (was {record.rows})" if record else "")
        if reason in ("late_data", "edited_rows", "new_data"):
            reference = _reference(spec, key, keys)
            cohort = pl.col(spec.labels.cohort_column).cast(pl.String)
            current = frame.filter(pl.col(WINDOW_COL).is_in(span) & (cohort == key.cohort))
            label = spec.labels.label_column
            drift = None if reference is None else detect_drift(
                reference, current, model_features(spec, view), label, spec.change_detection.drift,
                task=resolve_task(spec, current.schema[label]),
            )
            if drift is not None and drift.drifted:
                reason, detail = "drift", f"{detail}; {drift.describe()}"
        changes.append(PartitionChange(key, reason, fingerprint, rows, detail))

    partitions_now = sorted(known | set(new_cohorts))
    acknowledged = state.acknowledged()
    new_baseline = None
    if definition_changed:
        if spec.change_detection.definition_change == "mark_stale":
            new_baseline = {
                PartitionKey(w, c): partition_fingerprint(cells, training_windows(w, keys, lookback), c)
                for w in keys
                for c in partitions_now
            }
    else:
        asked = {c.partition for c in changes}
        for found in unsettled(cells, trained, acknowledged, definition, keys, partitions_now, lookback, asked, held):
            changes.append(PartitionChange(found.partition, RETRY, found.fingerprint, found.rows, found.detail))

    stale = sum(1 for r in trained.values() if r.definition != definition and r.status == "trained")
    vanished = sorted({c for _, c in before} - data_cohorts)
    report = ChangeReport(
        changes=changes,
        changed_files=sorted(p for _, p in pending),
        changed_sources=sorted({source for source, _ in pending}),
        unreadable=unreadable,
        new_cohorts=new_cohorts if spec.dynamic_cohorts else sorted(data_cohorts - known),
        vanished_cohorts=vanished,
        stale_by_definition=stale,
        files_seen=seen,
        cells_joined=len(now),
        refused=refused_rows(spec, [p for (source, p), s in pending.items() if source == LABELS and s is not None]),
        file_problems=scan.problems,
        observed=observed,
    )
    report._commit = [
        lambda: state.save_files(pending),
        lambda: state.save_cells(region, now, now_labels),
        lambda: state.set_meta(DEFINITION, definition),
        *([lambda: state.acknowledge(new_baseline)] if new_baseline is not None else []),
    ]
    return report
