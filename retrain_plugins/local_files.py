"""Durable writes and locks on a local file system, what a local :class:`~retrain_plugins.storage.Storage` uses.

A write replaces a file whole or not at all (a fsynced temp file in the same folder, a rename, the
folder fsynced so the rename survives a crash); a lock is an ``flock``, across the processes of one
host. Object stores need none of this: a PUT is atomic and conditional writes replace locks.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_local_write", "flocked", "fsync_dir"]


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` of ``path`` (created), across processes of one host."""
    import fcntl  # POSIX only: local storages' locks; object stores use conditional writes

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_local_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` via a fsynced temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
