"""Where a repo's Feast registry lives, and whether it holds what the repo's code defines.

*Where*: :func:`registry_location` reads ``feature_store.yaml`` (with Feast's ``${VAR}``
expansion) without importing Feast: a file registry on local disk (``registry: path``, relative
to the repo), a file registry on object storage (``s3://``, ``gs://``, ``hdfs://``), a SQL
registry (``registry: {registry_type: sql, path: <SQLAlchemy URL>}``; a relative
``sqlite:///`` path is taken against the repo, as ``feast apply`` does it from the repo
folder), or another registry type (by its URL, never parsed as a file).

*Up to date*: decided by content, never by file times (a fresh checkout or an image build
touches every file). The *definitions digest* is a SHA-256 over the repo's resolved path, every
Python file Feast's ``apply`` would read (recursively, minus ``.feastignore`` and Feast's own
exclusions; ``__init__.py`` files included) and ``feature_store.yaml`` after ``${VAR}``
expansion; each file's hash is cached by (size, mtime, ctime, inode), so an untouched repo costs
one ``stat`` per file. The library records the digest when it applies the repo
(:func:`retrain_plugins.feast_store.apply_feature_repo`) in ``<registry file>.definitions.json``
beside a registry that is a local file (file registry, SQLite SQL registry), with the registry
file's stamp at that moment. When the digest differs from the record, the registry file changed
since (every apply and materialize rewrites it: a plain ``feast apply`` of other code is caught),
or there is no record (the registry was applied by plain ``feast apply``, or it is not a local
file), :func:`~retrain_plugins.feast_registry_diff.check_registry_current` compares the registry's
objects with the objects the repo's code defines (Feast's own ``plan`` diff): equal, the digest
is recorded and the check passes (a comment edit, a plain ``feast apply``); different, a
``SpecError`` names the files changed since the record and the objects that differ. Callers
cache their result by digest (:mod:`retrain_plugins.feast_view` keeps it in the retraining's
state folder, keyed by the registry's URL), so a registry without a local file is compared once
per retraining and definitions digest.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import threading
from pathlib import Path
from urllib.parse import urlparse

import yaml

from retrain_plugins.errors import SpecError

RECORD_FORMAT = 1
_SKIPPED_DIRS = frozenset({".git", ".venv", "__pycache__", ".ipynb_checkpoints", ".pytest_cache"})


class RegistryNotApplied(SpecError):
    """The repo has never been applied to its registry (no registry file, or no project in it)."""


@dataclasses.dataclass(frozen=True)
class RegistryLocation:
    """A Feast registry as ``feature_store.yaml`` names it.

    Attributes:
        registry_type: Feast's ``registry_type``: ``file`` (the default), ``sql``, or another.
        url: What Feast opens: an absolute local path, an object-store URL, or a SQLAlchemy URL
            (a relative SQLite path made absolute against the repo). May hold a password: show
            :attr:`display` instead.
        local_path: The registry's file on this machine (a local file registry, or the database
            file of a SQLite SQL registry); ``None`` for anything remote.
        rewritten: The URL differs from the yaml's (a relative SQLite path made absolute), so a
            ``FeatureStore`` must be given the rewritten config.
    """

    registry_type: str
    url: str
    local_path: Path | None
    rewritten: bool = False

    @property
    def display(self) -> str:
        """The URL with any password masked, for messages."""
        return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", self.url)

    @property
    def key(self) -> str:
        """A stable identity of the registry (hashed: the URL may hold a password)."""
        return hashlib.sha256(f"{self.registry_type}\n{self.url}".encode()).hexdigest()[:16]

    @property
    def rewritten_in_place(self) -> bool:
        """Feast rewrites this registry as a whole file on this host (truncate, then write): a
        local file registry. Readers and ``materialize`` must then exclude each other
        (:func:`retrain_plugins.feast_store.registry_lock`). A SQL registry commits in
        transactions and an object store replaces an object atomically: no lock, on any host."""
        return self.registry_type == "file" and self.local_path is not None

    @property
    def record_path(self) -> Path | None:
        """Where the applied definitions' digest is recorded: beside a local registry file."""
        if self.local_path is None:
            return None
        return self.local_path.with_name(self.local_path.name + ".definitions.json")


