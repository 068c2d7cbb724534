"""ModelStore: per-partition artifacts and per-partition records, each written atomically.

Layout under ``root``::

    artifacts/<window>/<cohort>/<sha256[:16]><suffix>   one file per trained model, never rewritten
    entries/<window>/<cohort>.json                      that partition's current entry, history,
                                                        rejected and rolled-back candidates
    locks/<window>/<cohort>.lock                        the partition's training lock (flock)
    locks/<window>/<cohort>.record.lock                 serializes updates of its record (flock)

(``<window>``/``<cohort>`` are :func:`~retrain_plugins.partitions.path_segment` values; the real
ones are inside each record.) An artifact is written to a temporary file in the same folder,
fsynced, then renamed into place under its content hash; only after that is the partition's
record (also temp + fsync + rename) switched to it. A crash at any point leaves the previous
record, which names only complete files, so a failed run never replaces a good model; at worst an
artifact no record names is left (an orphan: ``retrain verify --clean`` removes it). A put reads
and writes its own partition's record only, so its cost does not grow with the store.

History is bounded: a put keeps the newest ``keep_versions`` versions (current included) and
deletes the artifacts of older ones, unless a kept entry or ``bundle.json`` still names them.
A store written with one ``manifest.json`` is migrated on open (:func:`migrate_manifest`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from retrain_plugins.errors import StoreError
from retrain_plugins.partitions import PartitionKey, path_segment
from retrain_plugins.store_records import (
    ENTRIES, MANIFEST, ROLES, atomic_write_text, empty_record, flocked, malformed, migrate_manifest, read_json,
    record_problem, record_relpath, sha256_file,
)

__all__ = ["ModelStore", "atomic_write_text", "sha256_file", "MANIFEST"]
BUNDLE = "bundle.json"  # the routing bundle (routing.py); its artifacts are never deleted by retention
Record = dict[str, Any]


class ModelStore:
    """Artifacts and per-partition records of one retraining's sub-models.

    Args:
        root: The store's folder.
        keep_versions: Versions kept per partition, the current one included (``store.keep_versions``).
    """

    def __init__(self, root: Path, keep_versions: int = 5):
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, not {keep_versions}")
        self.root = Path(root)
        self.keep_versions = keep_versions
        self._migrated = False

    @property
    def manifest_path(self) -> Path:
        """The legacy one-file manifest (migrated away on open; absent in a current store)."""
        return self.root / MANIFEST

    def record_path(self, key: PartitionKey) -> Path:
        """The file holding ``key``'s record."""
        return self.root / record_relpath(key)

    def path_of(self, entry: dict[str, Any]) -> Path:
        return self.root / entry["path"]

    # -- reading ---------------------------------------------------------------------------

    def _open(self) -> None:
        if not self._migrated:
            migrate_manifest(self.root)
            self._migrated = True

    def _read_record(self, path: Path) -> Record | None:
        if not path.exists():
            return None
        record = read_json(path, "model store record")
        if problem := record_problem(record, path.relative_to(self.root)):
            raise malformed("model store record", path, problem)
        return record

    def record(self, key: PartitionKey) -> Record | None:
        """``key``'s whole record (current, history, rejected, rolled_back), or ``None``."""
        self._open()
        return self._read_record(self.record_path(key))

    def records(self) -> dict[PartitionKey, Record]:
        """Every partition's record, checked."""
        self._open()
        folder = self.root / ENTRIES
        out: dict[PartitionKey, Record] = {}
        for path in sorted(folder.glob("*/*.json")) if folder.exists() else []:
            if (record := self._read_record(path)) is not None:  # None: gone since the listing
                out[PartitionKey(record["window"], record["cohort"])] = record
        return out

    def entries(self) -> dict[PartitionKey, dict[str, Any]]:
        """The current entry of every partition that has one."""
        return {key: r["current"] for key, r in self.records().items() if r.get("current")}

    def history(self, key: PartitionKey) -> list[dict[str, Any]]:
        """``key``'s kept previous versions, oldest first (the current one not included)."""
        return (self.record(key) or {}).get("history", [])

    def rejected(self, key: PartitionKey) -> list[dict[str, Any]]:
        return (self.record(key) or {}).get("rejected", [])

    # -- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def partition_lock(self, key: PartitionKey) -> Iterator[None]:
        """Exclusive lock of one partition, across processes: two runs of the same partition
        serialize (the second trains on whatever data is current when it gets the lock)."""
        with flocked(self.root / "locks" / path_segment(key.window) / f"{path_segment(key.cohort)}.lock"):
            yield

    @contextlib.contextmanager
    def _updating(self, key: PartitionKey) -> Iterator[Record]:
        """``key``'s record under its own record lock; written back (atomically) on success."""
        self._open()
        lock = self.root / "locks" / path_segment(key.window) / f"{path_segment(key.cohort)}.record.lock"
        with flocked(lock):
            record = self._read_record(self.record_path(key)) or empty_record(key)
            yield record
            atomic_write_text(self.record_path(key), json.dumps(record, indent=1, sort_keys=True))

    def put(
        self,
        key: PartitionKey,
        write: Callable[[Path], None],
        suffix: str,
        metadata: dict[str, Any],
        promote: bool = True,
    ) -> dict[str, Any]:
        """Write an artifact with ``write(tmp_path)``; make it the partition's current model.

        With ``promote=False`` (a candidate the gate rejected) the artifact is kept and listed
        under the partition's ``rejected`` candidates, and the current model is left as it is.
        Then retention: versions beyond ``keep_versions`` are dropped from the record and, once
        the record is written, their artifacts deleted (see :meth:`_trim`).
        """
        folder = self.root / "artifacts" / path_segment(key.window) / path_segment(key.cohort)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".incoming.", suffix=suffix)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            write(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            digest = sha256_file(tmp)
            final = folder / f"{digest[:16]}{suffix}"
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        entry = {
            "fingerprint": None,  # every entry has one (validated on read); the caller's wins
            **metadata,
            "window": key.window,
            "cohort": key.cohort,
            "path": str(final.relative_to(self.root)),
            "sha256": digest,
            "size_bytes": final.stat().st_size,
            "mtime_ns": final.stat().st_mtime_ns,
            "created_at": time.time(),
        }
        with self._updating(key) as record:
            if not promote:
                record.setdefault("rejected", []).append(entry)
            else:
                if record["current"]:
                    record["history"].append(record["current"])
                record["current"] = entry
            dropped = self._trim(record)
        self._delete_unreferenced(dropped, record)
        return entry

    def _trim(self, record: Record) -> list[dict[str, Any]]:
        """Keep the newest ``keep_versions`` versions (current included) and as many rejected and
        rolled-back candidates; return the entries dropped."""
        dropped = []
        for role, keep in (("history", self.keep_versions - 1), ("rejected", self.keep_versions), ("rolled_back", self.keep_versions)):
            entries = record.get(role, [])
            cut = max(len(entries) - keep, 0)
            dropped += entries[:cut]
            record[role] = entries[cut:]
        return dropped

    def _delete_unreferenced(self, dropped: list[dict[str, Any]], record: Record) -> None:
        """Delete the artifacts of ``dropped`` entries that nothing still names.

        Kept: files the record still names (content-addressed: one file can be several entries)
        and files ``bundle.json`` routes to. An unreadable bundle keeps everything.
        """
        if not dropped:
            return
        kept = {(self.root / e["path"]).resolve() for e in _entries_of(record)}
        bundled = self.bundled_paths()
        if bundled is None:
            return
        for entry in dropped:
            path = self.path_of(entry).resolve()
            if path not in kept and path not in bundled:
                path.unlink(missing_ok=True)

    def bundled_paths(self) -> set[Path] | None:
        """Artifacts a ``bundle.json`` routes to: this store's, and its parent's (the fallback
        store lives in ``<store>/_fallback``). ``None`` when a bundle cannot be read."""
        out: set[Path] = set()
        for folder in (self.root, self.root.parent):
            path = folder / BUNDLE
            if not path.exists():
                continue
            try:
                bundle = json.loads(path.read_text())
                routed = [e for entries in bundle["routes"].values() for e in entries]
                routed += [bundle["fallback"]] if bundle.get("fallback") else []
                out |= {(folder / e["path"]).resolve() for e in routed}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return None
        return out

    def rollback(self, key: PartitionKey, to: str | None = None) -> dict[str, Any]:
        """Make a kept previous version of ``key`` current again; return it.

        Args:
            key: The partition.
            to: A sha256 (or prefix) of the version to serve; ``None``: the previous one.

        The versions it replaces are kept under ``rolled_back`` (their files stay), so a rollback
        is itself reversible by hand. Only kept versions can be served again: an older one (beyond
        ``keep_versions``) raises a :class:`StoreError` saying so.
        """
        with self._updating(key) as record:
            history = record["history"]
            kept = f"store.keep_versions = {self.keep_versions} keeps the newest {self.keep_versions} version(s), current included"
            if not history and to is None:
                raise StoreError(f"{key} has no previous version to roll back to ({kept})")
            index = len(history) - 1
            if to is not None:
                matches = [i for i, e in enumerate(history) if e["sha256"].startswith(to)]
                if not matches:
                    listed = ", ".join(e["sha256"][:16] for e in reversed(history)) or "none"
                    raise StoreError(
                        f"{key}: version {to} is not in the kept history (it is current, gone, or never was): "
                        f"{kept}; the previous versions kept are {listed}"
                    )
                index = matches[-1]
            target = history[index]
            self.verified_path(target)
            record["rolled_back"] = [*record.get("rolled_back", []), *reversed(history[index + 1 :]), record["current"]]
            record["history"] = history[:index]
            record["current"] = {**target, "rolled_back_at": time.time()}
            dropped = self._trim(record)
        self._delete_unreferenced(dropped, record)
        return record["current"]

    def verified_path(self, entry: dict[str, Any]) -> Path:
        """The artifact's path after checking its checksum against its record."""
        path = self.path_of(entry)
        if not path.exists():
            raise StoreError(f"artifact {path} of {entry['window']}/{entry['cohort']} is missing")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise StoreError(
                f"artifact {path} of {entry['window']}/{entry['cohort']} is corrupted: "
                f"sha256 {actual[:16]}... != record {entry['sha256'][:16]}..."
            )
        return path


def _entries_of(record: Record) -> list[dict[str, Any]]:
    return [entry for _, entry in referenced_entries(record)]


def referenced_entries(record: Record) -> list[tuple[str, dict[str, Any]]]:
    """(role, entry) of every entry a record names."""
    out = [("current", record["current"])] if record.get("current") else []
    return out + [(role, e) for role in ROLES for e in record.get(role, [])]
