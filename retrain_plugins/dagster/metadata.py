"""Turning library results into Dagster metadata the UI renders well."""

from collections.abc import Mapping
from typing import Any

from dagster import MetadataValue, TableColumn, TableSchema

_PATHS = ("path", "training_set_path")


def as_metadata(values: dict[str, Any]) -> dict[str, Any]:
    """Drop ``None``s; JSON for lists and dicts; path values as paths."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, dict)):
            out[name] = MetadataValue.json(value)
        elif name in _PATHS:
            out[name] = MetadataValue.path(str(value))
        else:
            out[name] = value
    return out


def column_schema(spec, view, columns: Mapping[str, str]) -> TableSchema:
    """``dagster/column_schema`` of a training set: its columns (name -> polars dtype, in frame
    order, as its metadata JSON records them), each described by its role in the retraining."""
    from retrain_plugins.labels import ROW_ID, WINDOW_COL

    lab = spec.labels
    roles = {ROW_ID: "row id (the label rows' total order)", WINDOW_COL: "window (partition key)", lab.timestamp_column: "label time", lab.cohort_column: "cohort (partition key)"}
    roles |= {c: "entity key" for c in lab.key_columns}
    roles |= {c: "feature (label file)" for c in lab.feature_columns if c not in roles}
    roles |= {f: f"feature ({fv.name})" for fv in view.views for f in fv.features}
    roles[lab.label_column] = "label"
    return TableSchema(
        columns=[TableColumn(name, type=dtype, description=roles.get(name)) for name, dtype in columns.items()]
    )


def auc_table(routes: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown heatmap-style table: the primary holdout metric (AUC for binary) per window (rows) x cohort (columns)."""
    cohorts = sorted(routes)
    windows = sorted({e["window"] for entries in routes.values() for e in entries})
    by = {(e["window"], c): e.get("metric_holdout", e.get("auc_holdout")) for c, entries in routes.items() for e in entries}
    lines = ["| window | " + " | ".join(cohorts) + " |", "|---" * (len(cohorts) + 1) + "|"]
    for w in windows:
        cells = [f"{by[(w, c)]:.3f}" if by.get((w, c)) is not None else "-" for c in cohorts]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trainer_kind(spec) -> str:
    """The trainer as a Dagster asset kind (a tag: no ':' of a dotted path, at most 63 characters)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", spec.trainer.name)[-63:]
