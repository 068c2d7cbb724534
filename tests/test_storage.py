"""The storage object: one code path for a local folder and an S3 bucket (a real moto server).

Every test that takes ``root`` runs twice: on a temp folder and on a bucket of the session's
``moto_server`` (tests/s3server.py), with the same assertions.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

import pytest

from retrain_plugins.errors import StoreError
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.storage import Storage
from retrain_plugins.store import ModelStore
from retrain_plugins.verify import damaged_current, verify_store

KEY = PartitionKey("2025-01-01", "north")


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> Storage:
    if request.param == "local":
        return Storage(tmp_path / "store")
    bucket = request.getfixturevalue("s3")
    return Storage(bucket.url("retrain/store"))


def _writer(data: bytes):
    return lambda path: path.write_bytes(data)


def test_write_read_glob_delete(root):
    root.write_bytes("a/x.json", b"1")
    root.write_bytes("a/y.json", b"22")
    root.write_bytes("b/z.bin", b"333")
    assert root.read_bytes("a/y.json") == b"22"
    assert root.glob("a/*.json") == ["a/x.json", "a/y.json"]
    assert root.glob("*/*") == ["a/x.json", "a/y.json", "b/z.bin"]
    token = root.token("a/x.json")
    root.write_bytes("a/x.json", b"9")
    assert root.token("a/x.json") != token and root.read_bytes("a/x.json") == b"9"
    root.delete("a/x.json")
    root.delete("a/x.json")  # deleting what is gone is nothing
    assert not root.exists("a/x.json") and root.token("a/x.json") is None
    with pytest.raises(FileNotFoundError):
        root.read_bytes("a/x.json")
    assert root.child("b").read_bytes("z.bin") == b"333"


def test_update_loses_no_concurrent_update(root):
    """Four writers add 10 each to one counter object: a lost update would leave less than 40."""
    assert root.conditional

    def add_one(old: bytes | None) -> bytes:
        return str(int(old or b"0") + 1).encode()

    def writer() -> None:
        for _ in range(10):
            Storage(root.url).update("counter", add_one)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert root.read_bytes("counter") == b"40"


def test_update_that_raises_leaves_the_object_as_it_was(root):
    root.write_bytes("r.json", b"old")

    def refuse(old: bytes | None) -> bytes:
        raise ValueError("no")

    with pytest.raises(ValueError):
        root.update("r.json", refuse)
    assert root.read_bytes("r.json") == b"old"


def test_model_store_round_trip(root):
    """Put, promote, reject, roll back, verify: the model store is the same on both backends."""
    store = ModelStore(root, keep_versions=3)
    first = store.put(KEY, _writer(b"model-1"), ".bin", {"fingerprint": "f1"})
    second = store.put(KEY, _writer(b"model-2"), ".bin", {"fingerprint": "f2"})
    store.put(KEY, _writer(b"model-3"), ".bin", {"fingerprint": "f3"}, promote=False)
    assert store.entries()[KEY]["sha256"] == second["sha256"] == hashlib.sha256(b"model-2").hexdigest()
    assert [e["fingerprint"] for e in store.history(KEY)] == ["f1"]
    assert [e["fingerprint"] for e in store.rejected(KEY)] == ["f3"]
    assert store.verified_path(second).read_bytes() == b"model-2"
    assert store.rollback(KEY)["sha256"] == first["sha256"]
    assert ModelStore(root.url).entries()[KEY]["fingerprint"] == "f1"
    report = verify_store(store)
    assert report.ok and report.checked == 3 and report.orphans == []  # current, rolled back, rejected
    assert damaged_current(store) == {}
    root.write_bytes(first["path"], b"tampered")
    assert damaged_current(store) == {KEY: f"artifact {first['path']} is corrupted (checksum mismatch)"}
    with pytest.raises(StoreError, match="corrupted"):
        store.read_artifact(store.entries()[KEY])
    # a local store serves its files in place, so a damaged one is refused; an object store's
    # artifacts are served from a content-addressed local copy, which still holds the right bytes
    if root.local:
        with pytest.raises(StoreError, match="corrupted"):
            store.verified_path(store.entries()[KEY])
    else:
        assert store.verified_path(store.entries()[KEY]).read_bytes() == b"model-1"
    root.delete(first["path"])
    assert "missing" in damaged_current(store)[KEY]


def test_concurrent_puts_of_one_partition_keep_every_version(root):
    """No lock is held while a model trains: two runs of one partition put at once, both land."""
    def backfill(tag: str) -> None:
        for i in range(5):
            ModelStore(root.url, keep_versions=100).put(KEY, _writer(f"{tag}-{i}".encode()), ".bin", {"fingerprint": tag})

    threads = [threading.Thread(target=backfill, args=(t,)) for t in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = ModelStore(root.url, keep_versions=100)
    kept = [store.entries()[KEY], *store.history(KEY)]
    assert len(kept) == 10 and len({e["sha256"] for e in kept}) == 10
    assert all(store.verified_path(e) for e in kept)


def test_retention_deletes_old_artifacts_on_the_backend(root):
    store = ModelStore(root, keep_versions=2)
    entries = [store.put(KEY, _writer(f"m{i}".encode()), ".bin", {"fingerprint": str(i)}) for i in range(4)]
    assert [root.exists(e["path"]) for e in entries] == [False, False, True, True]


def test_a_long_lived_storage_sees_records_other_processes_write(root):
    """The daemon's code server keeps one process: its listings must not come from a cache."""
    reader = ModelStore(root)
    assert reader.entries() == {}
    reader.put(KEY, _writer(b"m"), ".bin", {"fingerprint": "f"})
    assert set(reader.entries()) == {KEY}  # listed (and, with a listings cache, cached)
    other = PartitionKey("2025-02-01", "south")
    script = (
        "import sys; from pathlib import Path; from retrain_plugins.store import ModelStore; "
        "from retrain_plugins.partitions import PartitionKey; "
        "ModelStore(sys.argv[1]).put(PartitionKey('2025-02-01', 'south'), lambda p: p.write_bytes(b'n'), '.bin', {'fingerprint': 'g'})"
    )
    subprocess.run([sys.executable, "-c", script, root.url], check=True, timeout=120)
    assert set(reader.entries()) == {KEY, other}