def config_text(feature_repo: Path) -> str:
    """``feature_store.yaml`` with environment variables expanded, as Feast reads it."""
    config_file = Path(feature_repo) / "feature_store.yaml"
    try:
        return os.path.expandvars(config_file.read_text())  # as feast.repo_config.load_repo_config does
    except FileNotFoundError:
        raise SpecError(f"feature_repo {feature_repo} has no feature_store.yaml") from None


def registry_location(feature_repo: Path) -> RegistryLocation:
    """The registry named in the repo's ``feature_store.yaml``; reads the (small) yaml, no Feast."""
    repo = Path(feature_repo).resolve()
    return _parse_location(str(repo), config_text(repo))


@functools.lru_cache(maxsize=64)  # keyed by the expanded yaml text: an edited yaml is re-parsed
def _parse_location(repo: str, text: str) -> RegistryLocation:
    config_file = Path(repo) / "feature_store.yaml"
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{config_file} is not valid YAML: {exc}") from None
    registry = config.get("registry") if isinstance(config, dict) else None
    if isinstance(registry, dict):
        registry_type = str(registry.get("registry_type") or "file")
        path = str(registry.get("path") or "")
    elif isinstance(registry, str):
        registry_type, path = "file", registry
    else:
        registry_type, path = "file", ""
    if not path:
        raise SpecError(f"{config_file} names no registry (`registry:` with a path or a URL)")
    if registry_type == "file" and isinstance(registry, dict) and registry.get("registry_store_type"):
        return RegistryLocation("file", path, None)  # a custom registry store: nothing to parse
    if registry_type == "file":
        scheme = urlparse(path).scheme
        if scheme and scheme != "file" and not (len(scheme) == 1 and path[1:3] in (":\\", ":/")):  # s3, gs, hdfs
            return RegistryLocation("file", path, None)
        # a local path, as Feast's FileRegistryStore takes it (infra/registry/file.py:15-19): even
        # `file://...` is a plain Path there, relative to the repo unless absolute
        local = Path(path) if Path(path).is_absolute() else (Path(repo) / path).resolve()
        return RegistryLocation("file", str(local), local)
    if registry_type == "sql" and path.startswith("sqlite"):
        return _sqlite_location(repo, path)
    return RegistryLocation(registry_type, path, None)


def _sqlite_location(repo: str, url: str) -> RegistryLocation:
    """A SQLite SQL registry: ``sqlite:///relative.db`` (against the repo) or ``sqlite:////abs.db``."""
    head, sep, rest = url.partition(":///")
    database, query = (rest.split("?", 1) + [""])[:2] if sep else ("", "")
    if not sep or not database or database == ":memory:" or database.startswith("file:"):
        return RegistryLocation("sql", url, None)  # in memory, or a URI form: nothing local to name
    path = Path(database)
    if path.is_absolute():
        return RegistryLocation("sql", url, path)
    path = (Path(repo) / path).resolve()
    absolute = f"{head}:///{path}" + (f"?{query}" if query else "")
    return RegistryLocation("sql", absolute, path, rewritten=True)


def registry_stamp(location: RegistryLocation) -> str | None:
    """The identity of a local registry file's current state (size, mtime, inode); ``None`` if remote.

    Feast rewrites the file on every apply and materialize. The stamp never decides staleness on
    its own: a new stamp only means the registry is compared with the definitions again.
    """
    if location.local_path is None:
        return None
    st = location.local_path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


# --- the definitions digest ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DefinitionsDigest:
    """What the repo's code and config are, by content: ``digest`` over ``files`` (name -> SHA-256)."""

    repo: str
    digest: str
    files: dict[str, str]


