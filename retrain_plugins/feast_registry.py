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
file), :func:`check_registry_current` compares the registry's
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
import importlib.util
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
    def record_path(self) -> Path | None:
        """Where the applied definitions' digest is recorded: beside a local registry file."""
        if self.local_path is None:
            return None
        return self.local_path.with_name(self.local_path.name + ".definitions.json")


def _config_text(feature_repo: Path) -> str:
    config_file = Path(feature_repo) / "feature_store.yaml"
    try:
        return os.path.expandvars(config_file.read_text())  # as feast.repo_config.load_repo_config does
    except FileNotFoundError:
        raise SpecError(f"feature_repo {feature_repo} has no feature_store.yaml") from None


def registry_location(feature_repo: Path) -> RegistryLocation:
    """The registry named in the repo's ``feature_store.yaml``; reads the (small) yaml, no Feast."""
    repo = Path(feature_repo).resolve()
    return _parse_location(str(repo), _config_text(repo))


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
    files["feature_store.yaml"] = hashlib.sha256(_config_text(repo).encode()).hexdigest()  # expanded
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


# --- the repo's objects and the registry's -------------------------------------------------------


def load_repo_objects(feature_repo: Path) -> list:
    """Execute each definition file under a unique module name; the Feast objects they define.

    Unlike Feast's own ``parse_repo`` this never imports the repo's modules by name (a second
    repo, or an edited file, in a long-lived process would get the first module from
    ``sys.modules``) and never changes the working directory.
    """
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView, Project
    from feast.data_source import DataSource
    from feast.labeling.label_view import LabelView
    from feast.permissions.permission import Permission

    kinds = (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService, LabelView, Permission, Project)
    objects: list = []
    for path in definition_files(feature_repo):
        if path.name == "__init__.py":  # Feast skips them too
            continue
        name = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(f"_feast_repo_{name}_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        for value in vars(module).values():
            if isinstance(value, kinds) and not any(value is o for o in objects):
                objects.append(value)
    return objects


def _repo_contents(objects: list, store):
    """``objects`` sorted into Feast's ``RepoContents`` as ``feast.repo_operations.parse_repo`` does."""
    from feast import BatchFeatureView, Entity, FeatureService, FeatureView, OnDemandFeatureView, Project, PushSource
    from feast.data_source import DataSource
    from feast.labeling.label_view import LabelView
    from feast.permissions.permission import Permission
    from feast.repo_contents import RepoContents
    from feast.stream_feature_view import StreamFeatureView

    res = RepoContents(
        projects=[], data_sources=[], feature_views=[], on_demand_feature_views=[], stream_feature_views=[],
        label_views=[], entities=[], feature_services=[], permissions=[],
    )  # fmt: skip

    def add(listing: list, obj) -> None:
        if obj is not None and not any(obj is o for o in listing):
            listing.append(obj)

    for obj in objects:
        if isinstance(obj, DataSource):
            add(res.data_sources, obj)
            add(res.data_sources, getattr(obj, "batch_source", None))  # push / stream sources
        elif isinstance(obj, StreamFeatureView):
            add(res.stream_feature_views, obj)
            add(res.data_sources, obj.batch_source)
            add(res.data_sources, obj.stream_source)
        elif isinstance(obj, (FeatureView, BatchFeatureView)):
            add(res.feature_views, obj)
            add(res.data_sources, obj.batch_source)
            add(res.data_sources, obj.stream_source)
        elif isinstance(obj, Entity):
            add(res.entities, obj)
        elif isinstance(obj, FeatureService):
            add(res.feature_services, obj)
        elif isinstance(obj, OnDemandFeatureView):
            add(res.on_demand_feature_views, obj)
        elif isinstance(obj, LabelView):
            add(res.label_views, obj)
            add(res.data_sources, obj.source)
            if isinstance(obj.source, PushSource):
                add(res.data_sources, obj.source.batch_source)
        elif isinstance(obj, Permission):
            add(res.permissions, obj)
        elif isinstance(obj, Project):
            add(res.projects, obj)
    if not res.projects:  # as feast apply does: the project named in feature_store.yaml
        description = getattr(store.config, "project_description", None) or ""
        res.projects.append(Project(name=store.project, description=description))
    return res


def registry_differences(feature_repo: Path) -> list[str] | None:
    """What differs between the registry and the repo's code (imports Feast; ~0.1 s once loaded).

    Returns ``None`` when the registry holds no project of the repo (never applied), else one
    line per object the code defines that is missing from the registry (``created ...``) or
    differs from it (``updated ...``, with the properties). Objects only in the registry are not
    differences: the library's in-process apply adds and updates without deleting. Uses
    ``FeatureStore.plan`` (Feast's own validation, inference and diff); the working directory is
    the repo meanwhile, as for ``feast plan``, so relative source paths infer the same way.
    """
    from feast.diff.property_diff import TransitionType
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.infra.registry.registry import FeastObjectType

    from retrain_plugins.feast_store import _CWD_LOCK, feature_store, quiet_feast

    repo = Path(feature_repo).resolve()
    try:
        objects = load_repo_objects(repo)
    except Exception as exc:  # the user's code: any error it raises
        raise SpecError(f"the definitions in {repo} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    store = feature_store(str(repo))
    with _CWD_LOCK, quiet_feast():
        before = os.getcwd()
        os.chdir(repo)
        try:
            diff, _, _ = store.plan(_repo_contents(objects, store))
        except Exception as exc:
            raise SpecError(f"Feast cannot plan the definitions in {repo}: {type(exc).__name__}: {exc}") from exc
        finally:
            os.chdir(before)
    out = []
    for d in diff.feast_object_diffs:
        if d.name == DUMMY_ENTITY_NAME or d.transition_type in (TransitionType.UNCHANGED, TransitionType.DELETE):
            continue
        if d.feast_object_type == FeastObjectType.PROJECT and d.transition_type == TransitionType.CREATE:
            return None
        kind = d.feast_object_type.value
        if d.transition_type == TransitionType.CREATE:
            out.append(f"{kind} {d.name!r} is not in the registry")
            continue
        # Feast's diff compares a view's embedded sources with their meta (created / updated
        # times): once a view has been materialized (its equality then fails) every view "differs
        # (batch_source)". Only properties that differ without those times count.
        props = [p.property_name for p in d.feast_object_property_diffs if _comparable(p.val_existing) != _comparable(p.val_declared)]
        if props:
            out.append(f"{kind} {d.name!r} differs ({', '.join(props)})")
    return sorted(out)


def _comparable(value):
    """A protobuf property value without data-source ``meta`` (times), in a comparable form."""
    from google.protobuf.message import Message

    if isinstance(value, Message):
        copy = type(value)()
        copy.CopyFrom(value)
        _drop_source_meta(copy)
        return copy.SerializeToString(deterministic=True)
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return value
    if hasattr(value, "items"):  # a protobuf map
        return sorted((k, _comparable(v)) for k, v in value.items())
    return [_comparable(v) for v in value]  # a repeated field


def _drop_source_meta(message) -> None:
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.name == "meta" and field.message_type.full_name == "feast.core.DataSource.SourceMeta":
            message.ClearField("meta")
        elif field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    _drop_source_meta(item)
        elif field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED:
            for item in value:
                _drop_source_meta(item)
        else:
            _drop_source_meta(value)


@dataclasses.dataclass(frozen=True)
class RegistryCheck:
    """A registry found to hold a repo's definitions: their digest, and the registry's stamp then."""

    location: RegistryLocation
    digest: DefinitionsDigest
    stamp: str | None

    @property
    def token(self) -> str:
        """What a cache of anything read from the registry can be keyed by."""
        return f"{self.location.key}:{self.digest.digest}:{self.stamp or '-'}"


def current_state(feature_repo: Path) -> RegistryCheck:
    """The definitions digest and registry stamp now, unchecked (stats only, no Feast).

    Raises:
        RegistryNotApplied: The registry is a local file that does not exist.
    """
    repo = Path(feature_repo).resolve()
    location = registry_location(repo)
    try:
        stamp = registry_stamp(location)
    except FileNotFoundError:
        raise RegistryNotApplied(
            f"Feast registry {location.display} does not exist: run `feast -c {repo} apply` (or `retrain apply`) first"
        ) from None
    return RegistryCheck(location, definitions_digest(repo), stamp)


def check_registry_current(feature_repo: Path) -> RegistryCheck:
    """Raise ``SpecError`` unless the registry holds the repo's definitions.

    Cheap when the record beside the registry names the same digest and registry stamp (stats
    and a small JSON read); otherwise compares by content (:func:`registry_differences`) and
    records the result when they agree.

    Raises:
        RegistryNotApplied: No registry file, or no project of the repo in the registry.
        SpecError: The registry differs from the code: names the files changed since the last
            apply (when recorded) and the objects that differ.
    """
    repo = Path(feature_repo).resolve()
    state = current_state(repo)
    location, digest = state.location, state.digest
    record = read_record(location)
    if record is not None and record.get("digest") == digest.digest and record.get("registry_stamp") == state.stamp:
        return state
    differences = registry_differences(repo)
    if differences is None:
        raise RegistryNotApplied(
            f"Feast registry {location.display} holds no definitions of {repo}: "
            f"run `feast -c {repo} apply` (or `retrain apply`) first"
        )
    if differences:
        raise SpecError(_out_of_date(location, repo, digest, record, differences))
    write_record(location, digest, "content", state.stamp)
    return state


def _out_of_date(location: RegistryLocation, repo: Path, digest: DefinitionsDigest, record, differences) -> str:
    parts = []
    if record is not None:
        old = record.get("files") or {}
        changed = sorted(n for n in set(old) | set(digest.files) if old.get(n) != digest.files.get(n))
        if changed:
            parts.append(f"{changed} changed after the last apply")
        if record.get("repo") not in (None, digest.repo):
            parts.append(f"it was applied from {record['repo']}")
    parts.append("the registry differs from the repo's definitions: " + "; ".join(differences))
    return f"Feast registry {location.display} is out of date: {', '.join(parts)}; run `feast -c {repo} apply` (or `retrain apply`)"
