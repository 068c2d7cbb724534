"""What a Feast feature service means for retraining, as plain data.

Retrieval goes through Feast; change detection and the independent ASOF check need the same
definitions (sources, timestamp fields, join keys, TTLs, feature columns) without paying
``import feast`` (8-18 s here) on every sensor tick. :func:`load_feature_service_view` resolves the
feature service once through the Feast registry and caches the result as JSON next to the state,
keyed by the registry's URL and the digest of the repo's definitions (their content, not file
times: :mod:`retrain_plugins.feast_registry`), so an edited and re-applied repo is picked up on the
next call, and a touched but identical one costs nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from retrain_plugins.errors import SpecError
from retrain_plugins.feast_registry_diff import check_registry_current, current_state
from retrain_plugins.feast_store import feature_store, registry_lock, resolve_source_path

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
    s3_endpoint_override: str | None = None  # the FileSource's own S3 endpoint (checked, see validation.py)

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
            view.pop("s3_endpoint_override")  # where the files live, like source_path
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
                s3_endpoint_override=getattr(source, "s3_endpoint_override", None) or None,
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


_VIEW_FORMAT = 4  # of the cached view: a cache written by an older release is re-read from the registry


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
    """The view from the retraining's cache when neither the definitions nor the registry changed.

    The cache's stamp holds the registry's identity, the definitions digest and (for a local
    registry file) the file's stamp: a hit means the registry was found to hold exactly these
    definitions when the view was read, so it costs a few ``stat`` calls and no Feast. A miss
    checks the registry (:func:`retrain_plugins.feast_registry_diff.check_registry_current`: an edited,
    unapplied repo is a ``SpecError`` naming what changed) and reads the view through Feast.
    """
    state = current_state(spec.feature_repo)  # raises when a registry file does not exist
    cache = Path(spec.data_dir) / "state" / spec.name / "feature_service_view.json"
    if cache.exists():
        try:
            cached = json.loads(cache.read_text())
        except ValueError:  # a torn or foreign file: read the view again
            cached = {}
        if cached.get("stamp") == f"{_VIEW_FORMAT}:{state.token}:{spec.feature_service}":
            return FeatureServiceView.from_json(cached["view"])
    with registry_lock(spec, shared=True):  # no materialize rewrites the registry in between
        checked = check_registry_current(spec.feature_repo)
        view = describe_feature_service(feature_store(str(spec.feature_repo)), spec.feature_service)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    stamp = f"{_VIEW_FORMAT}:{checked.token}:{spec.feature_service}"
    tmp.write_text(json.dumps({"stamp": stamp, "registry": checked.location.display, "view": view.to_json()}, indent=2))
    tmp.replace(cache)
    return view
