"""Materialize one partition: training set to parquet, sub-model into the store.

These are the two steps the Dagster assets run per partition key, kept free of Dagster so they can
be called, tested and benchmarked on their own. Each returns the metadata the asset records.
"""

from __future__ import annotations

import io
import json
import time
from typing import TYPE_CHECKING, Any

import polars as pl

from retrain_plugins.changes.fingerprints import EMPTY, definition_version, frame_cells, partition_fingerprint
from retrain_plugins.columns import categorical_features, model_features
from retrain_plugins.errors import DataError
from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.layout import FAILED, training_set_rel, training_sets
from retrain_plugins.partitions import PartitionKey, training_windows, windows
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.policies import CONSTANT, Verdict, constant_predictions, gate, plan
from retrain_plugins.store import ModelStore
from retrain_plugins.store_records import sha256_bytes
from retrain_plugins.tasks import resolve_task, validate_labels
from retrain_plugins.trainers import fit_and_evaluate, make_trainer
from retrain_plugins.sql import connect, ident, query
from retrain_plugins.training_sets import partition_training_set

if TYPE_CHECKING:
    from feast import FeatureStore


def build_training_set(
    spec: RetrainingSpec, view: FeatureServiceView, store: "FeatureStore | None", key: PartitionKey
) -> dict[str, Any]:
    """Retrieve ``key``'s training set (through Feast, or the spec's DuckDB ASOF path), write it,
    return its metadata. ``store`` is only used with ``retrieval: feast`` (built on demand if None)."""
    all_windows = windows(spec)
    span = training_windows(key.window, [w.key for w in all_windows], spec.windows.lookback)
    chosen = [w for w in all_windows if w.key in span]
    started = time.perf_counter()
    frame = partition_training_set(spec, view, chosen, key.cohort, store)
    seconds = time.perf_counter() - started
    fingerprint = partition_fingerprint(frame_cells(spec, view, frame), span, key.cohort)
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    data = buffer.getvalue()
    storage = training_sets(spec)
    storage.write_bytes(training_set_rel(key), data)
    meta = {
        "partition": str(key),
        "windows": span,
        "rows": frame.height,
        "label_rate": frame[spec.labels.label_column].cast(pl.Float64, strict=False).mean(),
        "fingerprint": fingerprint,
        "feature_service": spec.feature_service,
        "feature_service_version": view.version,
        "retrieval": spec.retrieval,
        "retrieval_seconds": round(seconds, 3),
        "path": storage.uri(training_set_rel(key)),
        "sha256": sha256_bytes(data),  # the training step trains on exactly these bytes
        "columns": {name: str(dtype) for name, dtype in frame.schema.items()},
    }
    storage.write_bytes(training_set_rel(key, ".json"), json.dumps(meta, indent=1).encode())
    return meta


def read_training_set(spec: RetrainingSpec, key: PartitionKey) -> tuple[dict[str, Any], pl.DataFrame]:
    """``key``'s stored training set and its metadata, checked to belong together.

    The metadata is written after the parquet file, and names its SHA-256: a pair that does not
    match (another run of the partition rewrote one of them meanwhile) is a :class:`DataError`,
    so a model is never recorded with a fingerprint of other data than it was fitted on.
    """
    storage = training_sets(spec)
    try:
        ts_meta = json.loads(storage.read_bytes(training_set_rel(key, ".json")))
        data = storage.read_bytes(training_set_rel(key))
    except FileNotFoundError:
        raise DataError(
            f"training set of {key} is missing at {storage.uri(training_set_rel(key))}: materialize training_set first"
        ) from None
    if ts_meta.get("partition", str(key)) != str(key):
        raise DataError(
            f"training set {storage.uri(training_set_rel(key))} holds partition {ts_meta['partition']!r}, not "
            f"{str(key)!r}: two cohorts share one file (values that differ only in letter case, on a "
            "case-insensitive file system?)"
        )
    if ts_meta.get("sha256", sha256_bytes(data)) != sha256_bytes(data):
        raise DataError(
            f"training set of {key} changed while this run read it (another run of the partition wrote it): "
            "the change sensor requests it again"
        )
    return ts_meta, pl.read_parquet(io.BytesIO(data))


def train_sub_model(
    spec: RetrainingSpec,
    view: FeatureServiceView,
    models: ModelStore,
    key: PartitionKey,
    reason: str,
    run_id: str | None,
    detail: str | None = None,
) -> dict[str, Any]:
    """Fit ``key``'s sub-model on its stored training set and promote it; return its metadata.

    The metadata says what the partition's model now answers (``status``: trained, rejected,
    skipped, failed) for which data (``fingerprint``) under which definition: the run records it
    in its materialization (or, when failed, an observation) and the change sensor reads it back
    from Dagster's event log; this function writes nothing but the model store. A partition
    without labelled rows, or with a single label class, is skipped with a recorded reason; one
    whose data is unusable (labels outside {0, 1}, infinite features) is failed with the problem,
    the partition, and the label files involved. In every case but success the previous
    sub-model, if any, keeps serving.
    """
    started = time.time()
    storage = training_sets(spec)
    try:
        result = _train(spec, view, models, key, reason, run_id, detail)
    except DataError as exc:
        message = str(exc) + _label_files_hint(spec, key)
        try:
            ts_meta = json.loads(storage.read_bytes(training_set_rel(key, ".json")))
        except (FileNotFoundError, ValueError):
            ts_meta = {}
        # For the fallback, which leaves out the training sets their own partition failed on.
        storage.write_bytes(training_set_rel(key, FAILED), ts_meta.get("fingerprint", EMPTY).encode())
        return {
            "partition": str(key), "status": "failed", "error": message, "reason": reason, "change": detail,
            "fingerprint": ts_meta.get("fingerprint", EMPTY), "rows": ts_meta.get("rows", 0),
            "definition": definition_version(spec, view), "run_id": run_id, "attempted_at": started,
        }
    storage.delete(training_set_rel(key, FAILED))
    return result


