"""ModelStore: per-partition artifacts and per-partition records on a :class:`~retrain_plugins.storage.Storage`.

Layout under the store's root (a local folder or an fsspec URL)::

    artifacts/<window>/<cohort>/<sha256[:16]><suffix>   one object per trained model, never rewritten
    entries/<window>/<cohort>.json                      that partition's current entry, history,
                                                        rejected and rolled-back candidates

(``<window>``/``<cohort>`` are :func:`~retrain_plugins.partitions.path_segment` values; the real
ones are inside each record.) An artifact is written whole under its content hash (a temp file and
a rename locally, one PUT on an object store); only then is the partition's record switched to it,
by a conditional read-modify-write (:meth:`Storage.update`: an ``flock`` locally, ``If-Match`` on
S3), so two runs of one partition never lose each other's entries, and no lock is held while a
model trains. A crash at any point leaves the previous record, which names only complete objects,
so a failed run never replaces a good model; at worst an artifact no record names is left (an
orphan: ``retrain verify --clean`` removes it). A put reads and writes its own partition's record
only, so its cost does not grow with the store.

History is bounded: a put keeps the newest ``keep_versions`` versions (current included) and
deletes the artifacts of older ones, unless a kept entry or ``bundle.json`` still names them
(:mod:`retrain_plugins.store_versions`: retention and rollback).
A local store written with one ``manifest.json`` is migrated on open (:func:`migrate_manifest`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrain_plugins.errors import StoreError
from retrain_plugins.partitions import PartitionKey, path_segment
from retrain_plugins.storage import Storage
from retrain_plugins.store_records import (
    ENTRIES, MANIFEST, atomic_write_text, empty_record, malformed, migrate_manifest, parse_json,
    record_problem, record_relpath, sha256_bytes, sha256_file,
)
from retrain_plugins.store_versions import bundled_paths, delete_unreferenced, roll_back, trim

__all__ = ["ModelStore", "atomic_write_text", "sha256_file", "MANIFEST"]
Record = dict[str, Any]


class ModelStore:
    """Artifacts and per-partition records of one retraining's sub-models.

    Args:
        root: The store's root: a :class:`Storage`, a local folder, or an fsspec URL.
        keep_versions: Versions kept per partition, the current one included (``store.keep_versions``).
    """

    def __init__(self, root: Storage | Path | str, keep_versions: int = 5):
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, not {keep_versions}")
        self.storage = root if isinstance(root, Storage) else Storage(root)
        self.keep_versions = keep_versions
        self._migrated = False

    def __repr__(self) -> str:
        return f"ModelStore({self.storage.uri()!r})"

    @property
    def root(self) -> Path:
        """The store's folder (a local store only; see :attr:`storage`)."""
        return self.storage.local_path()

    @property
    def manifest_path(self) -> Path:
        """The legacy one-file manifest (migrated away on open; absent in a current store)."""
        return self.root / MANIFEST

    def record_path(self, key: PartitionKey) -> Path:
        """The local file holding ``key``'s record."""
        return self.storage.local_path(record_relpath(key))

    def path_of(self, entry: dict[str, Any]) -> Path:
        """The local file of an entry's artifact (a local store only)."""
        return self.storage.local_path(entry["path"])

    # -- reading ---------------------------------------------------------------------------

    def _open(self) -> None:
        if not self._migrated:
            if self.storage.local:  # one-file manifests only ever existed in local stores
                migrate_manifest(self.root)
            self._migrated = True

    def _parse_record(self, data: bytes, rel: str) -> Record:
        record = parse_json(data, "model store record", self.storage.uri(rel))
        if problem := record_problem(record, rel):
            raise malformed("model store record", self.storage.uri(rel), problem)
        return record

    def _read_record(self, rel: str) -> Record | None:
        try:
            data = self.storage.read_bytes(rel)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"model store record {self.storage.uri(rel)} cannot be read: {exc}") from exc
        return self._parse_record(data, rel)

    def record(self, key: PartitionKey) -> Record | None:
        """``key``'s whole record (current, history, rejected, rolled_back), or ``None``."""
        self._open()
        return self._read_record(record_relpath(key))

    def records(self) -> dict[PartitionKey, Record]:
        """Every partition's record, checked."""
        self._open()
        out: dict[PartitionKey, Record] = {}
        for rel in self.storage.glob(f"{ENTRIES}/*/*.json"):
            if (record := self._read_record(rel)) is not None:  # None: gone since the listing
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

    def _update(self, key: PartitionKey, change: Callable[[Record], Any]) -> tuple[Record, Any]:
        """Apply ``change`` to ``key``'s record by a conditional write; (record written, its result).

        ``change`` may run more than once (a concurrent writer won the race): it must only
        depend on the record it is given.
        """
        self._open()
        rel = record_relpath(key)
        result: list[Any] = []

        def mutate(old: bytes | None) -> bytes:
            record = self._parse_record(old, rel) if old is not None else empty_record(key)
            result[:] = [change(record)]
            return json.dumps(record, indent=1, sort_keys=True).encode()

        written = self.storage.update(rel, mutate)
        return json.loads(written), result[0]

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
        the record is written, their artifacts deleted (:mod:`retrain_plugins.store_versions`).
        """
        folder = f"artifacts/{path_segment(key.window)}/{path_segment(key.cohort)}"
        with self.storage.staging(f"{folder}/incoming{suffix}", suffix=suffix) as tmp:
            write(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            digest, size = sha256_file(tmp), tmp.stat().st_size
            rel = f"{folder}/{digest[:16]}{suffix}"
            self.storage.put_file(tmp, rel)
        entry = {
            "fingerprint": None,  # every entry has one (validated on read); the caller's wins
            **metadata,
            "window": key.window,
            "cohort": key.cohort,
            "path": rel,
            "sha256": digest,
            "size_bytes": size,
            "token": self.storage.token(rel),
            "created_at": time.time(),
        }
        if self.storage.local:
            entry["mtime_ns"] = self.path_of(entry).stat().st_mtime_ns

        def change(record: Record) -> list[dict[str, Any]]:
            if not promote:
                record.setdefault("rejected", []).append(entry)
            else:
                if record["current"]:
                    record["history"].append(record["current"])
                record["current"] = entry
            return trim(record, self.keep_versions)

        record, dropped = self._update(key, change)
        delete_unreferenced(self.storage, dropped, record)
        return entry

    def bundled_paths(self) -> set[str] | None:
        """File system paths of the artifacts a ``bundle.json`` routes to: this store's, and its
        parent's (the fallback store lives in ``<store>/_fallback``). ``None`` when a bundle
        cannot be read."""
        return bundled_paths(self.storage)

    def rollback(self, key: PartitionKey, to: str | None = None) -> dict[str, Any]:
        """Make a kept previous version of ``key`` current again; return it.

        Args:
            key: The partition.
            to: A sha256 (or prefix) of the version to serve; ``None``: the previous one.

        The versions it replaces are kept under ``rolled_back`` (their files stay), so a rollback
        is itself reversible by hand. Only kept versions can be served again: an older one (beyond
        ``keep_versions``) raises a :class:`StoreError` saying so.
        """
        rolled_at = time.time()

        def change(record: Record) -> list[dict[str, Any]]:
            return roll_back(record, key, to, self.keep_versions, rolled_at, self.verified_path)

        record, dropped = self._update(key, change)
        delete_unreferenced(self.storage, dropped, record)
        return record["current"]

    def read_artifact(self, entry: dict[str, Any]) -> bytes:
        """The artifact's bytes after checking their checksum against the entry."""
        where = f"{entry['window']}/{entry['cohort']}"
        try:
            data = self.storage.read_bytes(entry["path"])
        except FileNotFoundError:
            raise StoreError(f"artifact {self.storage.uri(entry['path'])} of {where} is missing") from None
        _check_digest(sha256_bytes(data), entry, self.storage.uri(entry["path"]))
        return data

    def verified_path(self, entry: dict[str, Any]) -> Path:
        """A local file holding the artifact, after checking its checksum against its record.

        Local stores: the artifact itself. Object stores: a copy in a content-addressed cache
        under the system temp folder (artifacts are immutable, so a cached copy never goes
        stale; it is checked again on every call).
        """
        if self.storage.local:
            path = self.path_of(entry)
            if not path.exists():
                raise StoreError(f"artifact {path} of {entry['window']}/{entry['cohort']} is missing")
            _check_digest(sha256_file(path), entry, str(path))
            return path
        cache = Path(tempfile.gettempdir()) / "retrain-plugins-artifacts" / f"{entry['sha256']}{Path(entry['path']).suffix}"
        if cache.exists() and sha256_file(cache) == entry["sha256"]:
            return cache
        data = self.read_artifact(entry)
        atomic_write_text(cache, data)
        return cache


def _check_digest(actual: str, entry: dict[str, Any], where: str) -> None:
    if actual != entry["sha256"]:
        raise StoreError(
            f"artifact {where} of {entry['window']}/{entry['cohort']} is corrupted: "
            f"sha256 {actual[:16]}... != record {entry['sha256'][:16]}..."
        )
