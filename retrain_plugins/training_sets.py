"""One partition's training set: label rows -> Feast point-in-time join -> frame.

The label rows of cohort ``c`` in windows ``w-L+1 .. w`` (:mod:`retrain_plugins.labels`, in their
total order) form the entity frame; Feast's ``get_historical_features`` joins the feature
service's features as of each label time, each feature view on its own join keys
(``labels.entity_columns`` names the label column holding each key). The same inputs always give
the same frame, the same parquet bytes and the same model.

:func:`asof_training_set` (:mod:`retrain_plugins.asof_join`) computes the same frame independently
with DuckDB ``ASOF JOIN`` from the Feast definitions: the ``duckdb_asof`` retrieval path.
:func:`partition_training_set` takes the path the spec chooses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl

from retrain_plugins.asof_join import asof_training_set
from retrain_plugins.errors import DataError, SpecError
from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.feast_store import feast_calls, feature_store, registry_lock
from retrain_plugins.labels import ROW_ID, WINDOW_COL, blank_cohort_rows, label_rows
from retrain_plugins.partitions import Window
from retrain_plugins.spec import RetrainingSpec

if TYPE_CHECKING:
    from feast import FeatureStore

# Where the label rows and the ASOF path lived before: still importable from here.
__all__ = [
    "ROW_ID", "WINDOW_COL", "asof_training_set", "blank_cohort_rows", "feast_training_set", "label_rows",
    "partition_training_set",
]


def feast_training_set(
    spec: RetrainingSpec,
    view: FeatureServiceView,
    windows: Sequence[Window],
    cohort: str,
    store: "FeatureStore | None" = None,
) -> pl.DataFrame:
    """The training set of ``cohort`` over ``windows``, joined point-in-time by Feast."""
    labels = label_rows(spec, windows, [cohort])
    features = view.feature_columns
    columns = [ROW_ID, *labels.columns[1:], *features]
    if labels.height == 0:
        return pl.DataFrame(schema={**labels.schema, **{f: pl.Float64 for f in features}}).select(columns)
    store = store or feature_store(str(spec.feature_repo))
    # Feast sees only the row id, the time and the join keys, named as Feast names them.
    keys = spec.labels.keys
    entity_df = labels.select(
        ROW_ID,
        pl.col(spec.labels.timestamp_column).alias("event_timestamp"),
        *(pl.col(column).alias(key) for key, column in keys.items()),
    ).to_pandas()
    try:
        service = store.get_feature_service(spec.feature_service)
    except Exception as exc:
        raise SpecError(f"feature service {spec.feature_service!r} not found in {spec.feature_repo}: {exc}") from exc
    # shared registry lock: never while a materialize rewrites the registry (online.materialize_online)
    with registry_lock(spec, shared=True), feast_calls(spec):
        job = store.get_historical_features(entity_df=entity_df, features=service)
        joined = pl.from_arrow(job.to_arrow()).select(ROW_ID, *features)
    if joined.height != labels.height:
        raise DataError(f"Feast returned {joined.height} rows for {labels.height} label rows of {cohort!r}")
    return labels.join(joined, on=ROW_ID, how="left").select(columns).sort(ROW_ID)


def partition_training_set(
    spec: RetrainingSpec,
    view: FeatureServiceView,
    windows: Sequence[Window],
    cohort: str,
    store: "FeatureStore | None" = None,
) -> pl.DataFrame:
    """One partition's training set by the spec's ``retrieval`` path: what the asset writes.

    ``feast``: :func:`feast_training_set`. ``duckdb_asof``: :func:`asof_training_set` for the one
    cohort, in exactly the shape Feast's path returns (columns, order, row ids); tests prove the two
    frames equal. The ASOF path never imports Feast. ``store`` is only used by the Feast path.
    """
    if spec.retrieval == "feast":
        return feast_training_set(spec, view, windows, cohort, store)
    frame = asof_training_set(spec, view, windows, [cohort])
    return frame.select(ROW_ID, *spec.labels.columns, WINDOW_COL, *view.feature_columns).sort(ROW_ID)