def _label_files_hint(spec: RetrainingSpec, key: PartitionKey) -> str:
    """Which label files hold the partition's unusable label values, if any (by the task's rules)."""
    lab = spec.labels
    column = ident(lab.label_column)
    source = (
        "read_parquet($p, filename = true, union_by_name = true, hive_partitioning = false) "
        f"WHERE CAST({ident(lab.cohort_column)} AS VARCHAR) = $c"
    )
    params = {"p": spec.label_glob, "c": key.cohort}
    try:
        con = connect()
        empty = query(con, f"SELECT {column} FROM {source} LIMIT 0", params)
        task = resolve_task(spec, empty.schema[lab.label_column])
        number = f"TRY_CAST({column} AS DOUBLE)"
        bad, what = {
            "binary": (f"{number} IS NULL OR isnan({number}) OR {number} NOT IN (0, 1)", "values outside {0, 1}"),
            "multiclass": (f"{column} IS NULL", "null class labels"),
            "regression": (f"{number} IS NULL OR NOT isfinite({number})", "null or non-finite values"),
        }[task]
        files = con.execute(f"SELECT DISTINCT filename FROM {source} AND ({bad}) ORDER BY 1", params).fetchall()
    except Exception:  # the hint is best effort; the error itself is already clear
        return ""
    return f"; label files with {what} in column {lab.label_column!r}: {[f for f, in files]}" if files else ""


def _train(
    spec: RetrainingSpec,
    view: FeatureServiceView,
    models: ModelStore,
    key: PartitionKey,
    reason: str,
    run_id: str | None,
    detail: str | None,
) -> dict[str, Any]:
    started = time.time()
    ts_meta, frame = read_training_set(spec, key)
    label = spec.labels.label_column
    definition = definition_version(spec, view)
    base = {
        "partition": str(key),
        "reason": reason,
        "change": detail,
        "fingerprint": ts_meta["fingerprint"],
        "rows": frame.height,
        "definition": definition,
    }
    task = resolve_task(spec, frame.schema[label])
    validate_labels(task, frame[label], f"partition {key}")
    if ts_meta["fingerprint"] == EMPTY or frame[label].n_unique() < 2:
        why = "no labelled rows" if frame.height == 0 else ("a constant label" if task == "regression" else "a single label class")
        return {**base, "status": "skipped", "skip_reason": why, "run_id": run_id, "attempted_at": started}
    features = model_features(spec, view)
    categorical = categorical_features(frame, features)
    trainer = make_trainer(spec.trainer.name, spec.trainer.params, task=task, categorical=categorical)
    span = ts_meta["windows"]
    chosen = plan(spec, view, trainer, models, key, frame, span)
    outcome = fit_and_evaluate(
        trainer,
        frame,
        features,
        label,
        spec.trainer.holdout_fraction,
        where=f"partition {key}",
        init_model=chosen.init_model,
        train_from=chosen.train_from,
    )
    n_fitted = frame.height - (outcome.metrics["rows_holdout"] or 0)  # warm start: the current model's rows too
    if constant_predictions(trainer, outcome.model, frame.head(n_fitted).select(features)):
        verdict = Verdict(False, None, CONSTANT)  # never serves; the previous model or the fallback does
    else:
        verdict = gate(spec, view, trainer, models, key, outcome)
    entry = models.put(
        key,
        lambda p: trainer.save(outcome.model, p),
        trainer.suffix,
        {
            **base,
            **outcome.metrics,
            "task": task,
            "classes": trainer.classes(outcome.model) if task == "multiclass" else None,
            "training_seconds": round(outcome.seconds, 3),
            "strategy": chosen.strategy,
            "strategy_note": chosen.note or None,
            "rows_trained": frame.height - chosen.train_from - (outcome.metrics["rows_holdout"] or 0),
            "model_size": trainer.size(outcome.model),
            "champion_metric_holdout": verdict.champion_metric,
            "champion_auc_holdout": verdict.champion_metric if task == "binary" else None,
            "gate": verdict.note or ("promoted" if verdict.promote else "rejected"),
            "trainer": trainer.name,
            "trainer_params": trainer.params,
            "feature_service": spec.feature_service,
            "feature_service_version": view.version,
            "feature_columns": features,
            "categorical_features": categorical,
            "max_label_time": frame[spec.labels.timestamp_column].max().isoformat(),
            "window_start": _window_start(spec, key.window),
            "run_id": run_id,
        },
        promote=verdict.promote,
    )
    return {**entry, "status": "trained" if verdict.promote else "rejected", "attempted_at": started}


def _window_start(spec: RetrainingSpec, window: str) -> str:
    return next(w.start.isoformat() for w in windows(spec) if w.key == window)
