"""ModelStore: per-partition artifacts plus one manifest, written atomically.

Layout under ``root``::

    artifacts/<window>/<cohort>/<sha256[:16]><suffix>   one file per trained model, never rewritten
    manifest.json                                       current entry + history per partition
    manifest.lock                                       serializes manifest updates (flock)

An artifact is written to a temporary file in the same folder, fsynced, then renamed into place
under its content hash; only after that is the manifest (also temp + rename) switched to it. A
crash at any point leaves the previous manifest, which names only complete files, so a failed run
never replaces a good model. Artifacts of unaffected partitions are never opened for writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from retrain_plugins.errors import StoreError
from retrain_plugins.partitions import PartitionKey, path_segment

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a fsynced temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# every manifest entry names its artifact; fingerprint is what it was trained on (None: not recorded)
_ENTRY_FIELDS: dict[str, tuple[type, ...]] = {
    "path": (str,), "sha256": (str,), "fingerprint": (str, type(None)), "window": (str,), "cohort": (str,)
}
_ROLES = ("history", "rejected", "rolled_back")  # lists of entries, besides the single "current"


def _entry_problem(entry: Any) -> str | None:
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


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a parsed manifest (``None``: nothing), naming the partition and field."""
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
        if not isinstance(slot, dict):
            return f"partition {key}: its slot is {type(slot).__name__}, not an object"
        missing = [name for name in ("current", "history") if name not in slot]
        if missing:
            return f"partition {key}: its slot has no {missing}"
        current = slot.get("current")
        if current is not None and (problem := _entry_problem(current)):
            return f"partition {key}: current entry {problem}"
        for role in _ROLES:
            value = slot.get(role, [])
            if not isinstance(value, list):
                return f"partition {key}: {role!r} is {type(value).__name__}, not a list"
            for i, entry in enumerate(value):
                if problem := _entry_problem(entry):
                    return f"partition {key}: {role}[{i}] entry {problem}"
    return None


class ModelStore:
    """Artifacts and manifest of one retraining's sub-models."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "manifest.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        """The manifest, checked (see :func:`manifest_problem`); a missing one is empty."""
        if not self.manifest_path.exists():
            return {"version": 1, "partitions": {}}
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(
                f"model store manifest {self.manifest_path} is not valid JSON ({exc}): restore it from a backup, "
                "or move it aside and retrain (the artifacts under artifacts/ are kept)"
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"model store manifest {self.manifest_path} cannot be read: {exc}") from exc
        problem = manifest_problem(manifest)
        if problem:
            raise StoreError(
                f"model store manifest {self.manifest_path} is malformed: {problem}; restore it from a backup, "
                "or move it aside and retrain (the artifacts under artifacts/ are kept)"
            )
        return manifest

    @staticmethod
    def _key(key: PartitionKey) -> str:
        return json.dumps([key.window, key.cohort])

    def entries(self) -> dict[PartitionKey, dict[str, Any]]:
        """The current entry of every partition that has one."""
        partitions = self._read()["partitions"]
        return {
            PartitionKey(*json.loads(k)): v["current"] for k, v in partitions.items() if v.get("current")
        }

    def history(self, key: PartitionKey) -> list[dict[str, Any]]:
        return self._read()["partitions"].get(self._key(key), {}).get("history", [])

    def path_of(self, entry: dict[str, Any]) -> Path:
        return self.root / entry["path"]

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
        with self._locked():
            manifest = self._read()
            slot = self._slot(manifest, key)
            if not promote:
                slot.setdefault("rejected", []).append(entry)
            else:
                if slot["current"]:
                    slot["history"].append(slot["current"])
                slot["current"] = entry
            self._write(manifest)
        return entry

    @contextlib.contextmanager
    def partition_lock(self, key: PartitionKey) -> Iterator[None]:
        """Exclusive lock of one partition, across processes: two runs of the same partition
        serialize (the second trains on whatever data is current when it gets the lock)."""
        folder = self.root / "locks" / path_segment(key.window)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{path_segment(key.cohort)}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _slot(self, manifest: dict[str, Any], key: PartitionKey) -> dict[str, Any]:
        return manifest["partitions"].setdefault(self._key(key), {"current": None, "history": []})

    def _write(self, manifest: dict[str, Any]) -> None:
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True))

    def rejected(self, key: PartitionKey) -> list[dict[str, Any]]:
        return self._read()["partitions"].get(self._key(key), {}).get("rejected", [])

    def rollback(self, key: PartitionKey) -> dict[str, Any]:
        """Make the previous version of ``key`` current again; return it.

        The replaced version is kept under ``rolled_back`` (its file stays), so a rollback is
        itself reversible by hand.
        """
        with self._locked():
            manifest = self._read()
            slot = manifest["partitions"].get(self._key(key))
            if not slot or not slot.get("history"):
                raise StoreError(f"{key} has no previous version to roll back to")
            previous = slot["history"].pop()
            self.verified_path(previous)
            slot.setdefault("rolled_back", []).append(slot["current"])
            slot["current"] = {**previous, "rolled_back_at": time.time()}
            self._write(manifest)
            return slot["current"]

    def verified_path(self, entry: dict[str, Any]) -> Path:
        """The artifact's path after checking its checksum against the manifest."""
        path = self.path_of(entry)
        if not path.exists():
            raise StoreError(f"artifact {path} of {entry['window']}/{entry['cohort']} is missing")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise StoreError(
                f"artifact {path} of {entry['window']}/{entry['cohort']} is corrupted: "
                f"sha256 {actual[:16]}... != manifest {entry['sha256'][:16]}..."
            )
        return path
