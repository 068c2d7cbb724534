"""The change-detection state store: a small SQLite file under the retraining's data dir.

It is the change sensor's own (one writer per fact): what it last saw of the source files (so a
tick without file changes reads no data), its copy of what each sub-model was last trained on
(read from the runs' Dagster events at every tick, :mod:`retrain_plugins.dagster.outcomes`), and
its log of requests and savings. The sensor cursor stays a tick counter. Runs never open it.

The file itself (versioned schema, upgrades, damage checks, one transaction per tick) is
:class:`retrain_plugins.changes.state_file.StateFile`; this module holds the records.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from retrain_plugins.changes.state_file import StateFile
from retrain_plugins.changes.state_schema import (  # noqa: F401 - the records are part of this module's API
    _FILE_COLUMNS, SCANS, SCHEMA_VERSION, FileState, LedgerRow, Trained, in_region,
)
from retrain_plugins.partitions import PartitionKey


class StateStore(StateFile):
    """Change-detection state of one retraining (``<data_dir>/state/<name>/state.sqlite``)."""

    # -- files -----------------------------------------------------------------------------
    def files(self) -> dict[tuple[str, str], FileState]:
        with self._connect() as con:
            rows = con.execute(f"SELECT source, path, {_FILE_COLUMNS} FROM files").fetchall()
        return {(s, p): FileState(*rest) for s, p, *rest in rows}

    def save_files(self, changed: dict[tuple[str, str], FileState | None]) -> None:
        """Record new states (``None`` deletes the entry) in one transaction.

        Each call is the commit of one detection pass: it also counts the pass (counter
        :data:`SCANS`, read by :meth:`scans`), so a full check is done when its result is recorded.
        """
        with self._connect() as con:
            for (source, path), state in changed.items():
                if state is None:
                    con.execute("DELETE FROM files WHERE source = ? AND path = ?", (source, path))
                else:
                    con.execute(
                        f"INSERT OR REPLACE INTO files (source, path, {_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (source, path, *state),
                    )
            con.execute(
                "INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1", (SCANS,)
            )

    def scans(self) -> int:
        """How many detection passes have been committed (:meth:`save_files` calls)."""
        with self._connect() as con:
            row = con.execute("SELECT value FROM counters WHERE name = ?", (SCANS,)).fetchone()
        return row[0] if row else 0

    def refresh_files(self, stats: Mapping[tuple[str, str], tuple[int, int]]) -> None:
        """Record new (ctime_ns, inode) of files whose content token matched the recorded one.

        Written at once, not with the pass's commit: the content is the recorded content, so the
        record stays true whatever happens to the rest of the tick.
        """
        with self._connect() as con:
            con.executemany(
                "UPDATE files SET ctime_ns = ?, inode = ? WHERE source = ? AND path = ?",
                [(ctime, inode, source, path) for (source, path), (ctime, inode) in stats.items()],
            )

    # -- observed cells ----------------------------------------------------------------------
    def cells(self) -> dict[tuple[str, str], tuple[int, str]]:
        """Last observed (rows, digest) of every (window, cohort) cell."""
        with self._connect() as con:
            rows = con.execute("SELECT window, cohort, rows, digest FROM cells").fetchall()
        return {(w, c): (n, d) for w, c, n, d in rows}

    def label_digests(self) -> dict[tuple[str, str], str | None]:
        """Last observed label digest of every cell (``None``: not known, e.g. a migrated store)."""
        with self._connect() as con:
            rows = con.execute("SELECT window, cohort, label_digest FROM cells").fetchall()
        return {(w, c): d for w, c, d in rows}

    def save_cells(
        self,
        region: Mapping[str, Collection[str] | None],
        cells: dict[tuple[str, str], tuple[int, str]],
        label_digests: dict[tuple[str, str], str],
    ) -> None:
        """Replace the observed cells of ``region`` (window -> cohorts, None: all) with ``cells``.

        Cells of the region missing from ``cells`` are gone from the data and vanish.
        """
        with self._connect() as con:
            for window, cohorts in region.items():
                if cohorts is None:
                    con.execute("DELETE FROM cells WHERE window = ?", (window,))
                else:
                    con.executemany("DELETE FROM cells WHERE window = ? AND cohort = ?", [(window, c) for c in cohorts])
            con.executemany(
                "INSERT INTO cells VALUES (?, ?, ?, ?, ?)",
                [(w, c, *cells[(w, c)], label_digests.get((w, c))) for w, c in cells if in_region(region, (w, c))],
            )

    # -- online store ----------------------------------------------------------------------
    def get_meta(self, name: str) -> str | None:
        with self._connect() as con:
            row = con.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_meta(self, name: str, value: str) -> None:
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    # -- run events read ---------------------------------------------------------------------
    def ingested(self) -> dict[int, float]:
        """Storage ids of the run events applied above the settled cursor -> when first read."""
        with self._connect() as con:
            return dict(con.execute("SELECT storage_id, seen_at FROM ingested").fetchall())

    def record_ingested(self, storage_ids: Iterable[int], seen_at: float, settled: int) -> None:
        """Mark ``storage_ids`` applied and forget the ids at or below ``settled`` (never read again)."""
        with self._connect() as con:
            con.executemany("INSERT OR IGNORE INTO ingested VALUES (?, ?)", [(i, seen_at) for i in storage_ids])
            con.execute("DELETE FROM ingested WHERE storage_id <= ?", (settled,))

    # -- trained fingerprints ----------------------------------------------------------------
    def trained(self) -> dict[PartitionKey, Trained]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT window, cohort, fingerprint, rows, status, run_id, trained_at, definition, "
                "training_seconds, error FROM trained"
            ).fetchall()
        return {PartitionKey(w, c): Trained(*rest) for w, c, *rest in rows}

    def record_trained(
        self,
        key: PartitionKey,
        fingerprint: str,
        rows: int,
        status: str,
        run_id: str | None,
        definition: str,
        training_seconds: float | None = None,
        error: str | None = None,
        trained_at: float | None = None,
    ) -> None:
        """What ``key``'s model answers now (the sensor's copy of a run's record, or a rebuild)."""
        at = time.time() if trained_at is None else trained_at
        with self._connect() as con:
            con.execute(
                "INSERT OR REPLACE INTO trained VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key.window, key.cohort, fingerprint, rows, status, run_id, at, definition, training_seconds, error),
            )

    # -- savings ledger ------------------------------------------------------------------------
    def record_ledger(self, seq: int, requested: int, skipped: int, seconds_avoided: float, reasons: str) -> None:
        with self._connect() as con:
            con.execute(
                "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?)",
                (seq, time.time(), requested, skipped, seconds_avoided, reasons),
            )

    def record_outcome(self, seq: int, key: PartitionKey, status: str, run_id: str | None, at: float | None = None) -> None:
        """What the run requested by tick ``seq`` did with ``key`` (trained, rejected, failed, skipped)."""
        at = time.time() if at is None else at
        with self._connect() as con:
            con.execute("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?)", (seq, key.window, key.cohort, status, run_id, at))

    def outcomes(self) -> dict[int, dict[str, int]]:
        """Per requesting tick, how many of its partitions' runs ended with each status (latest per partition)."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT seq, status, count(*) FROM (SELECT seq, status, row_number() OVER "
                "(PARTITION BY seq, window, cohort ORDER BY at DESC) AS n FROM outcomes) WHERE n = 1 GROUP BY 1, 2"
            ).fetchall()
        out: dict[int, dict[str, int]] = {}
        for seq, status, n in rows:
            out.setdefault(seq, {})[status] = n
        return out

    def ledger(self) -> list[LedgerRow]:
        with self._connect() as con:
            rows = con.execute("SELECT * FROM ledger ORDER BY seq").fetchall()
        return [LedgerRow(*r) for r in rows]

    # -- requests ----------------------------------------------------------------------------
    def next_seq(self) -> int:
        with self._connect() as con:
            con.execute(
                "INSERT INTO counters VALUES ('tick', 1) ON CONFLICT(name) DO UPDATE SET value = value + 1"
            )
            return con.execute("SELECT value FROM counters WHERE name = 'tick'").fetchone()[0]

    def advance_seq(self, past: int) -> None:
        """Make the next tick number greater than ``past`` (a rebuilt store continues the numbering
        of the ticks before it: their run keys and request logs must not be used again)."""
        with self._connect() as con:
            con.execute(
                "INSERT INTO counters VALUES ('tick', ?) ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
                (past,),
            )

    def log_requests(self, seq: int, rows: Iterable[tuple[PartitionKey, str, str, str]]) -> None:
        now = time.time()
        with self._connect() as con:
            con.executemany(
                "INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(seq, k.window, k.cohort, reason, fp, detail, now) for k, reason, fp, detail in rows],
            )

    def requests(self, seq: int | None = None) -> list[tuple[int, PartitionKey, str, str, str]]:
        """The request log: (seq, partition, reason, fingerprint, detail), of every tick or of tick ``seq``."""
        with self._connect() as con:
            return _logged_requests(con, seq)

    def attempts(self) -> dict[tuple[PartitionKey, str], tuple[int, float]]:
        """Per partition, its latest requested fingerprint -> (requests in a row for it, when the last was).

        Requests for one partition count as attempts at the same data while their fingerprint stays
        the same; a request for other data starts the count again (data that changes back to an
        earlier state is new work, not a retry).
        """
        with self._connect() as con:
            rows = con.execute(
                "SELECT window, cohort, fingerprint, requested_at FROM requests ORDER BY window, cohort, seq"
            ).fetchall()
        latest: dict[PartitionKey, tuple[str, int, float]] = {}
        for w, c, fp, at in rows:
            key = PartitionKey(w, c)
            previous = latest.get(key)
            latest[key] = (fp, previous[1] + 1 if previous and previous[0] == fp else 1, at)
        return {(k, fp): (n, at) for k, (fp, n, at) in latest.items()}

    # -- acknowledged baselines --------------------------------------------------------------
    def acknowledged(self) -> dict[PartitionKey, tuple[str, float]]:
        """Data fingerprints accepted without a run (definition change, rollback), with when."""
        with self._connect() as con:
            rows = con.execute("SELECT window, cohort, fingerprint, at FROM acknowledged").fetchall()
        return {PartitionKey(w, c): (fp, at) for w, c, fp, at in rows}

    def acknowledge(self, fingerprints: Mapping[PartitionKey, str], replace: bool = True) -> None:
        """Record ``fingerprints`` as accepted now (``replace``: instead of every earlier one)."""
        now = time.time()
        with self._connect() as con:
            if replace:
                con.execute("DELETE FROM acknowledged")
            con.executemany(
                "INSERT OR REPLACE INTO acknowledged VALUES (?, ?, ?, ?)",
                [(k.window, k.cohort, fp, now) for k, fp in fingerprints.items()],
            )


_REQUESTS = "SELECT seq, window, cohort, reason, fingerprint, detail FROM requests"


def _logged_requests(con: sqlite3.Connection, seq: int | None) -> list[tuple[int, PartitionKey, str, str, str]]:
    where, args = (" WHERE seq = ?", (seq,)) if seq is not None else ("", ())
    rows = con.execute(f"{_REQUESTS}{where} ORDER BY seq, window, cohort", args).fetchall()
    return [(s, PartitionKey(w, c), reason, fp, detail) for s, w, c, reason, fp, detail in rows]


def read_requests(path: Path, seq: int) -> list[tuple[int, PartitionKey, str, str, str]] | None:
    """Tick ``seq``'s request log, for a reader that is not the sensor (a run on the sensor's host).

    Read only: unlike opening a :class:`StateStore`, this never creates, migrates or writes the
    sensor's file. None when there is no store at ``path`` or it has no request log yet.
    """
    if not Path(path).exists():
        return None
    con = sqlite3.connect(path, timeout=30.0)
    try:
        return _logged_requests(con, seq)
    except sqlite3.OperationalError:  # no requests table (an empty or foreign file)
        return None
    finally:
        con.close()
