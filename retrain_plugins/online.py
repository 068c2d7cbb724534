"""Online serving: Feast's SQLite online store, filled from the offline sources, read per entity.

``materialize_online`` loads the newest feature values into the online store: from the earliest
row of the feature files added since its last load when that is all that changed (an appended
month, a late file), else over the whole time range. Feast's ``materialize`` rewrites the registry
file, so calls are serialized with an exclusive file lock next to the registry: two runs never
write it at once, whichever process they run in.
``online_frame`` reads the features of some entities and attaches each one's cohort (its newest
label row's), ready for :class:`~retrain_plugins.routing.RoutedModel`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from retrain_plugins.errors import RoutingError
from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.feast_store import feast_calls, registry_lock
from retrain_plugins.partitions import windows
from retrain_plugins.sources import LABELS, inspect_file, listing, sources
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.sql import connect, ident, parquet, query, utc

if TYPE_CHECKING:
    from feast import FeatureStore

LOADED = "loaded.json"  # what the last load read: feature files and the feature service version


def _loaded(spec: RetrainingSpec) -> tuple[dict[tuple[str, str], Any], str | None]:
    """The files (source, path) -> stamp and the feature service version of the last load.

    The runs that load the online store own this record; it lives on the retraining's storage
    (``<storage>/online/<name>/loaded.json``), not in the change sensor's state.
    """
    from retrain_plugins.layout import storage

    try:
        record = json.loads(storage(spec).child(f"online/{spec.name}").read_bytes(LOADED))
    except (FileNotFoundError, ValueError):
        return {}, None
    return {(name, path): _stamp(stamp) for name, path, stamp in record["files"]}, record.get("feature_service_version")


def _stamp(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _save_loaded(spec: RetrainingSpec, files: Mapping[tuple[str, str], Any], version: str) -> None:
    from retrain_plugins.layout import storage

    record = {"files": [[name, path, stamp] for (name, path), stamp in sorted(files.items())], "feature_service_version": version}
    storage(spec).child(f"online/{spec.name}").write_bytes(LOADED, json.dumps(record, indent=1).encode())


def materialize_online(spec: RetrainingSpec, view: FeatureServiceView, store: "FeatureStore") -> dict[str, Any]:
    """Load the newest feature values of the feature service's views into the online store.

    The online store holds each entity's newest row. If every feature file that differs from the
    last load is a new one, loading ``[earliest row of the new files, end)`` is exact: an entity
    with a row in that range gets its newest row (all later rows are in the range too), and no
    other entity has a new row. A changed or deleted file (an edit can move an entity's newest row
    back in time), a changed feature service, a missing SQLite online store, or no record of a
    previous load: the whole time range. Nothing changed: nothing to load.

    Feature sources on an object store (``s3://...``) are refused with a :class:`SpecError`:
    Feast's materialize cannot read them offline (:func:`retrain_plugins.validation.check_feast_can_read`).
    """
    from retrain_plugins.validation import check_feast_can_read

    check_feast_can_read(
        view,
        "online_features (Feast's materialize into the online store)",
        "Keep the feature sources the online store is loaded from on a local or mounted path, or run "
        "`feast materialize` where DuckDB's httpfs extension is installed; training (`retrieval: "
        "duckdb_asof`) and the change sensor read object stores without it, and the sensor leaves "
        "online_features out of its runs for such sources.",
    )
    all_windows = windows(spec)
    longest = max((v.ttl_seconds or 0.0) for v in view.views)
    full_start = all_windows[0].start - timedelta(seconds=longest)
    end = all_windows[-1].end
    feature_sources = {name: source for name, source in sources(spec, view).items() if name != LABELS}
    with registry_lock(spec):
        current = {
            (name, path): stamp for name, source in feature_sources.items() for path, stamp in listing(source.pattern).items()
        }
        current = {k: _stamp(json.loads(json.dumps(v))) for k, v in current.items()}  # as the record stores them
        loaded, loaded_version = _loaded(spec)
        added = sorted(k for k in current if k not in loaded)
        incremental = (
            bool(loaded)
            and all(current.get(k) == stamp for k, stamp in loaded.items())
            and loaded_version == view.version
            and _online_store_exists(store)
        )
        names = [v.name for v in view.views]
        if not incremental:
            mode, start = "full", full_start
        else:
            firsts: dict[str, int] = {}  # view -> earliest row (us) of its added files
            for name, path in added:
                lo = inspect_file(path, feature_sources[name])[0]
                if lo is not None:
                    firsts[name] = min(lo, firsts.get(name, lo))
            names = [n for n in names if n in firsts]  # views with nothing added keep their values
            start = max(full_start, datetime.fromtimestamp(min(firsts.values()) / 1e6, tz=timezone.utc)) if firsts else None
            mode = "added files" if start is not None and start < end else "up to date"
        if mode != "up to date":
            with feast_calls(spec):
                store.materialize(start_date=start, end_date=end, feature_views=names)
        _save_loaded(spec, current, view.version)
    return {
        "mode": mode,
        "start": start.isoformat() if mode != "up to date" else None,
        "end": end.isoformat(),
        "files_added": len(added) if incremental else None,
        "feature_views": names if mode != "up to date" else [],
    }


def _online_store_exists(store: "FeatureStore") -> bool:
    """False only when the online store is Feast's SQLite one and its file is gone."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    if getattr(store.config.online_store, "type", "") != "sqlite":
        return True
    # Feast's own resolution of the file (relative paths against the repo), so both agree.
    return Path(SqliteOnlineStore._get_db_path(store.config)).exists()


def latest_cohorts(spec: RetrainingSpec, entities: Sequence[Mapping[str, Any]]) -> dict[tuple, str]:
    """Each entity's cohort: the cohort column itself when it is a join key, else its newest label row's.

    Args:
        entities: One mapping per entity, join key -> value (as Feast names the keys).

    Returns:
        entity key tuple (values in ``labels.entity_columns`` order) -> cohort, for the entities
        whose cohort is known.
    """
    lab = spec.labels
    keys = list(lab.keys)
    wanted = [tuple(e[k] for k in keys) for e in entities]
    if lab.cohort_column in lab.key_columns:
        key = next(k for k, c in lab.keys.items() if c == lab.cohort_column)
        return {w: str(dict(zip(keys, w))[key]) for w in wanted}
    if not wanted:
        return {}
    con = connect(spec.label_glob)
    con.register("wanted_tbl", pl.DataFrame([dict(zip(lab.key_columns, w)) for w in wanted]))
    on = " AND ".join(f"l.{ident(lab.keys[k])} = w.{ident(lab.keys[k])}" for k in keys)
    select = ", ".join(f"w.{ident(lab.keys[k])}" for k in keys)
    frame = query(
        con,
        f"SELECT {select}, arg_max(CAST(l.{ident(lab.cohort_column)} AS VARCHAR), {utc('l.' + ident(lab.timestamp_column))}) AS _c "
        f"FROM {parquet('labels')} AS l JOIN wanted_tbl AS w ON {on} GROUP BY ALL",
        {"labels": spec.label_glob},
    )
    return {row[:-1]: row[-1] for row in frame.iter_rows()}


def online_frame(
    spec: RetrainingSpec,
    store: "FeatureStore",
    entities: Sequence[Mapping[str, Any] | Any],
    cohorts: Sequence[str | None] | None = None,
) -> pl.DataFrame:
    """Online features of ``entities`` plus the label-row columns a routed model needs.

    Args:
        entities: One mapping per entity (or, for a single join key, plain ids): every join key of
            the feature service (as Feast names it) and, when the model uses label-row features (``labels.feature_columns``), their
            request-time values under the label column names.
        cohorts: Per entity, its cohort, or None to derive it (from the key when the cohort column
            is a join key, else from the entity's newest label row).

    Raises:
        RoutingError: An entity lacks a join key or a request-time feature, or has no known cohort.
    """
    lab = spec.labels
    keys = list(lab.keys)
    if len(keys) == 1:  # plain ids for a single join key
        entities = [e if isinstance(e, Mapping) else {keys[0]: e} for e in entities]
    context = [c for c in lab.feature_columns if c not in lab.key_columns]
    for entity in entities:
        missing = [k for k in (*keys, *context) if k not in entity]
        if missing:
            raise RoutingError(f"entity {dict(entity)} lacks {missing} (join keys {keys}, request-time columns {context})")
    service = store.get_feature_service(spec.feature_service)
    with registry_lock(spec, shared=True), feast_calls(spec):
        response = store.get_online_features(features=service, entity_rows=[{k: e[k] for k in keys} for e in entities])
    features = pl.DataFrame(response.to_dict()).drop(keys, strict=False)
    known = latest_cohorts(spec, [e for e, c in zip(entities, cohorts or [None] * len(entities)) if c is None])
    resolved, unknown = [], []
    for i, entity in enumerate(entities):
        given = cohorts[i] if cohorts is not None else None
        cohort = given if given is not None else known.get(tuple(entity[k] for k in keys))
        if cohort is None:
            unknown.append(entity[keys[0]] if len(keys) == 1 else dict(entity))
        resolved.append(cohort)
    if unknown:
        raise RoutingError(f"no cohort known for entities {unknown[:10]} (no label rows): pass cohorts explicitly")
    label_side = {lab.keys[k]: [e[k] for e in entities] for k in keys}
    label_side |= {c: [e[c] for e in entities] for c in context}
    label_side[lab.cohort_column] = resolved
    return pl.DataFrame(label_side).with_columns(pl.col(lab.cohort_column).cast(pl.String)).hstack(features)
