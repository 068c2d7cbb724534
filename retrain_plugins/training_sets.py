"""One partition's training set: label rows -> Feast point-in-time join -> frame.

The label rows of cohort ``c`` in windows ``w-L+1 .. w`` form the entity frame; Feast's
``get_historical_features`` joins the feature service's features as of each label time. Rows are
carried with a ``row_id`` (Feast does not keep row order) and the result is sorted by
(label time, entity), so the same data always yields the same frame and the same model.

:func:`asof_training_set` computes the same frame independently with DuckDB ``ASOF JOIN`` from the
Feast definitions (TTL, timestamp field, join key). It is the reference the Feast path is tested
against, and the basis of the content fingerprints the change sensor compares.
"""

from __future__ import annotations

import glob
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl

from retrain_plugins.errors import DataError, SpecError
from retrain_plugins.feast_view import FeatureServiceView, feature_store, quiet_feast, registry_lock
from retrain_plugins.partitions import Window
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.sql import connect, ident, parquet, query

if TYPE_CHECKING:
    from feast import FeatureStore

ROW_ID = "row_id"
WINDOW_COL = "window"


def check_label_source(spec: RetrainingSpec, view: FeatureServiceView | None = None) -> None:
    """Fail with a message naming the column if the label source does not fit the spec."""
    con = connect()
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {parquet('p')}", {"p": spec.label_glob}).fetchall()
    except Exception as exc:  # duckdb raises IOException/InvalidInputException variants
        raise DataError(f"cannot read label source {spec.label_glob}: {exc}") from exc
    types = {name: dtype for name, dtype, *_ in described}
    labels = spec.labels
    for role, column in (
        ("entity_column", labels.entity_column),
        ("timestamp_column", labels.timestamp_column),
        ("label_column", labels.label_column),
        ("cohort_column", labels.cohort_column),
    ):
        if column not in types:
            raise SpecError(
                f"labels.{role} {column!r} is not a column of the label source {spec.label_glob}; "
                f"columns are {sorted(types)}"
            )
    if not types[labels.timestamp_column].startswith("TIMESTAMP"):
        raise DataError(
            f"label column {labels.timestamp_column!r} in {spec.label_glob} has type "
            f"{types[labels.timestamp_column]}, expected a timestamp"
        )
    if view is not None:
        for fv in view.views:
            if fv.join_keys != (labels.entity_column,):
                raise SpecError(
                    f"feature view {fv.name!r} joins on {list(fv.join_keys)} but labels.entity_column "
                    f"is {labels.entity_column!r}"
                )


def _files(pattern: str, exclude: frozenset[str]) -> str | list[str]:
    """The glob itself, or its files minus ``exclude`` (unreadable files the caller skips)."""
    if not exclude:
        return pattern
    return sorted(set(glob.glob(pattern)) - exclude)


def label_rows(
    spec: RetrainingSpec,
    windows: Sequence[Window],
    cohorts: Sequence[str] | None,
    exclude: frozenset[str] = frozenset(),
    *,
    only: Mapping[str, Collection[str] | None] | None = None,
) -> pl.DataFrame:
    """Label rows in ``windows`` (and ``cohorts``; all if None), with their window key and a row id.

    ``only`` narrows further per window: window key -> the cohorts kept there (None: all of them).
    """
    lab = spec.labels
    con = connect()
    con.register("windows_tbl", _windows_frame(windows, only))
    cohort = f"CAST(l.{ident(lab.cohort_column)} AS VARCHAR)"
    cohort_filter = "" if cohorts is None else f"AND list_contains($cohorts, {cohort})"
    if only is not None:
        cohort_filter += f" AND (w.cohorts IS NULL OR list_contains(w.cohorts, {cohort}))"
    sql = f"""
        SELECT l.{ident(lab.entity_column)} AS {ident(lab.entity_column)},
               l.{ident(lab.timestamp_column)} AS {ident(lab.timestamp_column)},
               CAST(l.{ident(lab.cohort_column)} AS VARCHAR) AS {ident(lab.cohort_column)},
               l.{ident(lab.label_column)} AS {ident(lab.label_column)},
               w.key AS {ident(WINDOW_COL)}
        FROM {parquet('labels')} AS l
        JOIN windows_tbl AS w
          ON l.{ident(lab.timestamp_column)} >= w.start AND l.{ident(lab.timestamp_column)} < w."end"
        WHERE TRUE {cohort_filter}
        ORDER BY 2, 1
    """
    params: dict = {"labels": _files(spec.label_glob, exclude)}
    if cohorts is not None:
        params["cohorts"] = list(cohorts)
    frame = query(con, sql, params)
    return frame.with_row_index(ROW_ID).with_columns(pl.col(ROW_ID).cast(pl.Int64))


