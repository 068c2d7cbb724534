"""Which partitions changed since their sub-model was trained, and why.

Cheap first: a listing of the source files (path, size, mtime) is compared with the last one; a
tick without file changes reads no data at all. Only windows that a changed file can reach are
re-fingerprinted: a label file reaches the windows its timestamps fall in, a feature file the
windows whose label times lie within the feature view's TTL after its rows. Both the new and the
previously recorded time range of a changed file count, so rewritten or deleted rows are seen.
Then the exact fingerprint of each candidate partition's training set decides: a rewritten but
identical file requests nothing. With lookback L, a changed window also reaches its L-1 followers.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from retrain_plugins.changes.fingerprints import EMPTY, partition_fingerprint, source_cells
from retrain_plugins.changes.state import FileState, StateStore, Trained
from retrain_plugins.errors import DataError
from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.layout import state_path
from retrain_plugins.partitions import PartitionKey, Window, dependents, training_windows, windows
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.sql import connect, ident, parquet

LABELS = "labels"

REASONS = ("new_data", "late_data", "edited_rows", "drift", "new_cohort", "definition_change", "manual")


@dataclasses.dataclass(frozen=True)
class PartitionChange:
    partition: PartitionKey
    reason: str
    fingerprint: str
    rows: int
    detail: str


@dataclasses.dataclass
class ChangeReport:
    """What one detection pass found; ``commit()`` records the file listing it was based on."""

    changes: list[PartitionChange]
    changed_files: list[str]
    unreadable: dict[str, str]
    unknown_cohorts: list[str]
    files_seen: int
    _pending: dict = dataclasses.field(default_factory=dict, repr=False)
    _state: StateStore | None = dataclasses.field(default=None, repr=False)

    def commit(self) -> None:
        if self._state is not None and self._pending:
            self._state.save_files(self._pending)
            self._pending = {}


def state_store(spec: RetrainingSpec) -> StateStore:
    return StateStore(state_path(spec))


def _sources(spec: RetrainingSpec, view: FeatureServiceView) -> dict[str, tuple[str, str, float]]:
    """source name -> (glob, timestamp column, reach in seconds past a row's timestamp)."""
    sources = {LABELS: (spec.label_glob, spec.labels.timestamp_column, 0.0)}
    for fv in view.views:
        reach = fv.ttl_seconds if fv.ttl_seconds is not None else float("inf")
        sources[fv.name] = (fv.source_path, fv.timestamp_field, reach)
    return sources


def _listing(pattern: str) -> dict[str, tuple[int, int]]:
    found = {}
    for path in glob.glob(pattern):
        try:
            st = os.stat(path)
        except FileNotFoundError:  # removed between glob and stat
            continue
        found[path] = (st.st_size, st.st_mtime_ns)
    return found


def _time_range(path: str, column: str) -> tuple[int | None, int | None]:
    con = connect()
    try:
        lo, hi = con.execute(
            f"SELECT epoch_us(min({ident(column)})), epoch_us(max({ident(column)})) FROM {parquet('p')}",
            {"p": path},
        ).fetchone()
    except Exception as exc:  # duckdb's IO/Binder/InvalidInput errors: all mean "cannot use this file"
        raise DataError(f"{path}: cannot read timestamp column {column!r}: {exc}") from exc
    return lo, hi


def _reached_windows(all_windows: list[Window], lo_us: int, hi_us: int, reach: float) -> set[str]:
    lo = datetime.fromtimestamp(lo_us / 1e6, tz=timezone.utc)
    hi = datetime.max.replace(tzinfo=timezone.utc) if reach == float("inf") else (
        datetime.fromtimestamp(hi_us / 1e6, tz=timezone.utc) + timedelta(seconds=reach)
    )
    return {w.key for w in all_windows if w.start <= hi and w.end > lo}


def _reason(trained: Trained | None, fingerprint: str, rows: int) -> str:
    if trained is None or trained.fingerprint == EMPTY:
        return "new_data"
    if rows > trained.rows:
        return "late_data"
    return "edited_rows"


def detect_changes(spec: RetrainingSpec, view: FeatureServiceView, state: StateStore) -> ChangeReport:
    """Compare sources with the state store; return the partitions whose training set changed."""
    all_windows = windows(spec)
    keys = [w.key for w in all_windows]
    previous = state.files()
    pending: dict[tuple[str, str], FileState | None] = {}
    unreadable: dict[str, str] = {}
    reached: set[str] = set()
    files_seen = 0
    for source, (pattern, ts_column, reach) in _sources(spec, view).items():
        now = _listing(pattern)
        files_seen += len(now)
        old = {p: s for (src, p), s in previous.items() if src == source}
        for path in sorted(set(now) | set(old)):
            before = old.get(path)
            if path in now and before is not None and (before.size, before.mtime_ns) == now[path]:
                continue
            ranges = []
            if before is not None and before.ts_min is not None:
                ranges.append((before.ts_min, before.ts_max))
            if path in now:
                try:
                    lo, hi = _time_range(path, ts_column)
                except DataError as exc:
                    unreadable[path] = str(exc)
                    continue
                pending[(source, path)] = FileState(*now[path], lo, hi)
                if lo is not None:
                    ranges.append((lo, hi))
            else:
                pending[(source, path)] = None
            for lo, hi in ranges:
                reached |= _reached_windows(all_windows, lo, hi, reach)

    affected = {d for w in reached for d in dependents(w, keys, spec.windows.lookback)}
    needed = {t for w in affected for t in training_windows(w, keys, spec.windows.lookback)}
    cells = source_cells(spec, view, [w for w in all_windows if w.key in needed])
    trained = state.trained()
    changes = []
    for window in sorted(affected, key=keys.index):
        span = training_windows(window, keys, spec.windows.lookback)
        for cohort in spec.cohorts:
            key = PartitionKey(window, cohort)
            fingerprint = partition_fingerprint(cells, span, cohort)
            before = trained.get(key)
            if fingerprint == (before.fingerprint if before else EMPTY):
                continue
            rows = sum(cells[(w, cohort)].rows for w in span if (w, cohort) in cells)
            changed = [w for w in span if (w, cohort) in cells or before is not None]
            detail = f"windows {changed[0]}..{changed[-1]}" if changed else ""
            changes.append(PartitionChange(key, _reason(before, fingerprint, rows), fingerprint, rows, detail))
    known = set(spec.cohorts)
    unknown = sorted({c for _, c in cells} - known)
    return ChangeReport(
        changes=changes,
        changed_files=sorted(p for _, p in pending),
        unreadable=unreadable,
        unknown_cohorts=unknown,
        files_seen=files_seen,
        _pending=pending,
        _state=state,
    )
