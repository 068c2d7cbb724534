"""The model store: content-addressed artifacts, atomic per-partition records, failures lose nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from retrain_plugins import ModelStore, StoreError
from retrain_plugins.partitions import PartitionKey

KEY = PartitionKey("2025-01-01", "north")


def _writer(payload: bytes):
    def write(path):
        path.write_bytes(payload)

    return write


def test_put_promotes_and_keeps_history(tmp_path):
    store = ModelStore(tmp_path)
    first = store.put(KEY, _writer(b"model-1"), ".bin", {"rows": 10})
    second = store.put(KEY, _writer(b"model-2"), ".bin", {"rows": 12})
    assert store.entries()[KEY]["sha256"] == second["sha256"]
    assert [e["sha256"] for e in store.history(KEY)] == [first["sha256"]]
    assert store.path_of(first).read_bytes() == b"model-1"  # the old file is kept for rollback
    assert store.verified_path(second).read_bytes() == b"model-2"


def test_a_failing_write_leaves_the_current_model_and_no_debris(tmp_path):
    store = ModelStore(tmp_path)
    good = store.put(KEY, _writer(b"good"), ".bin", {})
    record = store.record_path(KEY).read_bytes()

    def broken(path):
        path.write_bytes(b"half a mod")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.put(KEY, broken, ".bin", {})
    assert store.record_path(KEY).read_bytes() == record
    assert store.entries()[KEY]["sha256"] == good["sha256"]
    files = sorted(p.name for p in (tmp_path / "artifacts").rglob("*") if p.is_file())
    assert files == [store.path_of(good).name]


def test_hostile_cohort_values_stay_inside_the_store(tmp_path):
    store = ModelStore(tmp_path / "store")
    for cohort in ("../../etc", "..", "a/b", "x|y", "o'brien; DROP TABLE t", "日本"):
        entry = store.put(PartitionKey("2025-01-01", cohort), _writer(cohort.encode()), ".bin", {})
        path = store.path_of(entry).resolve()
        assert path.is_relative_to((tmp_path / "store").resolve())
        assert store.entries()[PartitionKey("2025-01-01", cohort)]["cohort"] == cohort
    assert not (tmp_path / "etc").exists()


def test_corruption_and_missing_files_are_detected(tmp_path):
    store = ModelStore(tmp_path)
    entry = store.put(KEY, _writer(b"payload"), ".bin", {})
    store.path_of(entry).write_bytes(b"PAYLOAD")
    with pytest.raises(StoreError, match="corrupted"):
        store.verified_path(entry)
    store.path_of(entry).unlink()
    with pytest.raises(StoreError, match="missing"):
        store.verified_path(entry)


def test_unreadable_record_is_reported_by_name(tmp_path):
    store = ModelStore(tmp_path)
    store.put(KEY, _writer(b"x"), ".bin", {})
    store.record_path(KEY).write_text("{not json")
    with pytest.raises(StoreError, match=f"model store record {store.record_path(KEY)} is not valid JSON"):
        store.entries()


# --- per-partition records ---------------------------------------------------------------------


def test_put_entries_history_and_rollback_on_per_partition_records(tmp_path):
    store = ModelStore(tmp_path)
    other = PartitionKey("2025-01-01", "south")
    first = store.put(KEY, _writer(b"m1"), ".bin", {"rows": 1})
    second = store.put(KEY, _writer(b"m2"), ".bin", {"rows": 2})
    elsewhere = store.put(other, _writer(b"s1"), ".bin", {})
    assert not store.manifest_path.exists()
    record = json.loads(store.record_path(KEY).read_text())
    assert (record["window"], record["cohort"]) == (KEY.window, KEY.cohort)
    assert record["current"]["sha256"] == second["sha256"] and [e["sha256"] for e in record["history"]] == [first["sha256"]]
    assert store.record_path(KEY).relative_to(tmp_path).parts[0] == "entries"
    assert {k: e["sha256"] for k, e in store.entries().items()} == {KEY: second["sha256"], other: elsewhere["sha256"]}
    back = store.rollback(KEY)
    assert back["sha256"] == first["sha256"] and store.entries()[KEY]["sha256"] == first["sha256"]
    assert store.history(KEY) == [] and store.record(KEY)["rolled_back"][-1]["sha256"] == second["sha256"]
    assert store.entries()[other] == elsewhere


def test_a_put_rewrites_only_its_own_partitions_record(tmp_path):
    store = ModelStore(tmp_path)
    keys = [PartitionKey(w, c) for w in ("2025-01-01", "2025-02-01") for c in ("north", "south")]
    for key in keys:
        store.put(key, _writer(str(key).encode()), ".bin", {})
    before = {k: (store.record_path(k).read_bytes(), store.record_path(k).stat().st_mtime_ns) for k in keys}
    time.sleep(0.01)
    store.put(keys[0], _writer(b"new"), ".bin", {})
    after = {k: (store.record_path(k).read_bytes(), store.record_path(k).stat().st_mtime_ns) for k in keys}
    assert after[keys[0]] != before[keys[0]]
    assert {k: after[k] for k in keys[1:]} == {k: before[k] for k in keys[1:]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "entries", "locks"]


def test_retention_keeps_exactly_n_versions_and_never_deletes_current_kept_or_bundled(tmp_path):
    store = ModelStore(tmp_path, keep_versions=3)
    versions = [store.put(KEY, _writer(f"v{i}".encode()), ".bin", {}) for i in range(4)]
    assert [e["sha256"] for e in store.history(KEY)] == [v["sha256"] for v in versions[1:3]]
    assert not store.path_of(versions[0]).exists()
    assert all(store.path_of(v).exists() for v in versions[1:])
    # the bundle routes to v1: the next put drops it from the history but keeps its file
    (tmp_path / "bundle.json").write_text(json.dumps({"routes": {KEY.cohort: [versions[1]]}, "fallback": None}))
    versions.append(store.put(KEY, _writer(b"v4"), ".bin", {}))
    assert [e["sha256"] for e in store.history(KEY)] == [v["sha256"] for v in versions[2:4]]
    assert store.path_of(versions[1]).exists()
    # the same bytes as a kept version (content-addressed: one file): dropping the older entry keeps it
    again = store.put(KEY, _writer(b"v3"), ".bin", {})
    assert again["path"] == versions[3]["path"] and store.path_of(again).exists()
    assert not store.path_of(versions[2]).exists()
    # rejected candidates are bounded too, and never cost the current model its file
    for i in range(5):
        store.put(KEY, _writer(f"r{i}".encode()), ".bin", {}, promote=False)
    assert len(store.rejected(KEY)) == 3 and store.verified_path(store.entries()[KEY])
    kept = {store.path_of(e).name for role in ("history", "rejected", "rolled_back") for e in store.record(KEY)[role]}
    kept |= {store.path_of(store.entries()[KEY]).name, store.path_of(versions[1]).name}
    assert {p.name for p in (tmp_path / "artifacts").rglob("*") if p.is_file()} == kept


def test_keep_versions_one_keeps_only_the_current_model(tmp_path):
    store = ModelStore(tmp_path, keep_versions=1)
    old = store.put(KEY, _writer(b"a"), ".bin", {})
    new = store.put(KEY, _writer(b"b"), ".bin", {})
    assert store.history(KEY) == [] and not store.path_of(old).exists() and store.verified_path(new)
    with pytest.raises(StoreError, match=r"no previous version to roll back to \(store.keep_versions = 1"):
        store.rollback(KEY)


def test_rollback_beyond_retention_fails_clearly_and_within_it_works(tmp_path):
    store = ModelStore(tmp_path, keep_versions=3)
    versions = [store.put(KEY, _writer(f"v{i}".encode()), ".bin", {}) for i in range(4)]
    with pytest.raises(StoreError, match="not in the kept history") as caught:
        store.rollback(KEY, to=versions[0]["sha256"][:12])
    assert "store.keep_versions = 3" in str(caught.value) and versions[2]["sha256"][:16] in str(caught.value)
    assert store.entries()[KEY]["sha256"] == versions[3]["sha256"]  # nothing changed
    back = store.rollback(KEY, to=versions[1]["sha256"][:12])
    assert back["sha256"] == versions[1]["sha256"] and store.history(KEY) == []
    assert [e["sha256"] for e in store.record(KEY)["rolled_back"]] == [versions[2]["sha256"], versions[3]["sha256"]]


def test_spec_store_keep_versions_defaults_to_5_and_rejects_0():
    from pydantic import ValidationError

    from retrain_plugins.spec import StoreSpec

    assert StoreSpec().keep_versions == 5
    with pytest.raises(ValidationError):
        StoreSpec(keep_versions=0)


# --- migration from one manifest.json ----------------------------------------------------------

LEGACY_KEYS = [PartitionKey(w, c) for w in ("2025-01-01", "2025-02-01") for c in ("north", "south", "a/b")]


def _legacy_store(root):
    """A store as the one-manifest code wrote it: artifacts, and every partition in manifest.json."""
    import hashlib

    from retrain_plugins.partitions import path_segment

    partitions = {}
    for n, key in enumerate(LEGACY_KEYS):
        entries = []
        for version in range(3):
            payload = f"{key}-{version}".encode()
            digest = hashlib.sha256(payload).hexdigest()
            path = root / "artifacts" / path_segment(key.window) / path_segment(key.cohort) / f"{digest[:16]}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
            entries.append({"fingerprint": f"fp{version}", "window": key.window, "cohort": key.cohort, "rows": n,
                            "path": str(path.relative_to(root)), "sha256": digest, "size_bytes": len(payload),
                            "mtime_ns": path.stat().st_mtime_ns, "created_at": 1.0 + version})
        partitions[json.dumps([key.window, key.cohort])] = {"current": entries[2], "history": entries[:1], "rejected": entries[1:2]}
    (root / "manifest.json").write_text(json.dumps({"version": 1, "partitions": partitions}, indent=1, sort_keys=True))
    return {PartitionKey(*json.loads(k)): v for k, v in partitions.items()}


def test_a_one_manifest_store_is_migrated_on_open_to_the_same_entries(tmp_path):
    legacy = _legacy_store(tmp_path)
    store = ModelStore(tmp_path)
    assert store.entries() == {k: v["current"] for k, v in legacy.items()}
    assert all(store.history(k) == v["history"] and store.rejected(k) == v["rejected"] for k, v in legacy.items())
    assert not (tmp_path / "manifest.json").exists() and (tmp_path / "manifest.json.migrated").exists()
    assert len(list((tmp_path / "entries").glob("*/*.json"))) == len(LEGACY_KEYS)
    from retrain_plugins.verify import verify_store

    report = verify_store(store)
    assert report.ok and not report.orphans and report.checked == 3 * len(LEGACY_KEYS)


MIGRATION_KILL = """
import os, signal, sys
from pathlib import Path
from retrain_plugins import store_records
from retrain_plugins.store import ModelStore
moment, calls = sys.argv[2], []
real = os.replace
def replace(src, dst):
    calls.append(dst)
    if moment == "aside" and str(dst).endswith(".migrated"):
        os.kill(os.getpid(), signal.SIGKILL)
    if moment.isdigit() and len(calls) > int(moment):
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
    if moment == "after" and str(dst).endswith(".migrated"):
        os.kill(os.getpid(), signal.SIGKILL)
