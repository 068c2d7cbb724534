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

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from retrain_plugins.changes.state import StateStore
from retrain_plugins.errors import RoutingError
from retrain_plugins.feast_view import FeatureServiceView, quiet_feast, registry_lock
from retrain_plugins.partitions import windows
from retrain_plugins.sources import LABELS, inspect_file, listing, sources
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.sql import connect, ident, parquet, query

if TYPE_CHECKING:
    from feast import FeatureStore

ONLINE_DEFINITION = "online_feature_service"  # state meta: the feature service version last loaded


def materialize_online(
    spec: RetrainingSpec, view: FeatureServiceView, store: "FeatureStore", state: StateStore
) -> dict[str, Any]:
    """Load the newest feature values of the feature service's views into the online store.

    The online store holds each entity's newest row. If every feature file that differs from the
    last load is a new one, loading ``[earliest row of the new files, end)`` is exact: an entity
    with a row in that range gets its newest row (all later rows are in the range too), and no
    other entity has a new row. A changed or deleted file (an edit can move an entity's newest row
    back in time), a changed feature service, a missing SQLite online store, or no record of a
    previous load: the whole time range. Nothing changed: nothing to load.
    """
    all_windows = windows(spec)
    longest = max((v.ttl_seconds or 0.0) for v in view.views)
    full_start = all_windows[0].start - timedelta(seconds=longest)
    end = all_windows[-1].end
    feature_sources = {name: source for name, source in sources(spec, view).items() if name != LABELS}
    with registry_lock(spec):
        current = {
            (name, path): stamp for name, source in feature_sources.items() for path, stamp in listing(source.pattern).items()
        }
        loaded = state.online_files()
        added = sorted(k for k in current if k not in loaded)
        incremental = (
            bool(loaded)
            and all(current.get(k) == stamp for k, stamp in loaded.items())
            and state.get_meta(ONLINE_DEFINITION) == view.version
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
            with quiet_feast():
                store.materialize(start_date=start, end_date=end, feature_views=names)
        state.save_online_files(current)
        state.set_meta(ONLINE_DEFINITION, view.version)
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


def latest_cohorts(spec: RetrainingSpec, entity_ids: Sequence[Any]) -> dict[Any, str]:
    """Each entity's cohort from its newest label row."""
    lab = spec.labels
    frame = query(
        connect(),
        f"SELECT {ident(lab.entity_column)} AS e, arg_max(CAST({ident(lab.cohort_column)} AS VARCHAR), "
        f"{ident(lab.timestamp_column)}) AS c FROM {parquet('labels')} "
        f"WHERE list_contains($ids, {ident(lab.entity_column)}) GROUP BY 1",
        {"labels": spec.label_glob, "ids": list(entity_ids)},
    )
    return dict(frame.iter_rows())


def online_frame(
    spec: RetrainingSpec, store: "FeatureStore", entity_ids: Sequence[Any], cohorts: dict[Any, str] | None = None
) -> pl.DataFrame:
    """Online features of ``entity_ids`` plus their cohort column."""
    service = store.get_feature_service(spec.feature_service)
    entity = spec.labels.entity_column
    with registry_lock(spec, shared=True):
        response = store.get_online_features(features=service, entity_rows=[{entity: e} for e in entity_ids])
    frame = pl.DataFrame(response.to_dict())
    cohorts = cohorts if cohorts is not None else latest_cohorts(spec, entity_ids)
    unknown = [e for e in entity_ids if e not in cohorts]
    if unknown:
        raise RoutingError(f"no cohort known for entities {unknown[:10]} (no label rows): pass cohorts explicitly")
    return frame.with_columns(
        pl.col(entity).replace_strict(cohorts, return_dtype=pl.String).alias(spec.labels.cohort_column)
    )
