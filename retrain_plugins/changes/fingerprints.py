"""Content fingerprints of training sets, per (window, cohort) cell.

A *cell* is the label rows of one cohort in one window, with their point-in-time features. A
sub-model ``(w, c)`` trains on cells ``(w-L+1 .. w, c)``, so its fingerprint is derived from theirs.
The hash of a cell is order-independent (sum of per-row MD5 numbers, plus the row count), computed
in DuckDB over exactly the columns the trainer sees. The same expression hashes a frame retrieved
through Feast (at training time) and the DuckDB ASOF frame (at sensor time), so "the sub-model was
trained on this data" and "the data is now this" compare directly.

MD5 is used rather than DuckDB's ``hash()``: fingerprints are persisted, and ``hash()`` is not
promised stable across DuckDB versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import polars as pl

from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.partitions import Window
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.sql import connect, ident, query
from retrain_plugins.asof_join import asof_training_set
from retrain_plugins.labels import WINDOW_COL

EMPTY = "empty"


class Cell(NamedTuple):
    rows: int
    digest: str


CellKey = tuple[str, str]  # (window key, cohort)


def _row_hash(spec: RetrainingSpec, view: FeatureServiceView | None, schema: pl.Schema) -> str:
    lab = spec.labels

    def value(column: str) -> str:
        # Numbers through DOUBLE (an Int64 and a Float64 of one value hash alike, as in every
        # release so far); strings, dates and the rest as their text.
        dtype = schema.get(column)
        if dtype is not None and (dtype.is_numeric() or dtype == pl.Boolean):
            return f"CAST(CAST({ident(column)} AS DOUBLE) AS VARCHAR)"
        return f"CAST({ident(column)} AS VARCHAR)"

    parts = [
        *(f"CAST({ident(c)} AS VARCHAR)" for c in lab.key_columns),
        f"CAST(epoch_us({ident(lab.timestamp_column)}) AS VARCHAR)",
        f"CAST({ident(lab.cohort_column)} AS VARCHAR)",
        value(lab.label_column),
        *(value(c) for c in lab.feature_columns if c not in lab.key_columns and c != lab.cohort_column),
        *(value(f) for f in (view.feature_columns if view else ())),
    ]
    # ROW(...)::VARCHAR renders NULL distinctly from any value, unlike concat_ws.
    return f"md5_number_lower(CAST(ROW({', '.join(parts)}) AS VARCHAR))"


def frame_cells(
    spec: RetrainingSpec, view: FeatureServiceView | None, frame: pl.DataFrame
) -> dict[CellKey, Cell]:
    """Cell fingerprints of a training frame (Feast's or the ASOF one); it needs a ``window`` column.

    With ``view=None`` only the label columns are hashed: the *label digest* of a cell, which a
    frame of bare label rows (``label_rows``) and a training frame of the same rows share.
    """
    if frame.height == 0:
        return {}
    con = connect()
    con.register("frame_tbl", frame)
    cohort = ident(spec.labels.cohort_column)
    rows = query(
        con,
        f"SELECT {ident(WINDOW_COL)} AS w, CAST({cohort} AS VARCHAR) AS c, count(*) AS n, "
        f"CAST(sum({_row_hash(spec, view, frame.schema)}) AS VARCHAR) AS h FROM frame_tbl GROUP BY ALL",
    )
    return {(w, c): Cell(int(n), h) for w, c, n, h in rows.iter_rows()}


def source_cells(
    spec: RetrainingSpec, view: FeatureServiceView, windows: Sequence[Window]
) -> dict[CellKey, Cell]:
    """Current cell fingerprints of ``windows`` over every cohort present in the label data."""
    if not windows:
        return {}
    return frame_cells(spec, view, asof_training_set(spec, view, windows, None))


def partition_fingerprint(cells: Mapping[CellKey, Cell], training_windows: Iterable[str], cohort: str) -> str:
    """Fingerprint of sub-model ``(w, cohort)`` from its training windows' cells."""
    parts = []
    for window in training_windows:
        cell = cells.get((window, cohort))
        if cell is not None and cell.rows:
            parts.append(f"{window}:{cell.rows}:{cell.digest}")
    if not parts:
        return EMPTY
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def definition_version(spec: RetrainingSpec, view: FeatureServiceView) -> str:
    """Code version of a sub-model: spec definition (labels, lookback, trainer) + feature service."""
    return hashlib.sha256(f"{spec.definition_version()}:{view.version}".encode()).hexdigest()[:16]
