"""Whole-object reads of object-store sources, kept in memory by version, for DuckDB.

A run that trains many partitions reads the same source objects many times: each partition's
training set is a few DuckDB queries, each opening every file its glob matches (measured on S3:
27 GETs per object in a 12-partition run, 45 per partition). :class:`CachedReads` wraps the
fsspec filesystem DuckDB reads through (:func:`retrain_plugins.remote.reading_filesystem`) and
serves an object opened for reading from one whole-object read, kept in a per-process LRU keyed by
(URL, the version the current listing names).

**Never a stale byte.** The bytes kept are checked to be the listed version's:

- S3: the key is the listed ETag, whatever it is (a single-part upload's MD5, a multipart
  ``<md5>-<parts>``, an SSE-KMS object's opaque tag), and the object is read through s3fs, which
  sends that ETag as ``If-Match`` with every read (``FileExpired`` when the object was replaced
  since the listing); a read whose own details name another ETag (a version-aware filesystem asks
  again) is refused too. An ETag is not assumed to be an MD5: it is none under SSE-KMS.
- GCS (``md5Hash``) and Azure (``content_md5``): the key is the content MD5, and the fetched bytes
  are hashed and compared with it.

A mismatch is an ``OSError`` naming the object ("changed since it was listed"); the next connection
lists it again. A listing that shows another version (an edited object) misses the cache; one
that shows the same (an identical re-upload, same MD5 ETag) is served from it. Objects without a
version token, opened for writing, or larger than the per-object limit are read as fsspec reads
them (ranged GETs).

Memory: at most ``RETRAIN_OBJECT_CACHE_MB`` (default 256) MiB per process, each object at most a
quarter of it; ``RETRAIN_OBJECT_CACHE_MB=0`` turns the cache off. Why not fsspec's own caching
filesystems (``filecache``, ``blockcache``): they key local copies by path, write them to disk
and hold them until deleted, and go under their own protocol name, while DuckDB routes a URL to a
filesystem by the protocol it declares (``s3``).
"""

from __future__ import annotations

import base64
import binascii
import errno
import functools
import hashlib
import io
import os
import threading
import weakref
from collections import OrderedDict
from typing import Any

from fsspec import AbstractFileSystem

__all__ = ["CachedReads", "ObjectCache", "cached_reads", "content_md5"]

_S3 = frozenset({"s3", "s3a"})


def _etag(info: dict[str, Any]) -> str | None:
    return str(info.get("ETag") or info.get("etag") or "").strip('"') or None


def content_md5(info: dict[str, Any]) -> str | None:
    """The hex MD5 of an object's content from its fsspec info (a listing entry), or None:
    GCS's ``md5Hash`` (base64), Azure's ``content_settings.content_md5`` (bytes). (Not S3's ETag:
    under SSE-KMS, or for a multipart upload, it is not the content's MD5.)
    """
    if info.get("md5Hash"):
        try:
            return base64.b64decode(info["md5Hash"]).hex()
        except (binascii.Error, ValueError):
            return None
    settings = info.get("content_settings")
    md5 = settings.get("content_md5") if isinstance(settings, dict) else getattr(settings, "content_md5", None)
    if isinstance(md5, (bytes, bytearray)) and len(md5) == 16:
        return bytes(md5).hex()
    return None


class ObjectCache:
    """A thread-safe LRU of object bytes keyed by (URL, MD5), bounded in total bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.max_object = max_bytes // 4
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[str, str], data: bytes) -> None:
        if len(data) > self.max_object:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)


@functools.cache
def _object_cache() -> ObjectCache | None:
    """The process's cache, sized by ``RETRAIN_OBJECT_CACHE_MB`` (None: off)."""
    megabytes = float(os.environ.get("RETRAIN_OBJECT_CACHE_MB", "256"))
    return ObjectCache(int(megabytes * 2**20)) if megabytes > 0 else None


