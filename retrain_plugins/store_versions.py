"""The versions a partition's record keeps: retention, the artifacts still named, rollback.

A record holds one ``current`` entry and lists of older ones (``history``, oldest first) and of
``rejected`` and ``rolled_back`` candidates (:mod:`retrain_plugins.store_records`).
:func:`trim` and :func:`roll_back` change a record in place and return the entries it no longer
keeps; they run inside :class:`~retrain_plugins.store.ModelStore`'s conditional write, so they
depend only on the record they are given. Once the record is written, :func:`delete_unreferenced`
deletes the artifacts of those entries that nothing names any more: not the record (one
content-addressed object can be several entries), nor a ``bundle.json`` (:func:`bundled_paths`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from retrain_plugins.errors import StoreError
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.storage import Storage
from retrain_plugins.store_records import ROLES

BUNDLE = "bundle.json"  # the routing bundle (routing.py); its artifacts are never deleted by retention
Record = dict[str, Any]


def referenced_entries(record: Record) -> list[tuple[str, dict[str, Any]]]:
    """(role, entry) of every entry a record names."""
    out = [("current", record["current"])] if record.get("current") else []
    return out + [(role, e) for role in ROLES for e in record.get(role, [])]


def trim(record: Record, keep_versions: int) -> list[dict[str, Any]]:
    """Keep the newest ``keep_versions`` versions (current included) and as many rejected and
    rolled-back candidates; return the entries dropped."""
    dropped = []
    for role, keep in (("history", keep_versions - 1), ("rejected", keep_versions), ("rolled_back", keep_versions)):
        entries = record.get(role, [])
        cut = max(len(entries) - keep, 0)
        dropped += entries[:cut]
        record[role] = entries[cut:]
    return dropped


def delete_unreferenced(storage: Storage, dropped: list[dict[str, Any]], record: Record) -> None:
    """Delete the artifacts of ``dropped`` entries that nothing still names.

    Kept: objects the record still names (content-addressed: one object can be several
    entries) and objects ``bundle.json`` routes to. An unreadable bundle keeps everything.
    """
    if not dropped:
        return
    kept = {storage.path(e["path"]) for _, e in referenced_entries(record)}
    bundled = bundled_paths(storage)
    if bundled is None:
        return
    for entry in dropped:
        path = storage.path(entry["path"])
        if path not in kept and path not in bundled:
            storage.delete(entry["path"])


def bundled_paths(storage: Storage) -> set[str] | None:
    """File system paths of the artifacts a ``bundle.json`` routes to: the store's, and its
    parent's (the fallback store lives in ``<store>/_fallback``). ``None`` when a bundle
    cannot be read."""
    out: set[str] = set()
    parent = storage.path().rsplit("/", 1)[0]
    for folder in (storage.path(), parent):
        try:
            bundle = json.loads(storage.fs.cat_file(f"{folder}/{BUNDLE}"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            return None
        try:
            routed = [e for entries in bundle["routes"].values() for e in entries]
            routed += [bundle["fallback"]] if bundle.get("fallback") else []
            out |= {f"{folder}/{e['path']}" for e in routed}
        except (KeyError, TypeError, AttributeError):
            return None
    return out


def roll_back(
    record: Record,
    key: PartitionKey,
    to: str | None,
    keep_versions: int,
    rolled_at: float,
    verify: Callable[[dict[str, Any]], Any],
) -> list[dict[str, Any]]:
    """Make a kept previous version of ``record`` current again; return the entries dropped.

    ``to``: a sha256 (or prefix) of the version to serve, ``None`` the previous one. ``verify``
    checks the target's artifact before anything changes. The versions it replaces go to
    ``rolled_back`` (see :meth:`ModelStore.rollback <retrain_plugins.store.ModelStore.rollback>`).
    """
    history = record["history"]
    kept = f"store.keep_versions = {keep_versions} keeps the newest {keep_versions} version(s), current included"
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
    verify(target)
    record["rolled_back"] = [*record.get("rolled_back", []), *reversed(history[index + 1 :]), record["current"]]
    record["history"] = history[:index]
    record["current"] = {**target, "rolled_back_at": rolled_at}
    return trim(record, keep_versions)