_FILE_HASHES: dict[str, tuple[tuple[int, int, int, int], str]] = {}
_HASH_LOCK = threading.Lock()


def definition_files(feature_repo: Path) -> list[Path]:
    """The Python files Feast's ``apply`` reads from the repo, sorted (plus ``__init__.py`` files).

    Feast (``repo_operations.get_repo_files``) takes every ``**/*.py`` except those under
    ``.git``, ``.venv``, ``__pycache__``, ``.ipynb_checkpoints``, ``.pytest_cache`` and the
    paths listed in ``.feastignore``.
    """
    repo = Path(feature_repo).resolve()
    files = []
    for folder, dirs, names in os.walk(repo):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        files.extend(Path(folder) / n for n in names if n.endswith(".py"))
    ignored = _feastignored(repo)
    return sorted(p for p in files if p not in ignored and p.is_file())


def _feastignored(repo: Path) -> set[Path]:
    """Files matched by ``.feastignore`` (``feast.repo_operations.get_ignore_files``' rules)."""
    ignore_file = repo / ".feastignore"
    if not ignore_file.is_file():
        return set()
    out: set[Path] = set()
    for line in ignore_file.read_text().splitlines():
        pattern = line.split("#", 1)[0].strip()
        for match in repo.glob(pattern) if pattern else ():
            out |= {match.resolve()} if match.is_file() else {p.resolve() for p in match.glob("**/*.py") if p.is_file()}
    return out


def _file_hash(path: Path) -> str:
    st = path.stat()
    identity = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    cached = _FILE_HASHES.get(str(path))
    if cached is not None and cached[0] == identity:
        return cached[1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with _HASH_LOCK:
        _FILE_HASHES[str(path)] = (identity, digest)
    return digest


def definitions_digest(feature_repo: Path) -> DefinitionsDigest:
    """The digest of the repo's definitions: its path, Python files and ``feature_store.yaml``.

    The path is part of it because definitions may compute source paths from their own location
    (the demo repo does): a copied or moved repo is compared with its registry again.
    """
    repo = Path(feature_repo).resolve()
    files = {p.relative_to(repo).as_posix(): _file_hash(p) for p in definition_files(repo)}
    feastignore = repo / ".feastignore"
    if feastignore.is_file():
        files[".feastignore"] = _file_hash(feastignore)
    files["feature_store.yaml"] = hashlib.sha256(config_text(repo).encode()).hexdigest()  # expanded
    blob = json.dumps({"repo": str(repo), "files": files}, sort_keys=True).encode()
    return DefinitionsDigest(str(repo), hashlib.sha256(blob).hexdigest(), files)


# --- the record beside the registry --------------------------------------------------------------


def read_record(location: RegistryLocation) -> dict | None:
    """The definitions last recorded for ``location`` (``None``: none, or unreadable)."""
    path = location.record_path
    if path is None:
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or record.get("registry") != location.key:
        return None
    return record


def write_record(location: RegistryLocation, digest: DefinitionsDigest, how: str, stamp: str | None = None) -> None:
    """Record that ``location`` holds the definitions of ``digest`` (``how``: apply or content).

    ``stamp`` is the registry file's :func:`registry_stamp` when it was found to hold them (read
    now when not given): a registry rewritten since (a plain ``feast apply`` of other code, or a
    materialize) is compared again before the record is trusted.

    Nothing is written for a registry that is not a local file; a registry folder that cannot be
    written only means the next check compares by content again.
    """
    path = location.record_path
    if path is None:
        return
    try:
        stamp = stamp or registry_stamp(location)
    except OSError:
        return
    record = {
        "format": RECORD_FORMAT,
        "registry": location.key,
        "registry_stamp": stamp,
        "repo": digest.repo,
        "digest": digest.digest,
        "files": digest.files,
        "recorded_by": how,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