class CachedReads(AbstractFileSystem):
    """``inner`` (an object store's fsspec filesystem) with reads of whole objects served from
    :class:`ObjectCache`; everything DuckDB calls besides ``open`` goes to ``inner`` as it is."""

    cachable = False  # fsspec's instance cache: one wrapper per inner filesystem, kept by cached_reads

    def __init__(self, inner: AbstractFileSystem, cache: ObjectCache):
        super().__init__()
        self.inner, self.cache = inner, cache
        self.protocol = inner.protocol  # DuckDB routes URLs of these protocols here

    # -- what DuckDB and the listing calls, unchanged -------------------------------------------

    def glob(self, path, **kwargs):
        return self.inner.glob(path, **kwargs)

    def ls(self, path, detail=True, **kwargs):
        return self.inner.ls(path, detail=detail, **kwargs)

    def info(self, path, **kwargs):
        return self.inner.info(path, **kwargs)

    def size(self, path):
        return self.inner.size(path)

    def modified(self, path):
        return self.inner.modified(path)

    def exists(self, path, **kwargs):
        return self.inner.exists(path, **kwargs)

    def isfile(self, path):
        return self.inner.isfile(path)

    def isdir(self, path):
        return self.inner.isdir(path)

    def unstrip_protocol(self, name: str) -> str:
        return self.inner.unstrip_protocol(name)

    def invalidate_cache(self, path=None):
        self.inner.invalidate_cache(path)

    # -- reads ----------------------------------------------------------------------------------

    def open(self, path, mode="rb", **kwargs):
        if mode != "rb":
            return self.inner.open(path, mode, **kwargs)
        info = self.inner.info(path)  # the current listing's entry (sql.connect: one per connection)
        s3 = bool(_S3 & self._protocols)
        version = _etag(info) if s3 else content_md5(info)
        if version is None or int(info.get("size") or 0) > self.cache.max_object:
            return self.inner.open(path, mode, **kwargs)
        url = self.inner.unstrip_protocol(self.inner._strip_protocol(path))
        data = self.cache.get((url, version))
        if data is None:
            data = self._read_s3(path, url, version) if s3 else self._read_checked(path, url, version)
            self.cache.put((url, version), data)
        return io.BytesIO(data)

    @property
    def _protocols(self) -> set[str]:
        names = self.inner.protocol
        return {names} if isinstance(names, str) else set(names)

    def _read_s3(self, path: str, url: str, etag: str) -> bytes:
        # s3fs reads a file it opens with If-Match: <the ETag of its details>, the listed entry
        # (FileExpired when the object was replaced since); a version-aware one asks again, so its
        # details are compared with the listing too.
        with self.inner.open(path, "rb") as handle:
            if _etag(handle.details) != etag:
                raise _changed(url, etag)
            return handle.read()

    def _read_checked(self, path: str, url: str, md5: str) -> bytes:
        data = self.inner.cat_file(path)
        if hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
            raise _changed(url, md5)
        return data


def _changed(url: str, version: str) -> OSError:
    return OSError(errno.ESTALE, f"{url} changed since it was listed (listed version {version}): read it again")


# id(inner) -> (a weak reference to inner, its wrapper). By identity, not equality: fsspec
# filesystems compare equal by their constructor arguments, and a new instance after fsspec's cache
# was cleared (another environment: endpoint, credentials) must not get the old one's wrapper.
_WRAPPED: dict[int, tuple[weakref.ref, CachedReads]] = {}
_WRAPPED_LOCK = threading.Lock()


def cached_reads(inner: AbstractFileSystem) -> AbstractFileSystem:
    """The one :class:`CachedReads` of ``inner`` in this process (``inner`` itself with the cache off)."""
    cache = _object_cache()
    if cache is None:
        return inner
    with _WRAPPED_LOCK:
        for key in [k for k, (ref, _) in _WRAPPED.items() if ref() is None]:
            del _WRAPPED[key]
        found = _WRAPPED.get(id(inner))
        if found is None or found[0]() is not inner:
            found = _WRAPPED[id(inner)] = (weakref.ref(inner), CachedReads(inner, cache))
        return found[1]
