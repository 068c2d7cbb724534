"""The source files a retraining reads, and checks that a file is usable before anything reads it.

Each source (the label source, and every feature view's batch source) has a glob, a timestamp
column, a *reach* (how long after a row's timestamp a label can still join it: 0 for labels, the
TTL for features), and the columns the retraining needs. A file that lacks one, holds one of the
wrong type, or is not readable parquet yields a :class:`DataError` naming the file and column.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Collection, Mapping
from typing import NamedTuple

from retrain_plugins import remote
from retrain_plugins.errors import DataError
from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.sql import connect, ident, parquet, register_filesystems, utc

LABELS = "labels"


class Source(NamedTuple):
    pattern: str
    timestamp: str
    reach: float  # seconds past a row's timestamp at which a label can still join it
    numeric: tuple[str, ...]  # columns that must exist and be numeric
    other: tuple[str, ...]  # columns that must exist
    not_null: tuple[str, ...] = ()  # columns no row may leave empty
    text: tuple[str, ...] = ()  # columns that must exist and be strings (Feast String features)
    timestamps: tuple[str, ...] = ()  # further timestamp columns (a created-timestamp column)


_NUMERIC_FEAST = ("Int", "Float", "Bool", "Decimal")


class SourceFileError(DataError):
    """A source file the retraining cannot use, with the file and the column(s) at fault.

    ``columns`` is empty when the file as a whole is unreadable (not parquet, truncated).
    """

    def __init__(self, path: str, columns: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.columns = columns


class FileProblem(NamedTuple):
    """An unusable source file: which source (``labels`` or a feature view), file, column(s), why."""

    source: str
    path: str
    columns: tuple[str, ...]
    message: str


def sources(spec: RetrainingSpec, view: FeatureServiceView) -> dict[str, Source]:
    """Every source a retraining reads: the labels and each feature view's batch source."""
    lab = spec.labels
    numeric_label = spec.task in ("binary", "regression")
    sources = {
        # A label row without entity, time or cohort belongs to no partition: refused, not dropped.
        LABELS: Source(
            spec.label_glob,
            lab.timestamp_column,
            0.0,
            (lab.label_column,) if numeric_label else (),
            tuple(dict.fromkeys([*lab.key_columns, lab.cohort_column, *lab.feature_columns]))
            + (() if numeric_label else (lab.label_column,)),
            (*lab.key_columns, lab.timestamp_column, lab.cohort_column),
        )
    }
    for fv in view.views:
        reach = fv.ttl_seconds if fv.ttl_seconds is not None else float("inf")
        types = dict(zip(fv.features, fv.feature_types))
        numeric = tuple(f for f in fv.features if types.get(f, "Float64").startswith(_NUMERIC_FEAST))
        text = tuple(f for f in fv.features if types.get(f) == "String")
        other = tuple(f for f in fv.features if f not in numeric and f not in text) + fv.join_keys
        created = (fv.created_timestamp_field,) if fv.created_timestamp_field else ()
        sources[fv.name] = Source(fv.source_path, fv.timestamp_field, reach, numeric, other, (), text, created)
    return sources


_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN")


def inspect_file(path: str, source: Source) -> tuple[int | None, int | None]:
    """Check a file's schema against what the retraining reads; return its time range (UTC us).

    Raises:
        SourceFileError: naming the file and the column(s) at fault (none: unreadable parquet).
    """
    try:
        con = connect(path)
        if remote.is_remote(path):
            remote.list_folder_of(path)  # DuckDB's size, time and open requests answered from it, not HEADs
        described = con.execute(f"DESCRIBE SELECT * FROM {parquet('p')}", {"p": path}).fetchall()
        types = {name: dtype for name, dtype, *_ in described}
        required = (source.timestamp, *source.timestamps, *source.numeric, *source.text, *source.other)
        missing = [c for c in dict.fromkeys(required) if c not in types]
        if missing:
            raise SourceFileError(path, tuple(missing), f"{path}: missing column(s) {missing}")
        for column in (source.timestamp, *source.timestamps):
            if not types[column].startswith("TIMESTAMP"):
                raise SourceFileError(path, (column,), f"{path}: column {column!r} is {types[column]}, expected a timestamp")
        wrong = [c for c in source.numeric if not types[c].startswith(_NUMERIC)]
        if wrong:
            described_ = ", ".join(f"{c!r} is {types[c]}" for c in wrong)
            raise SourceFileError(path, tuple(wrong), f"{path}: column {described_}, expected numeric")
        wrong = [c for c in source.text if types[c] != "VARCHAR"]
        if wrong:
            described_ = ", ".join(f"{c!r} is {types[c]}" for c in wrong)
            raise SourceFileError(
                path, tuple(wrong), f"{path}: column {described_}, expected a string (the feature is a Feast String)"
            )
        column = utc(ident(source.timestamp))
        nulls = ", ".join(f"count(*) FILTER (WHERE {ident(c)} IS NULL)" for c in source.not_null)
        lo, hi, *empty = con.execute(
            f"SELECT epoch_us(min({column})), epoch_us(max({column})){', ' + nulls if nulls else ''} FROM {parquet('p')}",
            {"p": path},
        ).fetchone()
        empty_columns = [(c, n) for c, n in zip(source.not_null, empty) if n]
        if empty_columns:
            described_ = ", ".join(f"{c!r} ({n} rows)" for c, n in empty_columns)
            raise SourceFileError(
                path, tuple(c for c, _ in empty_columns), f"{path}: empty value(s) in column {described_}"
            )
    except DataError:
        raise
    except Exception as exc:  # duckdb's IO/InvalidInput errors: the file cannot be read at all
        raise SourceFileError(path, (), f"{path}: unreadable parquet: {exc}") from exc
    return lo, hi


