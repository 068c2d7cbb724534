"""The label rows of a retraining: those of some windows and cohorts, in one total order.

Every training set starts from them (:mod:`retrain_plugins.training_sets`, and the DuckDB ASOF path
:mod:`retrain_plugins.asof_join`). Rows carry a ``row_id`` (Feast does not keep row order) in a
total order: label time, every key column, cohort, label, then the label rows' feature columns.
Rows equal in all of these are equal in every column of the training set, so the same inputs
always give the same frame, whatever order the files list their rows in. A row whose cohort is
blank belongs to no partition (:func:`blank_cohort`). Timestamps of any unit, naive (read as UTC)
or zone-aware, are read as UTC microseconds.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import polars as pl

from retrain_plugins.partitions import Window
from retrain_plugins.sources import glob_files
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.sql import connect, ident, parquet, query, utc

ROW_ID = "row_id"
WINDOW_COL = "window"


def label_order(spec: RetrainingSpec) -> list[str]:
    """The label-row columns that order a training set (see the module docstring)."""
    lab = spec.labels
    return list(dict.fromkeys([lab.timestamp_column, *lab.key_columns, lab.cohort_column, lab.label_column, *lab.feature_columns]))


def files_except(pattern: str, exclude: frozenset[str]) -> str | list[str]:
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
    con.register("windows_tbl", windows_frame(windows, only))
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
    params: dict = {"labels": files_except(spec.label_glob, exclude)}
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
        con.register("windows_tbl", windows_frame(windows))
        where += f" AND EXISTS (SELECT 1 FROM windows_tbl AS w WHERE {ts} >= w.start AND {ts} < w.\"end\")"
    source = "read_parquet($labels, filename = true, union_by_name = true, hive_partitioning = false)"
    rows = con.execute(
        f"SELECT l.filename, count(*) FROM {source} AS l WHERE {cohort} IS NOT NULL AND {where} GROUP BY 1 ORDER BY 1",
        params,
    ).fetchall()
    return {str(f): int(n) for f, n in rows}


def windows_frame(windows: Sequence[Window], only: Mapping[str, Collection[str] | None] | None = None) -> pl.DataFrame:
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
