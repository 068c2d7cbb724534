"""Checking a model store against its records: checksums, missing files, orphans, debris.

``verify_store`` hashes every file a record names; ``damaged_current`` is the cheap version the
sensor runs each tick: it hashes only current artifacts whose size or mtime differs from what was
recorded when they were written, and returns the partitions to repair (retrain).

An *orphan* is a file under ``artifacts/`` that no record and no ``bundle.json`` names: what a
crash between writing an artifact and its record leaves (or a file copied in by hand). Orphans
older than a grace period (so a put in flight, whose record is not written yet, is never one) are
reported in ``old_orphans``; :func:`clean_store` deletes them and the debris of interrupted writes.
"""

from __future__ import annotations

import dataclasses
import time

from retrain_plugins.errors import StoreError
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.store import ModelStore
from retrain_plugins.store_versions import referenced_entries
from retrain_plugins.store_records import ENTRIES, MANIFEST

GRACE_SECONDS = 3600.0  # default age before an unreferenced artifact counts as a removable orphan


@dataclasses.dataclass
class StoreReport:
    checked: int = 0
    corrupted: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    orphans: list[str] = dataclasses.field(default_factory=list)  # unreferenced artifacts, any age
    old_orphans: list[str] = dataclasses.field(default_factory=list)  # those older than the grace period
    debris: list[str] = dataclasses.field(default_factory=list)  # temp files of interrupted writes

    @property
    def ok(self) -> bool:
        return not (self.corrupted or self.missing)


def verify_store(store: ModelStore, grace_seconds: float = GRACE_SECONDS) -> StoreReport:
    """Full check of every file the records name, and of files they do not name.

    Args:
        store: The model store.
        grace_seconds: Unreferenced artifacts younger than this are orphans but not ``old_orphans``.
    """
    storage = store.storage
    report = StoreReport()
    named = set()
    for record in store.records().values():
        for role, entry in referenced_entries(record):
            named.add(storage.path(entry["path"]))
            label = f"{entry['window']}/{entry['cohort']} ({role}) {entry['path']}"
            report.checked += 1
            try:
                store.read_artifact(entry)
            except StoreError as exc:
                (report.missing if "missing" in str(exc) else report.corrupted).append(label)
    bundled = store.bundled_paths()
    named |= bundled or set()
    bundle_unreadable = bundled is None  # then nothing is old enough to delete
    cutoff = time.time() - grace_seconds
    for rel in storage.glob("artifacts/**"):
        if storage.path(rel) in named or not storage.fs.isfile(storage.path(rel)):
            continue
        if rel.rsplit("/", 1)[-1].startswith(".incoming."):
            report.debris.append(rel)
            continue
        report.orphans.append(rel)
        modified = storage.modified(rel)
        if not bundle_unreadable and modified is not None and modified < cutoff:
            report.old_orphans.append(rel)
    if storage.local:  # temp files of interrupted local writes (object stores write whole objects)
        report.debris += storage.glob(f".{MANIFEST}.*.tmp") + storage.glob(f"{ENTRIES}/*/.*.tmp")
    return report


def clean_store(store: ModelStore, report: StoreReport) -> list[str]:
    """Delete ``report``'s debris and old orphans; return what was removed (store-relative)."""
    removed = []
    for item in [*report.debris, *report.old_orphans]:
        store.storage.delete(item)
        removed.append(item)
    return removed


def damaged_current(store: ModelStore) -> dict[PartitionKey, str]:
    """Current artifacts that are missing or whose bytes no longer match their record.

    An artifact whose change token (local: size and mtime; object stores: the ETag) is the one
    recorded when it was written is not read.
    """
    damaged = {}
    for key, entry in store.entries().items():
        try:
            token = store.storage.token(entry["path"])
        except OSError as exc:  # a path through something that is no folder any more
            damaged[key] = f"artifact {entry['path']} is missing ({exc})"
            continue
        if token is None:
            damaged[key] = f"artifact {entry['path']} is missing (No such file or directory)"
            continue
        recorded = entry.get("token") or (f"{entry['size_bytes']}:{entry['mtime_ns']}" if entry.get("mtime_ns") else None)
        if token == recorded:
            continue  # untouched since written: no need to read it
        try:
            store.read_artifact(entry)
        except StoreError:
            damaged[key] = f"artifact {entry['path']} is corrupted (checksum mismatch)"
    return damaged
