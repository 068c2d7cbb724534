"""Storage: the one home of a retraining's files, rooted at a local folder or any fsspec URL.

Sub-models, their records, training sets, the fallback and the routing bundle are all read and
written through one :class:`Storage` (``store.url`` in the spec; ``data_dir`` by default), so the
same code serves a laptop folder and ``s3://`` / ``gs://`` / ``az://`` buckets. Paths below the
root are relative POSIX strings (``models/churn/entries/...``).

What each write guarantees:

* :meth:`Storage.write_bytes`: the object is replaced whole or not at all. Local: a fsynced temp
  file in the same folder and a rename. Object stores: one PUT (atomic by the protocol).
* :meth:`Storage.update`: a read-modify-write that never loses a concurrent update. Local: an
  ``flock`` of a lock file beside it (one host: the folder is on it). S3 (and S3-compatible
  servers that implement conditional writes, such as MinIO): ``If-Match`` on the ETag read, or
  ``If-None-Match: *`` for a new object; a lost race reads again and retries. Other backends:
  a plain write (last writer wins), see :attr:`Storage.conditional`.
* Immutable content-addressed artifacts (:meth:`Storage.put_file`) need no condition at all: two
  writers of one name write the same bytes.

The local writes and locks themselves are in :mod:`retrain_plugins.local_files`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from retrain_plugins.errors import StoreError
from retrain_plugins.local_files import atomic_local_write, flocked, fsync_dir

__all__ = ["Storage", "is_url"]

_RETRIES = 20  # conditional-write attempts under contention before giving up with an error
# After a lost race: a random wait up to 10 ms, doubling per loss, at most 0.5 s (so writers that
# lost together do not collide again at once: without it 4 writers of one object gave up)
_BACKOFF_START, _BACKOFF_MAX = 0.01, 0.5


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an fsspec URL with a protocol other than the local file system."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


class Storage:
    """Files under one root: a local folder or an fsspec URL.

    Args:
        url: The root: a local path, ``file://...``, or any fsspec URL (``s3://bucket/prefix``).
        options: fsspec storage options (``endpoint_url``, ``key``, ``anon``...), passed to the
            file system as they are. Credentials are best left to each backend's own environment
            variables or config files; never write them into a spec checked into git.
    """

    def __init__(self, url: str | os.PathLike, options: Mapping[str, Any] | None = None):
        self.url = str(url).rstrip("/") or "/"
        self.options = dict(options or {})
        # No listings cache: a long-lived process (the daemon's code server) must see the records
        # other processes write; s3fs would otherwise answer listings from its cache.
        extra = {"use_listings_cache": False} if is_url(self.url) else {}
        fs, root = fsspec.core.url_to_fs(self.url, **{**extra, **self.options})
        self.fs: fsspec.AbstractFileSystem = fs
        self.local = isinstance(fs, LocalFileSystem)
        self.root = str(Path(root).resolve()) if self.local else root.rstrip("/")

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Storage) and (self.protocol, self.root) == (other.protocol, other.root)

    def __hash__(self) -> int:
        return hash((self.protocol, self.root))

    @property
    def protocol(self) -> str:
        protocol = self.fs.protocol
        return protocol if isinstance(protocol, str) else protocol[0]

    @property
    def conditional(self) -> bool:
        """Whether :meth:`update` is a real compare-and-swap here (else last writer wins)."""
        return self.local or self.protocol in ("s3", "s3a")

    def child(self, rel: str) -> "Storage":
        """The storage rooted at ``rel`` below this one (same file system and options)."""
        child = object.__new__(Storage)
        child.url = f"{self.url}/{rel}"
        child.options, child.fs, child.local = self.options, self.fs, self.local
        child.root = self.path(rel)
        return child

    def path(self, rel: str = "") -> str:
        """``rel``'s path in the file system (a local path for a local storage)."""
        rel = rel.strip("/")
        return f"{self.root}/{rel}" if rel else self.root

    def uri(self, rel: str = "") -> str:
        """``rel`` as a URL (a plain path for a local storage): for messages and readers."""
        return self.path(rel) if self.local else f"{self.protocol}://{self.path(rel)}"

    def local_path(self, rel: str = "") -> Path:
        """``rel`` as a local ``Path``; only a local storage has one."""
        if not self.local:
            raise StoreError(f"{self.uri(rel)} is not on a local file system")
        return Path(self.path(rel))

    def relative(self, path: str) -> str:
        """A file system path (as listed) relative to this storage's root."""
        root = self.root.rstrip("/") + "/"
        path = str(path)
        path = path.split("://", 1)[1] if "://" in path else path
        if not path.startswith(root):
            raise ValueError(f"{path} is not below {self.root}")
        return path[len(root):]

    # -- reading ---------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        """``rel``'s bytes; ``FileNotFoundError`` when it does not exist."""
        return self.fs.cat_file(self.path(rel))

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def glob(self, pattern: str) -> list[str]:
        """Relative paths matching ``pattern`` (a glob below the root), sorted."""
        found = self.fs.glob(self.path(pattern))
        return sorted(self.relative(p) for p in found)

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def token(self, rel: str) -> str | None:
        """A change token of the object: local (size, mtime_ns), else the backend's ETag /
        generation / checksum when it lists one (``None`` when it does not exist)."""
        try:
            info = self.fs.info(self.path(rel))
        except FileNotFoundError:
            return None
        if self.local:
            st = os.stat(self.path(rel))
            return f"{st.st_size}:{st.st_mtime_ns}"
        for name in ("ETag", "etag", "generation", "md5Hash", "content_md5"):
            if info.get(name):
                return f"{name}:{info[name]}"
        return f"{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('last_modified')}"

    def modified(self, rel: str) -> float | None:
        """When ``rel`` was last written (seconds since the epoch), if the backend says."""
        if self.local:
            return os.stat(self.path(rel)).st_mtime
        try:
            return self.fs.modified(self.path(rel)).timestamp()
        except (NotImplementedError, AttributeError, FileNotFoundError):
            return None

    @contextlib.contextmanager
    def open_local(self, rel: str) -> Iterator[Path]:
        """A local file holding ``rel``'s bytes: the file itself when local, a temp copy otherwise."""
        if self.local:
            yield self.local_path(rel)
            return
        with tempfile.TemporaryDirectory(prefix="retrain-storage-") as tmp:
            target = Path(tmp) / Path(rel).name
            self.fs.get_file(self.path(rel), str(target))
            yield target

    # -- writing ---------------------------------------------------------------------------

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` with ``data``, whole or not at all."""
        if self.local:
            atomic_local_write(self.local_path(rel), data)
        else:
            self.fs.pipe_file(self.path(rel), data)

    def put_file(self, local: Path, rel: str) -> None:
        """Move the local file ``local`` to ``rel`` (atomically; ``local`` is consumed).

        For immutable, content-addressed objects: a concurrent writer of the same name writes the
        same bytes, so no condition is needed.
        """
        if self.local:
            target = self.local_path(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(local, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                atomic_local_write(target, Path(local).read_bytes())
                Path(local).unlink()
            fsync_dir(target.parent)
        else:
            self.fs.put_file(str(local), self.path(rel))
            Path(local).unlink(missing_ok=True)

    @contextlib.contextmanager
    def staging(self, rel: str, suffix: str = "") -> Iterator[Path]:
        """A local temp file to write ``rel``'s content into before :meth:`put_file` (in the same
        folder when local, so the final rename never crosses devices); removed if still there."""
        if self.local:
            folder = self.local_path(rel).parent
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(tempfile.gettempdir())
        fd, name = tempfile.mkstemp(dir=folder, prefix=".incoming.", suffix=suffix)
        os.close(fd)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def delete(self, rel: str) -> None:
        """Remove ``rel`` (nothing if it does not exist)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(rel))

    def update(self, rel: str, mutate: Callable[[bytes | None], bytes]) -> bytes:
        """Read ``rel`` (``None`` if absent), write ``mutate(old)``, never losing a concurrent update.

        ``mutate`` may be called more than once (after a lost race) and must be a pure function
        of what it is given; an exception from it leaves ``rel`` as it was. Returns what was written.
        """
        if self.local:
            with self.locked(rel):
                path = self.local_path(rel)
                new = mutate(path.read_bytes() if path.exists() else None)
                atomic_local_write(path, new)
                return new
        if not self.conditional:
            old = self.read_bytes(rel) if self.exists(rel) else None
            new = mutate(old)
            self.write_bytes(rel, new)
            return new
        for attempt in range(_RETRIES):
            if attempt:
                time.sleep(random.uniform(0, min(_BACKOFF_MAX, _BACKOFF_START * 2 ** (attempt - 1))))
            etag = _etag(self.fs, self.path(rel))
            old = None if etag is None else self.read_bytes(rel)
            new = mutate(old)
            condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
            try:
                self.fs.pipe_file(self.path(rel), new, **condition)
                return new
            except (FileExistsError, OSError) as exc:
                if not _precondition_failed(exc):
                    raise
                self.fs.invalidate_cache(self.path(rel))
        raise StoreError(f"{self.uri(rel)}: {_RETRIES} conditional writes in a row lost a race; giving up")

    @contextlib.contextmanager
    def locked(self, rel: str) -> Iterator[None]:
        """Exclusive lock of ``rel`` across processes of this host (local storages only)."""
        with flocked(Path(self.path("locks")) / f"{rel}.lock"):
            yield


def _etag(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    fs.invalidate_cache(path)
    try:
        return fs.info(path)["ETag"]
    except FileNotFoundError:
        return None


def _precondition_failed(exc: BaseException) -> bool:
    """s3fs maps a failed ``If-None-Match`` to FileExistsError and a failed ``If-Match`` to an
    OSError(EINVAL) whose message names the precondition."""
    if isinstance(exc, FileExistsError):
        return True
    text = f"{exc} {getattr(exc, '__cause__', '')}"
    return "PreconditionFailed" in text or "Precondition" in text or "412" in text
