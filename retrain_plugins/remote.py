"""Source files on object storage: any fsspec URL (``s3://bucket/labels/*/*.parquet``, ``gs://``, ``az://``).

A source glob is either a local path (listed with ``glob`` + ``os.stat``, as always:
:func:`retrain_plugins.sources.file_stats`) or a URL whose protocol fsspec knows. ``file://`` URLs
are local paths. A URL is listed through its fsspec filesystem (``fsspec.core.url_to_fs``) and read
by DuckDB through a filesystem of the same configuration registered on the connection
(:func:`reading_filesystem`, :func:`retrain_plugins.sql.connect`): no DuckDB extension is installed
or downloaded, so this works offline.

**Configuration** is the backend's own, never the spec's: fsspec builds the filesystem from its
standard configuration. For S3 (s3fs, botocore) that is the ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` / ``AWS_PROFILE`` / ``AWS_DEFAULT_REGION``
environment variables, ``~/.aws/config`` and ``~/.aws/credentials``, and ``AWS_ENDPOINT_URL_S3``
(or ``AWS_ENDPOINT_URL``) for an S3-compatible server (MinIO, Ceph, moto); fsspec's own
configuration applies to every filesystem it builds (``FSSPEC_S3_ENDPOINT_URL=...``,
``FSSPEC_S3='{"version_aware": true}'``, or a JSON file in ``~/.config/fsspec/``). Set them where
the sensor and the runs execute (the Dagster code location's environment).

**Change tokens.** A listing records per object a token that changes when its content may have:

- S3: the ETag (the content's MD5 for a plain upload, so an identical re-upload keeps it), plus the
  ``VersionId`` when the filesystem is ``version_aware`` (then every upload is a new token);
- GCS: the object's MD5 (``md5Hash``), or its ``generation`` where there is none (composite objects);
- Azure: the content MD5, else the ETag; any other backend: its ETag if it has one, else size +
  modification time.

An object whose token differs is re-read and its fingerprints decide (a multipart re-upload of the
same bytes has another ETag: it is re-read once and requests nothing).

**Never an empty listing by accident.** A listing that fails (endpoint unreachable, credentials
refused) raises a :class:`DataError` naming the source, as does a glob whose bucket does not exist;
a glob that matches nothing in an existing bucket logs a warning; a source that lists no files where
the last tick recorded some is refused by the change scan.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from retrain_plugins.errors import DataError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

LOCAL_PROTOCOLS = frozenset({"file", "local"})
_PROTOCOL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)(?:://|::)")
_MAGIC = re.compile(r"[*?\[]")
log = logging.getLogger(__name__)


def protocol(path: str) -> str | None:
    """The URL protocol of ``path`` (``"s3"``), or None for a plain local path."""
    match = _PROTOCOL.match(str(path))
    return match.group(1).lower() if match else None


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL of a non-local fsspec filesystem (``s3://...``; not ``file://``)."""
    found = protocol(path)
    return found is not None and found not in LOCAL_PROTOCOLS


def local_path(path: str) -> str:
    """A local path as given; a ``file://`` URL as the path it names (``file:///a/b`` -> ``/a/b``)."""
    path = str(path)
    found = protocol(path)
    if found in LOCAL_PROTOCOLS and "://" in path:
        return path.split("://", 1)[1]
    return path


def configured_s3_endpoint() -> str | None:
    """The S3 endpoint s3fs is configured with here: fsspec's ``s3`` configuration
    (``endpoint_url``, ``client_kwargs.endpoint_url``), else ``AWS_ENDPOINT_URL_S3``, else
    ``AWS_ENDPOINT_URL``; None for AWS's own (or one named only in ``~/.aws/config``)."""
    import os

    from fsspec.config import conf

    options = conf.get("s3", {})
    found = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")
    return found or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def filesystem(url: str) -> "AbstractFileSystem":
    """The fsspec filesystem of ``url``, as configured by the environment (see the module docstring).

    Built without a listing cache (a sensor lists every tick and must see new objects), and cached
    by fsspec per process. DuckDB reads through :func:`reading_filesystem`.
    """
    import fsspec

    fs, _ = fsspec.core.url_to_fs(url, use_listings_cache=False)
    return fs


def reading_filesystem(url: str) -> "AbstractFileSystem":
    """The fsspec filesystem DuckDB reads ``url`` through: :func:`filesystem`'s configuration, with
    a listing cache that :func:`retrain_plugins.sql.connect` empties for each connection.

    Without one, every ``info`` DuckDB asks for while reading is a request of its own (a HEAD per
    open, size and modification time: ~200 requests to read one partition's dozen files); with
    it they come from the glob's listing, taken after the connection was opened. Whole objects
    read are kept in memory by listed version (:mod:`retrain_plugins.remote_reads`), so a run over
    many partitions fetches each unchanged object once.
    """
    import fsspec

    from retrain_plugins.remote_reads import cached_reads

    fs, _ = fsspec.core.url_to_fs(url, use_listings_cache=True, listings_expiry_time=None)
    return cached_reads(fs)