def feast_training_set(
    spec: RetrainingSpec,
    view: FeatureServiceView,
    windows: Sequence[Window],
    cohort: str,
    store: "FeatureStore | None" = None,
) -> pl.DataFrame:
    """The training set of ``cohort`` over ``windows``, joined point-in-time by Feast."""
    labels = label_rows(spec, windows, [cohort])
    columns = [ROW_ID, *labels.columns[1:], *view.feature_columns]
    if labels.height == 0:
        return pl.DataFrame(schema={**labels.schema, **{f: pl.Float64 for f in view.feature_columns}}).select(columns)
    store = store or feature_store(str(spec.feature_repo))
    ts = spec.labels.timestamp_column
    entity_df = labels.rename({ts: "event_timestamp"}).to_pandas()
    try:
        service = store.get_feature_service(spec.feature_service)
    except Exception as exc:
        raise SpecError(f"feature service {spec.feature_service!r} not found in {spec.feature_repo}: {exc}") from exc
    # shared registry lock: never while a materialize rewrites the registry (online.materialize_online)
    with registry_lock(spec, shared=True), quiet_feast():
        job = store.get_historical_features(entity_df=entity_df, features=service)
        frame = pl.from_arrow(job.to_arrow()).rename({"event_timestamp": ts})
    if frame.height != labels.height:
        raise DataError(f"Feast returned {frame.height} rows for {labels.height} label rows of {cohort!r}")
    return frame.select(columns).sort(ROW_ID)


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
    lab = spec.labels
    label_columns = [lab.entity_column, lab.timestamp_column, lab.cohort_column, lab.label_column, WINDOW_COL]
    frame = asof_training_set(spec, view, windows, [cohort])
    return frame.select(ROW_ID, *label_columns, *view.feature_columns).sort(ROW_ID)