class FileStat(NamedTuple):
    """What a listing records of one file: git's index fields (size, mtime, ctime, inode), or for
    an object in an object store (a remote URL) its size, modification time and change token."""

    size: int
    mtime_ns: int
    ctime_ns: int | None  # None for an object-store object (no ctime, no inode)
    inode: int | None
    token: str | None = None  # an object store's change token (ETag, ...); None for a local file


def file_stats(pattern: str) -> dict[str, FileStat]:
    """path -> :class:`FileStat` of the files matching ``pattern`` (a local glob or an fsspec URL).

    Local files: ``cp -p``, ``rsync -t``, ``tar x`` and ``touch -r`` keep size and mtime while the
    content changes; ctime and inode do change (the kernel sets ctime on every write and metadata
    change, a copy-over-rename makes a new inode). Change detection compares all four.

    A URL (``s3://bucket/labels/*/*.parquet``) is listed through fsspec; each object carries its
    backend's change token (:func:`retrain_plugins.remote.change_token`: the S3 ETag, ...), which
    change detection compares instead. Its paths are full URLs, as DuckDB's ``filename`` gives them.
    A listing that fails raises :class:`DataError` (see :func:`retrain_plugins.remote.list_files`).
    """
    if remote.is_remote(pattern):
        listed = remote.list_files(pattern)
        # What is listed is read next (inspect_file, the joins): the process's DuckDB reads it
        # through a filesystem of the same configuration, also where a caller connects without
        # naming the paths.
        register_filesystems([pattern])
        return {path: FileStat(f.size, f.mtime_ns, None, None, f.token) for path, f in listed.items()}
    found = {}
    for path in glob.glob(remote.local_path(pattern)):
        try:
            st = os.stat(path)
        except FileNotFoundError:  # removed between glob and stat
            continue
        found[path] = FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return found


def listing(pattern: str) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of the files matching ``pattern`` (see :func:`file_stats`)."""
    return {path: (st.size, st.mtime_ns) for path, st in file_stats(pattern).items()}


def glob_files(pattern: str) -> list[str]:
    """The files matching ``pattern`` (a local glob or an fsspec URL; see :func:`file_stats`), sorted."""
    if remote.is_remote(pattern):
        return sorted(remote.list_files(pattern))
    return sorted(glob.glob(remote.local_path(pattern)))


def content_token(path: str) -> str:
    """A digest of a file's whole content (SHA-256 in 1 MiB blocks).

    Taken when a file's size and mtime agree with the recorded ones but its ctime or inode do not
    (see ``bench/RESULTS-tokens.md``: a parquet footer digest misses same-size edits of values
    within a row group's min/max, a full hash of a 500 MB file costs well under a second).

    For an object-store URL: its change token as a listing gives it
    (:func:`retrain_plugins.remote.token`: the S3 ETag, ...), read from its metadata, not its bytes.
    """
    if remote.is_remote(path):
        return remote.token(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_sources(
    spec: RetrainingSpec,
    view: FeatureServiceView,
    validated: Mapping[tuple[str, str], tuple[int, int]] | None = None,
) -> dict[str, str]:
    """Every unusable source file, with why (empty when all files are fine).

    ``validated`` maps (source, path) to the (size, mtime_ns) at which a file already passed
    these checks (the change sensor records exactly those): such files are not opened again.
    """
    return {p.path: p.message for p in file_problems(spec, view, validated)}


def file_problems(
    spec: RetrainingSpec,
    view: FeatureServiceView,
    validated: Mapping[tuple[str, str], tuple[int, int]] | None = None,
    only: Collection[str] | None = None,
) -> list[FileProblem]:
    """:func:`validate_sources` with the source and column(s) of each problem; ``only``: these sources."""
    problems = []
    validated = validated or {}
    for name, source in sources(spec, view).items():
        if only is not None and name not in only:
            continue
        for path, stamp in sorted(listing(source.pattern).items()):
            if validated.get((name, path)) == stamp:
                continue
            try:
                inspect_file(path, source)
            except SourceFileError as exc:
                problems.append(FileProblem(name, path, exc.columns, str(exc)))
            except DataError as exc:
                problems.append(FileProblem(name, path, (), str(exc)))
    return problems
