"""One partition's training set: label rows -> Feast point-in-time join -> frame.

The label rows of cohort ``c`` in windows ``w-L+1 .. w`` form the entity frame; Feast's
``get_historical_features`` joins the feature service's features as of each label time, each
feature view on its own join keys (``labels.entity_columns`` names the label column holding each
key). Rows carry a ``row_id`` (Feast does not keep row order) in a total order: label time, every
key column, cohort, label, then the label rows' feature columns. Rows equal in all of these are
equal in every column of the training set, so the same inputs always give the same frame, the
same parquet bytes and the same model, whatever order the files list their rows in.

Timestamps of any unit, naive (read as UTC) or zone-aware, are read as UTC microseconds.

:func:`asof_training_set` computes the same frame independently with DuckDB ``ASOF JOIN`` from the
Feast definitions (TTL, timestamp field, join keys, created-timestamp tie-break). It is the
``duckdb_asof`` retrieval path, the reference the Feast path is tested against, and the basis of
the content fingerprints the change sensor compares.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl

from retrain_plugins.errors import DataError, SpecError
from retrain_plugins.feast_view import FeatureServiceView, FeatureViewInfo
from retrain_plugins.feast_store import feast_calls, feature_store, registry_lock
from retrain_plugins.partitions import Window
from retrain_plugins.sources import glob_files
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.sql import connect, ident, parquet, query, utc

if TYPE_CHECKING:
    from feast import FeatureStore

ROW_ID = "row_id"
WINDOW_COL = "window"


def label_order(spec: RetrainingSpec) -> list[str]:
    """The label-row columns that order a training set (see the module docstring)."""
    lab = spec.labels
    return list(dict.fromkeys([lab.timestamp_column, *lab.key_columns, lab.cohort_column, lab.label_column, *lab.feature_columns]))


def _files(pattern: str, exclude: frozenset[str]) -> str | list[str]:
    """The glob itself, or its files minus ``exclude`` (unreadable files the caller skips).

    A glob may be an fsspec URL (``s3://...``): DuckDB expands it through the registered filesystem
    (:func:`retrain_plugins.sql.connect`), and the files are listed through fsspec here.
    """
    if not exclude:
        return pattern
    return sorted(set(glob_files(pattern)) - exclude)


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
    Rows whose cohort is blank are left out (see :func:`blank_cohort_rows`).
    """
    lab = spec.labels
    con = connect(spec.label_glob)
    con.register("windows_tbl", _windows_frame(windows, only))
    cohort = f"CAST(l.{ident(lab.cohort_column)} AS VARCHAR)"
    ts = utc(f"l.{ident(lab.timestamp_column)}")
    cohort_filter = "" if cohorts is None else f"AND list_contains($cohorts, {cohort})"
    if only is not None:
        cohort_filter += f" AND (w.cohorts IS NULL OR list_contains(w.cohorts, {cohort}))"

    def column(name: str) -> str:
        if name == lab.timestamp_column:
            return f"{ts} AS {ident(name)}"
        if name == lab.cohort_column and name not in lab.key_columns:  # a key keeps its type for the joins
            return f"{cohort} AS {ident(name)}"
        return f"l.{ident(name)} AS {ident(name)}"

    sql = f"""
        SELECT {", ".join(column(c) for c in lab.columns)}, w.key AS {ident(WINDOW_COL)}
        FROM {parquet('labels')} AS l
        JOIN windows_tbl AS w ON {ts} >= w.start AND {ts} < w."end"
        WHERE NOT {blank_cohort(cohort)} {cohort_filter}
    """
    params: dict = {"labels": _files(spec.label_glob, exclude)}
    if cohorts is not None:
        params["cohorts"] = list(cohorts)
    # The total order, sorted by polars: a third of what DuckDB's ORDER BY costs on these frames.
    frame = query(con, sql, params).sort(label_order(spec), nulls_last=True)
    return frame.with_row_index(ROW_ID).with_columns(pl.col(ROW_ID).cast(pl.Int64))


def blank_cohort(expression: str) -> str:
    """SQL: is the cohort ``expression`` (a VARCHAR) blank, i.e. empty or only white space?

    A blank cohort cannot name a partition (Dagster's UI cannot show or select an empty key, and
    a value of only spaces is a missing value by another name): such label rows belong to no
    partition. They are left out of every training set and fingerprint, and reported by file
    (:func:`blank_cohort_rows`), while every other cohort trains normally.
    """
    return f"regexp_full_match({expression}, '[\\s\\x{{0B}}\\x{{85}}\\p{{Z}}]*')"


def blank_cohort_rows(
    spec: RetrainingSpec, windows: Sequence[Window] | None = None, files: Sequence[str] | None = None
) -> dict[str, int]:
    """Label file -> number of its rows (in ``windows``, if given) whose cohort is blank.

    ``files`` limits the scan to those label files (the changed ones, for a sensor tick); by
    default every file of the label glob is read.
    """
    if files is not None and not files:
        return {}
    lab = spec.labels
    params: dict = {"labels": list(files) if files is not None else spec.label_glob}
    con = connect(params["labels"])
    cohort = f"CAST(l.{ident(lab.cohort_column)} AS VARCHAR)"
    where = blank_cohort(cohort)
    if windows:
        ts = utc(f"l.{ident(lab.timestamp_column)}")
        con.register("windows_tbl", _windows_frame(windows))
        where += f" AND EXISTS (SELECT 1 FROM windows_tbl AS w WHERE {ts} >= w.start AND {ts} < w.\"end\")"
    source = "read_parquet($labels, filename = true, union_by_name = true, hive_partitioning = false)"
    rows = con.execute(
        f"SELECT l.filename, count(*) FROM {source} AS l WHERE {cohort} IS NOT NULL AND {where} GROUP BY 1 ORDER BY 1",
        params,
    ).fetchall()
    return {str(f): int(n) for f, n in rows}


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

    Feast's rule: the latest feature row with ``ts <= label time`` and ``ts + ttl >= label time``,
    matched on every join key of the view; among rows of one key and time, the one with the newest
    created timestamp (the source's ``created_timestamp_column``). ASOF picks the latest row at or
    before the label time; a row older than the TTL is nulled. Rows that still tie and differ in
    their values have no defined winner in Feast (it keeps an arbitrary one): a label row that
    would join such a tie is refused with a :class:`DataError` naming the view, key and time.
    ``only`` keeps, per window key, just the given cohorts (None: all); see :func:`label_rows`.
    """
    con = connect(*(fv.source_path for fv in view.views))
    if only is not None:
        windows = [w for w in windows if w.key in only]
    con.register("labels_tbl", label_rows(spec, windows, cohorts, exclude, only=only))
    lab = spec.labels
    ts = ident(lab.timestamp_column)
    selects, joins, params = [], [], {}
    for i, fv in enumerate(view.views):
        alias = f"f{i}"
        label_keys = [ident(lab.keys[k]) for k in fv.label_keys]
        params[f"src{i}"] = _files(fv.source_path, exclude)
        scan = _feature_scan(fv, i, windows, label_keys, params)
        on = " AND ".join(f"l.{lk} = {alias}._k{j}" for j, lk in enumerate(label_keys))
        joins.append(f"ASOF LEFT JOIN ({scan}) AS {alias} ON {on} AND l.{ts} >= {alias}._ts")
        selects.append(f"{alias}._ambiguous AS _ambiguous{i}")
        for f in fv.features:
            if fv.ttl_seconds:
                keep = f"{alias}._ts + to_seconds(CAST({fv.ttl_seconds} AS DOUBLE)) >= l.{ts}"
                selects.append(f"CASE WHEN {keep} THEN {alias}.{ident(f)} END AS {ident(f)}")
            else:
                selects.append(f"{alias}.{ident(f)} AS {ident(f)}")
    sql = f"SELECT l.*, {', '.join(selects)} FROM labels_tbl AS l {' '.join(joins)} ORDER BY l.{ROW_ID}"
    frame = query(con, sql, params)
    flags = [f"_ambiguous{i}" for i in range(len(view.views))]
    for i, flag in enumerate(flags):
        tied = frame.filter(pl.col(flag).fill_null(False))
        if tied.height:
            fv, first = view.views[i], tied.row(0, named=True)
            where = ", ".join(f"{k}={first[lab.keys[k]]!r}" for k in fv.label_keys)
            raise DataError(
                f"feature view {fv.name!r} ({fv.source_path}) has rows with the same key and event time "
                f"{'and created time ' if fv.created_timestamp_field else ''}but different values "
                f"({tied.height} label rows would join one, e.g. {where} as of {first[lab.timestamp_column]}): "
                "Feast keeps an arbitrary one. "
                + ("Give such rows distinct created timestamps" if fv.created_timestamp_field else
                   "Set the source's created_timestamp_column")
                + " or remove the duplicates."
            )
    return frame.drop(flags)


def _feature_scan(fv: FeatureViewInfo, i: int, windows: Sequence[Window], label_keys: list[str], params: dict) -> str:
    """The feature rows of view ``i`` that labels of ``windows`` can join, one per (key, time).

    Pushed down: only rows with timestamps in [start - TTL, end) of a window, of that window's
    label entities. Scattered windows (a tick after edits in January and December) are scanned range
    by range (UNION ALL), each with the entities of its own windows: their hull would feed every
    row of the year in between, and every entity, into the ASOF join's sort. Then Feast's
    tie-break: per (key, time) the row with the newest created timestamp (``_ambiguous`` marks a
    winner tied with a different row).
    """
    keys = [ident(k) for k in fv.join_keys]
    fts = utc(ident(fv.timestamp_field))
    created = utc(ident(fv.created_timestamp_field)) if fv.created_timestamp_field else "NULL::TIMESTAMPTZ"
    out = ", ".join(f"{k} AS _k{j}" for j, k in enumerate(keys))
    cols = ", ".join(ident(f) for f in fv.features)
    src_keys = keys[0] if len(keys) == 1 else f"({', '.join(keys)})"
    lbl_keys = ", ".join(label_keys)
    scans = []
    for j, (lo, hi, window_keys) in enumerate(_time_ranges(windows, fv.ttl_seconds)):
        params[f"w{i}_{j}"], params[f"hi{i}_{j}"] = window_keys, hi
        filters = [
            f"{src_keys} IN (SELECT {lbl_keys} FROM labels_tbl WHERE list_contains($w{i}_{j}, {ident(WINDOW_COL)}))",
            f"{fts} < CAST($hi{i}_{j} AS TIMESTAMPTZ)",
        ]
        if lo is not None:
            params[f"lo{i}_{j}"] = lo
            filters.append(f"{fts} >= CAST($lo{i}_{j} AS TIMESTAMPTZ)")
        scans.append(f"SELECT {out}, {fts} AS _ts, {created} AS _cr, {cols} FROM {parquet(f'src{i}')} WHERE {' AND '.join(filters)}")
    if not scans:  # no windows, no labels: an empty side with the right columns
        scans.append(f"SELECT {out}, {fts} AS _ts, {created} AS _cr, {cols} FROM {parquet(f'src{i}')} WHERE FALSE")
    group = ", ".join(f"_k{j}" for j in range(len(keys)))
    # One hash aggregation per (key, time, created): rows there are either all equal (any one
    # stands for them) or ambiguous; then the newest created time wins per (key, time).
    firsts = ", ".join(f"first({ident(f)}) AS {ident(f)}" for f in fv.features)
    if not fv.created_timestamp_field:  # one aggregation: no created time to rank rows by
        return f"""
            SELECT {group}, _ts, {firsts}, count(*) > 1 AND count(DISTINCT ROW({cols})) > 1 AS _ambiguous
            FROM ({' UNION ALL '.join(scans)})
            GROUP BY {group}, _ts
        """
    return f"""
        SELECT {group}, _ts, {firsts}, count(DISTINCT ROW({cols})) > 1 AS _ambiguous
        FROM ({' UNION ALL '.join(scans)})
        GROUP BY {group}, _ts, _cr
        QUALIFY row_number() OVER (PARTITION BY {group}, _ts ORDER BY _cr DESC NULLS LAST) = 1
    """


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
