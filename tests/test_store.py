"""The model store: content-addressed artifacts, atomic manifest, failures lose nothing."""

from __future__ import annotations


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
    manifest = store.manifest_path.read_bytes()

    def broken(path):
        path.write_bytes(b"half a mod")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.put(KEY, broken, ".bin", {})
    assert store.manifest_path.read_bytes() == manifest
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


def test_unreadable_manifest_is_reported(tmp_path):
    store = ModelStore(tmp_path)
    store.put(KEY, _writer(b"x"), ".bin", {})
    store.manifest_path.write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        store.entries()
