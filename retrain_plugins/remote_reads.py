"""Whole-object reads of object-store sources, kept in memory by content hash, for DuckDB.

A run that trains many partitions reads the same source objects many times: each partition's
training set is a few DuckDB queries, each opening every file its glob matches (measured on S3:
27 GETs per object in a 12-partition run, 45 per partition). :class:`CachedReads` wraps the
fsspec filesystem DuckDB reads through (:func:`retrain_plugins.remote.reading_filesystem`) and
serves an object opened for reading from one whole-object GET, kept in a per-process LRU keyed by
(URL, content MD5).

**Never a stale byte.** The MD5 is the object's as the current listing gives it (S3's ETag of a
plain upload, GCS's ``md5Hash``, Azure's ``content_md5``; a multipart ETag is not an MD5 and is
not cached), and the fetched bytes are hashed and compared with it before they are served or
kept: bytes that do not match (the object was overwritten after it was listed) are an ``OSError``,
as s3fs's own ranged reads raise ``FileExpired`` then; the next connection lists the object
again. A listing that shows another MD5 (an edited object) misses the cache; one that shows the
same MD5 (an identical re-upload) is served from it. Objects
without an MD5 in their listing, opened for writing, or larger than the per-object limit are read
as fsspec reads them (ranged GETs).

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
import re
import threading
import weakref
from collections import OrderedDict
from typing import Any

from fsspec import AbstractFileSystem

__all__ = ["CachedReads", "ObjectCache", "cached_reads", "content_md5"]

_HEX_MD5 = re.compile(r"^[0-9a-f]{32}$")


def content_md5(info: dict[str, Any]) -> str | None:
    """The hex MD5 of an object's content from its fsspec info (a listing entry), or None.

    S3: the ETag of a single-part upload is the MD5 (a multipart one is ``<md5>-<parts>``: not the
    content's); GCS: ``md5Hash`` (base64); Azure: ``content_settings.content_md5`` (bytes).
    """
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"').lower()
    if _HEX_MD5.match(etag):
        return etag
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
        md5 = content_md5(info)
        if md5 is None or int(info.get("size") or 0) > self.cache.max_object:
            return self.inner.open(path, mode, **kwargs)
        url = self.inner.unstrip_protocol(self.inner._strip_protocol(path))
        data = self.cache.get((url, md5))
        if data is None:
            data = self.inner.cat_file(path)
            if hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
                # As s3fs's own ranged reads do (FileExpired): the listing this read's sizes come
                # from no longer describes the object. The next connection lists it again.
                raise OSError(errno.ESTALE, f"{url} changed since it was listed (listed MD5 {md5}): read it again")
            self.cache.put((url, md5), data)
        return io.BytesIO(data)


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
