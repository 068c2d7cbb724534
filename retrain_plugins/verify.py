"""Checking a model store against its manifest: checksums, missing files, orphans, debris.

``verify_store`` hashes every file the manifest names; ``damaged_current`` is the cheap version
the sensor runs each tick: it hashes only current artifacts whose size or mtime differs from what
was recorded when they were written, and returns the partitions to repair (retrain).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from retrain_plugins.partitions import PartitionKey
from retrain_plugins.store import ModelStore, sha256_file


@dataclasses.dataclass
class StoreReport:
    checked: int = 0
    corrupted: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    orphans: list[str] = dataclasses.field(default_factory=list)
    debris: list[str] = dataclasses.field(default_factory=list)  # temp files of interrupted writes

    @property
    def ok(self) -> bool:
        return not (self.corrupted or self.missing)


def _referenced(store: ModelStore) -> list[tuple[str, dict]]:
    manifest = store._read()
    out = []
    for slot in manifest["partitions"].values():
        for role in ("current", "history", "rejected", "rolled_back"):
            value = slot.get(role)
            for entry in value if isinstance(value, list) else [value] if value else []:
                out.append((role, entry))
    return out


def verify_store(store: ModelStore) -> StoreReport:
    """Full check of every file the manifest names, and of files it does not name."""
    report = StoreReport()
    named = set()
    for role, entry in _referenced(store):
        path = store.path_of(entry)
        named.add(path.resolve())
        label = f"{entry['window']}/{entry['cohort']} ({role}) {entry['path']}"
        report.checked += 1
        if not path.exists():
            report.missing.append(label)
        elif sha256_file(path) != entry["sha256"]:
            report.corrupted.append(label)
    artifacts = store.root / "artifacts"
    for path in sorted(artifacts.rglob("*")) if artifacts.exists() else []:
        if path.is_file() and path.resolve() not in named:
            (report.debris if path.name.startswith(".incoming.") else report.orphans).append(str(path.relative_to(store.root)))
    report.debris += sorted(str(p.relative_to(store.root)) for p in store.root.glob(".manifest.json.*.tmp"))
    return report


def damaged_current(store: ModelStore) -> dict[PartitionKey, str]:
    """Current artifacts that are missing or whose bytes no longer match the manifest."""
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