store_records.os.replace = replace  # fault injection inside the killed process only
ModelStore(Path(sys.argv[1])).entries()
"""


@pytest.mark.parametrize("moment", ["0", "1", "4", "aside", "after"])
def test_sigkill_mid_migration_still_opens_to_the_same_entries(tmp_path, moment):
    root = tmp_path / "store"
    legacy = _legacy_store(root)
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(MIGRATION_KILL))
    done = subprocess.run([sys.executable, str(script), str(root), moment], capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr
    assert (root / "manifest.json").exists() == (moment != "after")
    store = ModelStore(root)
    assert store.entries() == {k: v["current"] for k, v in legacy.items()}
    assert all(store.history(k) == v["history"] for k, v in legacy.items())
    assert not (root / "manifest.json").exists()


def test_a_malformed_one_manifest_store_raises_naming_the_manifest(tmp_path):
    _legacy_store(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"partitions": []}))
    with pytest.raises(StoreError, match=f"model store manifest {tmp_path / 'manifest.json'} is malformed: 'partitions' is list"):
        ModelStore(tmp_path).entries()
    assert (tmp_path / "manifest.json").exists()  # left for the user to restore


# --- orphans ----------------------------------------------------------------------------------


def test_verify_reports_orphans_and_clean_removes_old_ones_only(tmp_path):
    from retrain_plugins.verify import clean_store, verify_store

    store = ModelStore(tmp_path)
    good = store.put(KEY, _writer(b"good"), ".bin", {})
    folder = store.path_of(good).parent
    old, young = folder / "0123456789abcdef.bin", folder / "fedcba9876543210.bin"
    old.write_bytes(b"left by a crash before its record")
    young.write_bytes(b"a put in flight")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    report = verify_store(store)
    rel = lambda p: str(p.relative_to(tmp_path))  # noqa: E731
    assert report.ok and sorted(report.orphans) == sorted([rel(old), rel(young)]) and report.old_orphans == [rel(old)]
    assert clean_store(store, report) == [rel(old)]
    assert not old.exists() and young.exists() and store.verified_path(good)
    assert verify_store(store, grace_seconds=0).old_orphans == [rel(young)]


def test_concurrent_puts_lose_no_version_of_one_partition_and_block_no_other(tmp_path):
    import threading

    store = ModelStore(tmp_path, keep_versions=100)
    other = PartitionKey("2025-01-01", "south")

    def backfill(key, tag):
        for i in range(10):
            ModelStore(tmp_path, keep_versions=100).put(key, _writer(f"{tag}-{i}".encode()), ".bin", {})

    threads = [threading.Thread(target=backfill, args=(KEY, t)) for t in "ab"] + [threading.Thread(target=backfill, args=(other, "c"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.history(KEY)) == 19 and len(store.history(other)) == 9
    from retrain_plugins.verify import verify_store

    report = verify_store(store)
    assert report.ok and report.checked == 30 and not report.orphans and not report.debris