def list_folder_of(url: str) -> None:
    """List the folder of the object ``url`` into its reading filesystem's listing cache.

    For a read of one object by its URL (no glob): without a listing, each size, modification time
    and open DuckDB asks for is a HEAD request (~11 per file validated); after it, one LIST of the
    folder answers them, until :func:`retrain_plugins.sql.connect` empties the cache.
    """
    reading_filesystem(url).ls(url.rsplit("/", 1)[0], detail=True)


class RemoteFile(NamedTuple):
    """What a listing records of one object: size, modification time and change token."""

    size: int
    mtime_ns: int
    token: str


def _mtime_ns(info: dict[str, Any]) -> int:
    for key in ("LastModified", "last_modified", "updated", "mtime", "modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if isinstance(value, datetime):
            return int(value.timestamp() * 1_000_000) * 1_000
        return int(float(value) * 1e9)
    return 0


def _hex(value: Any) -> str:
    return value.hex() if isinstance(value, (bytes, bytearray)) else str(value)


def _protocols(fs: "AbstractFileSystem") -> set[str]:
    names = fs.protocol
    return {names} if isinstance(names, str) else set(names)


def change_token(info: dict[str, Any], protocols: set[str] = frozenset(), version_aware: bool = False) -> str:
    """The change token of one object from its fsspec info (a listing entry or ``info()``).

    ``protocols`` are the filesystem's (``fs.protocol``); ``version_aware``: an S3 filesystem that
    lists versions (then the ``VersionId`` is part of the token, as in listings and ``info()`` alike).
    """
    etag = info.get("ETag") or info.get("etag")
    if protocols & {"s3", "s3a"} and etag:
        found = f"s3-etag:{str(etag).strip(chr(34))}"
        version = info.get("VersionId")
        return found + (f";version={version}" if version_aware and version and version != "null" else "")
    if protocols & {"gs", "gcs"} and (info.get("md5Hash") or info.get("generation")):
        return f"gcs-md5:{info['md5Hash']}" if info.get("md5Hash") else f"gcs-generation:{info['generation']}"
    settings = info.get("content_settings")
    md5 = settings.get("content_md5") if isinstance(settings, dict) else getattr(settings, "content_md5", None)
    if md5:  # adlfs
        return f"md5:{_hex(md5)}"
    if etag:
        return f"etag:{str(etag).strip(chr(34))}"
    return f"stat:{int(info.get('size') or 0)}:{_mtime_ns(info)}"


def _bucket(fs: "AbstractFileSystem", url: str) -> str:
    """The top of ``url``'s path (an S3/GCS bucket, an Azure container), without protocol."""
    return fs._strip_protocol(url).split("/", 1)[0]


def list_files(pattern: str) -> dict[str, RemoteFile]:
    """Full URL -> :class:`RemoteFile` of the objects matching the glob URL ``pattern``.

    Raises :class:`DataError` when the listing fails or the bucket does not exist; logs a warning
    when an existing bucket holds nothing that matches.
    """
    fs = filesystem(pattern)
    protocols, version_aware = _protocols(fs), bool(getattr(fs, "version_aware", False))
    path = fs._strip_protocol(pattern)
    try:
        if _MAGIC.search(path):
            found = fs.glob(path, detail=True)
        else:
            found = {path: fs.info(path)} if fs.exists(path) else {}
    except Exception as exc:  # botocore/aiohttp connection errors, PermissionError, ...
        raise DataError(f"cannot list source {pattern}: {type(exc).__name__}: {exc}") from exc
    files = {
        fs.unstrip_protocol(name): RemoteFile(int(info.get("size") or 0), _mtime_ns(info), change_token(info, protocols, version_aware))
        for name, info in found.items()
        if info.get("type", "file") == "file"
    }
    if not files:
        bucket = _bucket(fs, pattern)
        try:
            fs.info(bucket)
        except FileNotFoundError:
            raise DataError(
                f"source {pattern} cannot be listed: {fs.unstrip_protocol(bucket)} does not exist "
                "(or these credentials cannot see it)"
            ) from None
        except Exception as exc:
            raise DataError(f"cannot list source {pattern}: {type(exc).__name__}: {exc}") from exc
        log.warning("source %s matches no files", pattern)
    return files


def token(url: str) -> str:
    """The change token of one object (the listing's token: see :func:`change_token`)."""
    fs = filesystem(url)
    return change_token(fs.info(fs._strip_protocol(url)), _protocols(fs), bool(getattr(fs, "version_aware", False)))
