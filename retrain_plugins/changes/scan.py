"""Which windows the source files that changed since the last tick can reach.

The listing (path, size, mtime, ctime, inode: git's index fields) is compared with the one in the
state store; a tick without file changes reads no data. Where size and mtime agree but ctime or
inode do not (``cp -p``, ``rsync -t``, ``tar x`` rewrite content under the old mtime, while a
``chmod`` or a hard link changes only metadata) the file's content token decides: the same token is
the same content (only the new ctime/inode are recorded), another token is a change. With
``change_detection.full_check_every: N`` every N-th pass (counted by committed passes,
:meth:`StateStore.scans`) treats every file as changed, for sources whose metadata cannot be
trusted; the fingerprints then decide, so identical data requests nothing. A changed label file reaches the windows its timestamps fall in, a feature
file the windows whose label times lie within the feature view's TTL after its rows. Old and new
time ranges both count, so rewritten or deleted rows are seen.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone
from typing import Literal, NamedTuple

from retrain_plugins.changes.state import FileState, StateStore
from retrain_plugins.errors import DataError
from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.partitions import Window
from retrain_plugins.sources import (
    LABELS,
    FileProblem,
    FileStat,
    SourceFileError,
    content_token,
    file_stats,
    inspect_file,
    sources,
)
from retrain_plugins.spec import RetrainingSpec


class FileScan(NamedTuple):
    pending: dict[tuple[str, str], FileState | None]  # new states of changed files (None: deleted)
    unreadable: dict[str, str]  # path -> why, left out of this tick
    reached: set[str]  # window keys any changed file reaches
    by_features: set[str]  # ... that a changed feature file reaches
    blocked: set[str]  # windows an unreadable file's previous content reached
    seen: int  # files listed
    problems: tuple[FileProblem, ...] = ()  # the unreadable files with their source and column(s)


def reached_windows(all_windows: list[Window], lo_us: int, hi_us: int, reach: float) -> set[str]:
    """Keys of the windows a label can fall in and still join rows timed ``lo_us..hi_us`` (us),
    ``reach`` seconds being how long after a row a label can join it (``inf``: no TTL)."""
    lo = datetime.fromtimestamp(lo_us / 1e6, tz=timezone.utc)
    if reach == float("inf"):
        return {w.key for w in all_windows if w.end > lo}
    hi = datetime.fromtimestamp(hi_us / 1e6, tz=timezone.utc) + timedelta(seconds=reach)
    return {w.key for w in all_windows if w.start <= hi and w.end > lo}


def full_check_due(spec: RetrainingSpec, state: StateStore) -> bool:
    """Whether this pass is a full check: every ``full_check_every``-th committed pass (1-based).

    A full-check pass that is not committed (the tick failed) is repeated by the next tick.
    """
    every = spec.change_detection.full_check_every
    return every is not None and (state.scans() + 1) % every == 0


def _listed_as(before: FileState | None, now: FileStat) -> Literal["same", "changed", "ambiguous"]:
    """What a file's listing says against the recorded one (git's index rule, plus the token).

    An object-store object (its listing carries a change token: the S3 ETag, ...) is the same when
    its size and token are; its modification time is not compared (an identical re-upload keeps the
    ETag and moves the time).
    """
    if now.token is not None:
        return "same" if before is not None and (before.size, before.token) == (now.size, now.token) else "changed"
    if before is None or (before.size, before.mtime_ns) != (now.size, now.mtime_ns):
        return "changed"
    if (before.ctime_ns, before.inode) == (now.ctime_ns, now.inode):
        return "same"
    # ctime/inode moved under the old size and mtime; without a recorded token (a row from before
    # schema version 4) the file is re-inspected once and the fingerprints decide
    return "ambiguous" if before.token is not None else "changed"


def scan_files(
    spec: RetrainingSpec, view: FeatureServiceView, state: StateStore, all_windows: list[Window]
) -> FileScan:
    """Diff the source files' listing with the last one recorded in ``state``.

    A changed file that cannot be read is left out: its listing is not recorded (so it is looked at
    again next tick) and the windows its previous content reached are *blocked*: nothing that
    trains on them is evaluated until the file is readable again.
    """
    previous = state.files()
    full = full_check_due(spec, state)
    pending: dict[tuple[str, str], FileState | None] = {}
    refreshed: dict[tuple[str, str], tuple[int, int]] = {}
    unreadable: dict[str, str] = {}
    problems: list[FileProblem] = []
    reached: set[str] = set()
    by_features: set[str] = set()
    blocked: set[str] = set()
    seen = 0
    for source, described in sources(spec, view).items():
        reach = described.reach
        now = file_stats(described.pattern)
        seen += len(now)
        old = {p: s for (src, p), s in previous.items() if src == source}
        if old and not now:
            # Every file of a source gone at once is a moved mount, a typo'd glob or an emptied
            # bucket far more often than real data: refused, not read as "every row deleted".
            raise DataError(
                f"source {source!r} ({described.pattern}) lists no files; the last tick recorded "
                f"{len(old)}, e.g. {sorted(old)[0]}. Restore the files (or point the source at them)."
            )
        for path in sorted(set(now) | set(old)):
            before = old.get(path)
            token = None
            verdict = _listed_as(before, now[path]) if path in now and not full else "changed"
            if verdict == "same":
                continue
            if verdict == "ambiguous" and before is not None:
                with contextlib.suppress(OSError):  # gone or unreadable since the listing: a change
                    token = content_token(path)
                if token == before.token:  # same content: record the new ctime/inode, read nothing
                    refreshed[(source, path)] = (now[path].ctime_ns, now[path].inode)
                    continue
            ranges = [(before.ts_min, before.ts_max)] if before is not None and before.ts_min is not None else []
            if path in now:
                try:
                    token = token or now[path].token or content_token(path)
                    lo, hi = inspect_file(path, described)
                except (DataError, OSError) as exc:
                    unreadable[path] = str(exc)
                    columns = exc.columns if isinstance(exc, SourceFileError) else ()
                    problems.append(FileProblem(source, path, columns, str(exc)))
                    for lo, hi in ranges:
                        blocked |= reached_windows(all_windows, lo, hi, reach)
                    continue
                st = now[path]
                pending[(source, path)] = FileState(st.size, st.mtime_ns, lo, hi, st.ctime_ns, st.inode, token)
                if lo is not None:
                    ranges.append((lo, hi))
            else:
                pending[(source, path)] = None
            for lo, hi in ranges:
                windows_ = reached_windows(all_windows, lo, hi, reach)
                reached |= windows_
                if source != LABELS:
                    by_features |= windows_
    if refreshed:
        state.refresh_files(refreshed)
    return FileScan(pending, unreadable, reached, by_features, blocked, seen, tuple(problems))
