"""The records of a model store: atomic files, per-partition record checks, the legacy manifest.

A partition's record (``entries/<window segment>/<cohort segment>.json``) holds its real
``window`` and ``cohort``, its ``current`` entry, its ``history`` (older versions, oldest first)
and its ``rejected`` and ``rolled_back`` candidates. Every entry names its artifact (``path``,
``sha256``) and what it was trained on (``fingerprint``). Stores written before per-partition
records kept every partition in one ``manifest.json``: :func:`migrate_manifest` splits it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from retrain_plugins.errors import StoreError
from retrain_plugins.partitions import PartitionKey, path_segment
from retrain_plugins.local_files import atomic_local_write, flocked, fsync_dir

MANIFEST = "manifest.json"  # the one-file layout, migrated on open
MIGRATED = "manifest.json.migrated"  # where the migration moves it (a backup, never read again)
ENTRIES = "entries"
RECORD_VERSION = 2
ROLES = ("history", "rejected", "rolled_back")  # lists of entries, besides the single "current"

_ENTRY_FIELDS: dict[str, tuple[type, ...]] = {
    "path": (str,), "sha256": (str,), "fingerprint": (str, type(None)), "window": (str,), "cohort": (str,)
}
_FIX = "restore it from a backup, or move it aside and retrain (the artifacts under artifacts/ are kept)"


def sha256_bytes(data: bytes) -> str:
    """SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to ``path`` via a fsynced temp file in the same folder and a rename."""
    atomic_local_write(path, text.encode() if isinstance(text, str) else text)


def record_relpath(key: PartitionKey) -> str:
    """Where ``key``'s record lives, relative to the store root."""
    return f"{ENTRIES}/{path_segment(key.window)}/{path_segment(key.cohort)}.json"


def empty_record(key: PartitionKey) -> dict[str, Any]:
    return {"version": RECORD_VERSION, "window": key.window, "cohort": key.cohort, "current": None,
            "history": [], "rejected": [], "rolled_back": []}


def entry_problem(entry: Any) -> str | None:
    """What is wrong with one entry (``None``: nothing)."""
    if not isinstance(entry, dict):
        return f"is {type(entry).__name__}, not an object"
    for name, types in _ENTRY_FIELDS.items():
        if name not in entry:
            return f"has no {name!r}"
        if not isinstance(entry[name], types):
            return f"{name!r} is {type(entry[name]).__name__} {entry[name]!r}"
    if len(entry["sha256"]) != 64:
        return f"'sha256' {entry['sha256']!r} is not a SHA-256 hex digest"
    return None


def slot_problem(slot: Any) -> str | None:
    """What is wrong with a partition's slot (current, history, rejected, rolled_back)."""
    if not isinstance(slot, dict):
        return f"its slot is {type(slot).__name__}, not an object"
    missing = [name for name in ("current", "history") if name not in slot]
    if missing:
        return f"its slot has no {missing}"
    current = slot.get("current")
    if current is not None and (problem := entry_problem(current)):
        return f"current entry {problem}"
    for role in ROLES:
        value = slot.get(role, [])
        if not isinstance(value, list):
            return f"{role!r} is {type(value).__name__}, not a list"
        for i, entry in enumerate(value):
            if problem := entry_problem(entry):
                return f"{role}[{i}] entry {problem}"
    return None


def record_problem(record: Any, relpath: str | Path) -> str | None:
    """What is wrong with a parsed per-partition record found at ``relpath`` (``None``: nothing)."""
    if not isinstance(record, dict):
        return f"the top level is a JSON {type(record).__name__}, not an object"
    window, cohort = record.get("window"), record.get("cohort")
    if not isinstance(window, str) or not isinstance(cohort, str):
        return f"'window' and 'cohort' must be strings, not {window!r} and {cohort!r}"
    if record_relpath(PartitionKey(window, cohort)) != Path(relpath).as_posix():
        return f"it names partition {window}/{cohort}, whose record is {record_relpath(PartitionKey(window, cohort))}"
    return slot_problem(record)


def parse_json(data: bytes, what: str, where: str) -> Any:
    """Parse ``data`` read from ``where``; a clear :class:`StoreError` when it is not JSON."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{what} {where} is not valid JSON ({exc}): {_FIX}") from exc


def read_json(path: Path, what: str) -> Any:
    """Parse ``path``; a clear :class:`StoreError` naming it when it is unreadable or not JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{what} {path} is not valid JSON ({exc}): {_FIX}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"{what} {path} cannot be read: {exc}") from exc


def malformed(what: str, path: Path, problem: str) -> StoreError:
    return StoreError(f"{what} {path} is malformed: {problem}; {_FIX}")


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a parsed legacy ``manifest.json`` (``None``: nothing)."""
    if not isinstance(manifest, dict):
        return f"the top level is a JSON {type(manifest).__name__}, not an object"
    partitions = manifest.get("partitions")
    if not isinstance(partitions, dict):
        return "no 'partitions' object" if partitions is None else f"'partitions' is {type(partitions).__name__}"
    for key, slot in partitions.items():
        try:
            window, cohort = json.loads(key)
            assert isinstance(window, str) and isinstance(cohort, str)
        except (ValueError, TypeError, AssertionError):
            return f"partition key {key!r} is not a JSON [window, cohort] pair"
        if problem := slot_problem(slot):
            return f"partition {key}: {problem}"
    return None


def migrate_manifest(root: Path) -> int:
    """Split a legacy ``manifest.json`` into per-partition records; return how many were written.

    Crash-safe by order: while ``manifest.json`` exists it is the truth, and every open migrates it
    again (rewriting whole records from it); each record is written atomically and fsynced, their
    folders are fsynced, and only then is the manifest renamed to ``manifest.json.migrated``.
    A kill at any point therefore opens to the same entries. Serialized by ``manifest.lock``.
    """
    legacy = root / MANIFEST
    if not legacy.exists():
        return 0
    with flocked(root / "manifest.lock"):
        if not legacy.exists():  # another process migrated it while we waited
            return 0
        manifest = read_json(legacy, "model store manifest")
        if problem := manifest_problem(manifest):
            raise malformed("model store manifest", legacy, problem)
        folders = set()
        for text_key, slot in manifest["partitions"].items():
            key = PartitionKey(*json.loads(text_key))
            record = {**empty_record(key), **{k: slot.get(k, []) for k in ROLES}, "current": slot.get("current")}
            path = root / record_relpath(key)
            atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True))
            folders.add(path.parent)
        for folder in (*sorted(folders), root / ENTRIES):
            fsync_dir(folder)
        os.replace(legacy, root / MIGRATED)
        fsync_dir(root)
        return len(manifest["partitions"])