def asof_training_set(
    spec: RetrainingSpec,
    view: FeatureServiceView,
    windows: Sequence[Window],
    cohorts: Sequence[str] | None,
    exclude: frozenset[str] = frozenset(),
    *,
    only: Mapping[str, Collection[str] | None] | None = None,
) -> pl.DataFrame:
    """The same join as Feast's, computed independently with DuckDB ``ASOF LEFT JOIN``.

    Feast's rule: the latest feature row with ``ts <= label time`` and ``ts + ttl >= label time``.
    ASOF picks the latest row at or before the label time; a row older than the TTL is nulled.
    ``only`` keeps, per window key, just the given cohorts (None: all); see :func:`label_rows`.
    """
    con = connect()
    lab = spec.labels
    if only is not None:
        windows = [w for w in windows if w.key in only]
    con.register("labels_tbl", label_rows(spec, windows, cohorts, exclude, only=only))
    ts, key = ident(lab.timestamp_column), ident(lab.entity_column)
    selects, joins, params = [], [], {}
    for i, fv in enumerate(view.views):
        alias, fts, join_key = f"f{i}", ident(fv.timestamp_field), ident(fv.join_keys[0])
        params[f"src{i}"] = _files(fv.source_path, exclude)
        cols = ", ".join(ident(f) for f in fv.features)
        # Pushed down: only rows a label of these windows can join, i.e. with timestamps in
        # [start - TTL, end) of its window, of that window's label entities. Scattered windows (a
        # tick after edits in January and December) are scanned range by range (UNION ALL), each
        # with the entities of its own windows: their hull would feed every row of the year in
        # between, and every entity, into the ASOF join's sort.
        scans = []
        for j, (lo, hi, keys) in enumerate(_time_ranges(windows, fv.ttl_seconds)):
            params[f"w{i}_{j}"], params[f"hi{i}_{j}"] = keys, hi
            filters = [
                f"{join_key} IN (SELECT {key} FROM labels_tbl WHERE list_contains($w{i}_{j}, {ident(WINDOW_COL)}))",
                f"{fts} < CAST($hi{i}_{j} AS TIMESTAMPTZ)",
            ]
            if lo is not None:
                params[f"lo{i}_{j}"] = lo
                filters.append(f"{fts} >= CAST($lo{i}_{j} AS TIMESTAMPTZ)")
            scans.append(
                f"SELECT {join_key} AS _k, {fts} AS _ts, {cols} FROM {parquet(f'src{i}')} WHERE {' AND '.join(filters)}"
            )
        if not scans:  # no windows, no labels: an empty side with the right columns
            scans.append(f"SELECT {join_key} AS _k, {fts} AS _ts, {cols} FROM {parquet(f'src{i}')} WHERE FALSE")
        joins.append(
            f"ASOF LEFT JOIN ({' UNION ALL '.join(scans)}) AS {alias} ON l.{key} = {alias}._k AND l.{ts} >= {alias}._ts"
        )
        for f in fv.features:
            if fv.ttl_seconds:
                keep = f"{alias}._ts + to_seconds(CAST({fv.ttl_seconds} AS DOUBLE)) >= l.{ts}"
                selects.append(f"CASE WHEN {keep} THEN {alias}.{ident(f)} END AS {ident(f)}")
            else:
                selects.append(f"{alias}.{ident(f)} AS {ident(f)}")
    sql = f"SELECT l.*, {', '.join(selects)} FROM labels_tbl AS l {' '.join(joins)} ORDER BY l.{ROW_ID}"
    return query(con, sql, params)


def _time_ranges(
    windows: Sequence[Window], ttl_seconds: float | None
) -> list[tuple[datetime | None, datetime, list[str]]]:
    """Feature-row time ranges labels in ``windows`` can join, with the windows of each range.

    ``[start - ttl, end)`` per window, overlapping ones merged. Without a TTL every earlier row can
    join: one range, open at the start.
    """
    if not windows:
        return []
    if not ttl_seconds:
        return [(None, max(w.end for w in windows), [w.key for w in windows])]
    ttl = timedelta(seconds=ttl_seconds)
    merged: list[tuple[datetime | None, datetime, list[str]]] = []
    for w in sorted(windows, key=lambda w: w.start):
        lo = w.start - ttl
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(w.end, merged[-1][1]), [*merged[-1][2], w.key])
        else:
            merged.append((lo, w.end, [w.key]))
    return merged


def _windows_frame(windows: Sequence[Window], only: Mapping[str, Collection[str] | None] | None = None) -> pl.DataFrame:
    """The windows as a table; with ``only``, each window's kept cohorts (null: all; absent: none)."""
    if only is not None:
        windows = [w for w in windows if w.key in only]
    cohorts = [None if only is None or only[w.key] is None else sorted(only[w.key]) for w in windows]
    return pl.DataFrame(
        {
            "key": [w.key for w in windows],
            "start": [w.start for w in windows],
            "end": [w.end for w in windows],
            "cohorts": cohorts,
        },
        schema={"key": pl.String, "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC"), "cohorts": pl.List(pl.String)},
    )
