"""Online serving: Feast's SQLite online store, filled from the offline sources, read per entity.

``materialize_online`` loads the newest feature values into the online store. Feast's
``materialize`` rewrites the registry file, so calls are serialized with an exclusive file lock
next to the registry: two runs never write it at once, whichever process they run in.
``online_frame`` reads the features of some entities and attaches each one's cohort (its newest
label row's), ready for :class:`~retrain_plugins.routing.RoutedModel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from retrain_plugins.errors import RoutingError
from retrain_plugins.feast_view import FeatureServiceView, quiet_feast, registry_lock
from retrain_plugins.partitions import windows
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.sql import connect, ident, parquet, query

if TYPE_CHECKING:
    from feast import FeatureStore


def materialize_online(spec: RetrainingSpec, view: FeatureServiceView, store: "FeatureStore") -> dict[str, Any]:
    """Materialize the feature service's views over the spec's whole time range."""
    all_windows = windows(spec)
    longest = max((v.ttl_seconds or 0.0) for v in view.views)
    start = all_windows[0].start - timedelta(seconds=longest)
    end = all_windows[-1].end
    with registry_lock(spec), quiet_feast():
        store.materialize(start_date=start, end_date=end, feature_views=[v.name for v in view.views])
    return {"start": start.isoformat(), "end": end.isoformat(), "feature_views": [v.name for v in view.views]}


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
