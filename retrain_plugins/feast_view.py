"""What a Feast feature service means for retraining, as plain data.

Retrieval goes through Feast; change detection and the independent ASOF check need the same
definitions (sources, timestamp fields, join keys, TTLs, feature columns) without paying
``import feast`` (8-18 s here) on every sensor tick. :func:`load_feature_service_view` resolves the
feature service once through the Feast registry and caches the result as JSON next to the state,
keyed by the registry file's size and mtime, so a re-applied repo is picked up on the next call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from retrain_plugins.errors import SpecError

if TYPE_CHECKING:  # feast is slow to import: only where a store is really built
    from feast import FeatureStore

    from retrain_plugins.spec import RetrainingSpec


@dataclasses.dataclass(frozen=True)
class FeatureViewInfo:
    """One feature view of a feature service, reduced to what a point-in-time join needs."""

    name: str
    source_path: str  # absolute: a relative FileSource path is resolved against the repo, as Feast does
    timestamp_field: str
    join_keys: tuple[str, ...]  # the columns of the source holding the keys
    ttl_seconds: float | None
    features: tuple[str, ...]
    created_timestamp_field: str | None = None  # Feast's tie-break between rows of one key and time
    feature_types: tuple[str, ...] = ()  # Feast type names of ``features`` ("Float64", "String", ...)
    entity_keys: tuple[str, ...] = ()  # the keys as the entity frame names them (a join key map may rename)

    @property
    def label_keys(self) -> tuple[str, ...]:
        """The entity-frame names of the join keys (``join_keys`` unless the service renames them)."""
        return self.entity_keys or self.join_keys


@dataclasses.dataclass(frozen=True)
class FeatureServiceView:
    """A feature service as plain data; ``version`` changes whenever its definition does."""

    service: str
    views: tuple[FeatureViewInfo, ...]

    @property
    def feature_columns(self) -> list[str]:
        return [f for view in self.views for f in view.features]

    @property
    def version(self) -> str:
        """Hash of what defines the features; where the source files live is not part of it.

        Fields added after the first release enter the hash only when set, so a repo that does not
        use them keeps its version (and its sub-models stay current across the upgrade).
        """
        payload = self.to_json()
        for view in payload["views"]:
            view.pop("source_path")
            view.pop("feature_types")
            for optional in ("created_timestamp_field", "entity_keys"):
                if not view[optional] or (optional == "entity_keys" and tuple(view[optional]) == tuple(view["join_keys"])):
                    view.pop(optional)
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> "FeatureServiceView":
        views = tuple(
            FeatureViewInfo(
                **{
                    **v,
                    **{f: tuple(v.get(f, ())) for f in ("join_keys", "features", "feature_types", "entity_keys")},
                }
            )
            for v in raw["views"]
        )
        return cls(service=raw["service"], views=views)


def registry_path(feature_repo: Path) -> Path:
    """The registry file named in ``feature_store.yaml`` (relative paths are repo-relative)."""
    config_file = Path(feature_repo) / "feature_store.yaml"
    try:
        st = config_file.stat()
    except FileNotFoundError:
        raise SpecError(f"feature_repo {feature_repo} has no feature_store.yaml") from None
    return _registry_path(config_file, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)  # keyed by the file's size and mtime: an edited yaml is re-read
def _registry_path(config_file: Path, size: int, mtime_ns: int) -> Path:
    feature_repo = config_file.parent
    config = yaml.safe_load(config_file.read_text())
    registry = config.get("registry")
    path = registry.get("path") if isinstance(registry, dict) else registry
    if not path:
        raise SpecError(f"{config_file} names no file registry")
    path = Path(path)
    return path if path.is_absolute() else (Path(feature_repo) / path).resolve()


@contextlib.contextmanager
def quiet_feast() -> Iterator[None]:
    """Silence a deprecation ibis (inside Feast's DuckDB offline store) triggers in DuckDB: not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="fetch_arrow_table", category=DeprecationWarning)
        yield


@functools.lru_cache(maxsize=8)
def feature_store(feature_repo: str) -> "FeatureStore":
    """One ``FeatureStore`` per repo and process (building it imports feast: seconds)."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(feature_repo))


def apply_feature_repo(feature_repo: Path, in_process: bool = False) -> None:
    """``feast apply`` the repo.

    By default this runs the ``feast`` CLI in a subprocess: Feast's own apply imports the repo's
    modules by name (``features``), changes the working directory and deletes objects no longer
    defined, none of which should happen inside a long-lived process. ``in_process=True`` instead
    loads each ``*.py`` of the repo under a unique module name and applies the Feast objects it
    defines through ``FeatureStore.apply`` (adds and updates only): a second or so instead of a new
    interpreter, for tests and tools that apply many short-lived repos.
    """
    if in_process:
        _apply_in_process(Path(feature_repo))
        return
    feast_cli = Path(sys.executable).with_name("feast")
    command = [str(feast_cli), "-c", str(feature_repo), "apply"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SpecError(f"feast apply failed for {feature_repo}:\n{done.stdout}\n{done.stderr}")
    feature_store.cache_clear()


def _apply_in_process(feature_repo: Path) -> None:
    import importlib.util

    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView
    from feast.data_source import DataSource

    objects: list = []
    for path in sorted(feature_repo.resolve().glob("*.py")):
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(f"_feast_repo_{digest}_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        for value in vars(module).values():
            if isinstance(value, (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService)) and not any(
                value is o for o in objects
            ):
                objects.append(value)
    feature_store.cache_clear()
    feature_store(str(feature_repo.resolve())).apply(objects)


def describe_feature_service(store: "FeatureStore", service_name: str) -> FeatureServiceView:
    """Resolve ``service_name`` in the registry into a :class:`FeatureServiceView`."""
    from feast.errors import FeatureServiceNotFoundException

    try:
        service = store.get_feature_service(service_name)
    except FeatureServiceNotFoundException:
        known = sorted(s.name for s in store.list_feature_services())
        raise SpecError(
            f"feature service {service_name!r} is not in the Feast registry of {store.repo_path}; "
            f"known services: {known or 'none (run feast apply?)'}"
        ) from None
    views = []
    for projection in service.feature_view_projections:
        view = _feature_view(store, service_name, projection.name)
        source = view.batch_source
        if type(source).__name__ != "FileSource":
            raise SpecError(
                f"feature view {view.name!r} of feature service {service_name!r} reads a "
                f"{type(source).__name__}; only FileSource (parquet) sources are supported"
            )
        join_keys = tuple(view.join_keys)
        key_map = dict(projection.join_key_map or {})
        by_name = {f.name: f for f in view.features}
        features = tuple(f.name for f in projection.features)
        views.append(
            FeatureViewInfo(
                name=view.name,
                source_path=resolve_source_path(store.repo_path, str(source.path)),
                timestamp_field=source.timestamp_field,
                join_keys=join_keys,
                ttl_seconds=view.ttl.total_seconds() if view.ttl else None,
                features=features,
                created_timestamp_field=source.created_timestamp_column or None,
                feature_types=tuple(str(by_name[f].dtype) for f in features),
                entity_keys=tuple(key_map.get(k, k) for k in join_keys),
            )
        )
    return FeatureServiceView(service=service_name, views=tuple(views))


def _feature_view(store: "FeatureStore", service_name: str, name: str):
    """The batch feature view ``name``; other kinds of view are refused by name and kind."""
    from feast.errors import FeatureViewNotFoundException

    try:
        return store.get_feature_view(name)
    except FeatureViewNotFoundException:
        kinds = {
            "on-demand feature view": store.list_on_demand_feature_views,
            "stream feature view": store.list_stream_feature_views,
        }
        kind = next((k for k, listing in kinds.items() if any(v.name == name for v in listing())), "a view not in the registry,")
        raise SpecError(
            f"feature service {service_name!r} uses {kind} {name!r}, which retraining does not support: "
            "change detection and the DuckDB ASOF path need each feature's source rows. Compute the "
            "feature in a batch feature view's source (or as a label column, labels.feature_columns)."
        ) from None


def resolve_source_path(repo_path: Path | str, path: str) -> str:
    """A FileSource path as Feast resolves it: remote URIs as they are, relative paths against the repo.

    (``FileSource.get_uri_for_file_path``; Feast's DuckDB store itself reads the raw path against the
    working directory, which :func:`feast_calls` works around.)
    """
    if "://" in path or Path(path).is_absolute():
        return path
    return str(Path(repo_path) / path)


_CWD_LOCK = threading.Lock()


@contextlib.contextmanager
def feast_calls(spec: RetrainingSpec) -> Iterator[None]:
    """Run Feast retrieval or materialization so relative FileSource paths mean the same as for us.

    Feast 0.67 resolves a relative ``FileSource`` path against the repo when it validates or
    describes a source, but its DuckDB offline store reads the raw path against the working
    directory, so a run started elsewhere finds no files. With a relative source in the repo, Feast
    is called from the repo folder (process-wide, so under a lock); otherwise nothing changes.
    """
    with quiet_feast():
        if not _has_relative_sources(spec.feature_repo):
            yield
            return
        with _CWD_LOCK:
            before = os.getcwd()
            os.chdir(spec.feature_repo)
            try:
                yield
            finally:
                os.chdir(before)


def _has_relative_sources(feature_repo: Path) -> bool:
    for view in feature_store(str(feature_repo)).list_feature_views():
        path = str(getattr(view.batch_source, "path", "") or "")
        if path and "://" not in path and not Path(path).is_absolute():
            return True
    return False


@contextlib.contextmanager
def registry_lock(spec: RetrainingSpec, shared: bool = False) -> Iterator[None]:
    """Lock of the Feast registry of ``spec``'s repo, across processes.

    Writers (``materialize``) take it exclusively; readers that Feast refuses to serve while a
    feature view is ``MATERIALIZING`` (historical retrieval, online reads) take it shared.
    """
    path = registry_path(spec.feature_repo).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_VIEW_FORMAT = 2  # of the cached view: a cache written by an older release is re-read from the registry


def load_feature_service_view(spec: "RetrainingSpec") -> FeatureServiceView:
    """The spec's feature service as plain data, from cache when the registry is unchanged.

    Every consumer (definitions, sensor ticks, runs, the CLI) gets the view through here, and it is
    checked against the spec each time (:func:`retrain_plugins.validation.check_spec_against_view`):
    no path starts a run on a spec whose joins do not match Feast's.
    """
    view = _load_view(spec)
    from retrain_plugins.validation import check_spec_against_view

    check_spec_against_view(spec, view)
    return view


def _load_view(spec: "RetrainingSpec") -> FeatureServiceView:
    registry = registry_path(spec.feature_repo)
    if not registry.exists():
        raise SpecError(
            f"Feast registry {registry} does not exist: run `feast -c {spec.feature_repo} apply` "
            "(or `retrain apply`) first"
        )
    stat = registry.stat()
    changed = [
        p.name
        for p in sorted(Path(spec.feature_repo).glob("*"))
        if p.suffix in (".py", ".yaml") and p.stat().st_mtime_ns > stat.st_mtime_ns
    ]
    if changed:
        raise SpecError(
            f"Feast registry {registry} is out of date: {changed} changed after the last apply; "
            f"run `feast -c {spec.feature_repo} apply` (or `retrain apply`)"
        )
    stamp = f"{_VIEW_FORMAT}:{stat.st_size}:{stat.st_mtime_ns}:{spec.feature_service}"
    cache = Path(spec.data_dir) / "state" / spec.name / "feature_service_view.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("stamp") == stamp:
            return FeatureServiceView.from_json(cached["view"])
    with registry_lock(spec, shared=True):
        view = describe_feature_service(feature_store(str(spec.feature_repo)), spec.feature_service)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"stamp": stamp, "view": view.to_json()}, indent=2))
    tmp.replace(cache)
    return view
