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
import os
import time
from pathlib import Path

from retrain_plugins.partitions import PartitionKey
from retrain_plugins.store import ModelStore, referenced_entries, sha256_file
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
    report = StoreReport()
    named = set()
    for record in store.records().values():
        for role, entry in referenced_entries(record):
            path = store.path_of(entry)
            named.add(path.resolve())
            label = f"{entry['window']}/{entry['cohort']} ({role}) {entry['path']}"
            report.checked += 1
            if not path.exists():
                report.missing.append(label)
            elif sha256_file(path) != entry["sha256"]:
                report.corrupted.append(label)
    bundled = store.bundled_paths()
    named |= bundled or set()
    bundle_unreadable = bundled is None  # then nothing is old enough to delete
    artifacts = store.root / "artifacts"
    cutoff = time.time() - grace_seconds
    for path in sorted(artifacts.rglob("*")) if artifacts.exists() else []:
        if not path.is_file() or path.resolve() in named:
            continue
        relative = str(path.relative_to(store.root))
        if path.name.startswith(".incoming."):
            report.debris.append(relative)
            continue
        report.orphans.append(relative)
        if not bundle_unreadable and path.stat().st_mtime < cutoff:
            report.old_orphans.append(relative)
    report.debris += sorted(str(p.relative_to(store.root)) for p in store.root.glob(f".{MANIFEST}.*.tmp"))
    entries = store.root / ENTRIES
    report.debris += sorted(str(p.relative_to(store.root)) for p in entries.glob("*/.*.tmp")) if entries.exists() else []
    return report


def clean_store(store: ModelStore, report: StoreReport) -> list[str]:
    """Delete ``report``'s debris and old orphans; return what was removed (store-relative)."""
    removed = []
    for item in [*report.debris, *report.old_orphans]:
        (store.root / item).unlink(missing_ok=True)
        removed.append(item)
    return removed


def damaged_current(store: ModelStore) -> dict[PartitionKey, str]:
    """Current artifacts that are missing or whose bytes no longer match their record."""
    damaged = {}
    for key, entry in store.entries().items():
        path = store.path_of(entry)
        try:
            st = os.stat(path)
        except OSError as exc:  # gone, or a path through something that is no folder any more
            damaged[key] = f"artifact {entry['path']} is missing ({exc.strerror})"
            continue
        recorded = entry.get("mtime_ns")
        if st.st_size == entry["size_bytes"] and recorded is not None and st.st_mtime_ns == recorded:
            continue  # untouched since written: no need to read it
        if sha256_file(Path(path)) != entry["sha256"]:
            damaged[key] = f"artifact {entry['path']} is corrupted (checksum mismatch)"
    return damaged
