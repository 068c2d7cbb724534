"""Publishing the routing bundle and checking that everything it routes to really serves."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import polars as pl

from retrain_plugins.columns import model_features
from retrain_plugins.errors import StoreError
from retrain_plugins.fallback import FALLBACK_KEY, fallback_store
from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.layout import model_store, training_set_rel, training_sets
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.routing import BUNDLE, RoutedModel, publish_bundle
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.store import ModelStore


def publish(spec: RetrainingSpec, view: FeatureServiceView) -> dict[str, Any]:
    """Write ``bundle.json`` for ``spec`` from the current sub-models and fallback."""
    payload = {
        "name": spec.name,
        "task": spec.task,
        "feature_columns": model_features(spec, view),
        "cohort_column": spec.labels.cohort_column,
        "trainer": spec.trainer.name,
        "trainer_allow_import": spec.trainer.allow_import,  # a dotted trainer path is code: opted in by the spec
        "trainer_params": spec.trainer.params,
        "min_rows": spec.fallback.min_rows,
    }
    fallback = fallback_store(spec).entries().get(FALLBACK_KEY) if spec.fallback.enabled else None
    return publish_bundle(model_store(spec), payload, fallback)


def read_bundle(spec: RetrainingSpec) -> dict[str, Any] | None:
    """The published bundle, if any."""
    try:
        return json.loads(model_store(spec).storage.read_bytes(BUNDLE))
    except FileNotFoundError:
        return None


def bundle_is_stale(spec: RetrainingSpec) -> bool:
    """Whether ``bundle.json`` routes to other models than the store's current ones.

    Compares the bundle's routes (window, cohort, sha256 of each sub-model) and its fallback with
    :meth:`ModelStore.entries` and the fallback store: true when a sub-model was promoted, rolled
    back or added since the bundle was published (or there are models and no bundle). This is
    what a promoted partition whose run never reached ``model_bundle`` (a crash, a run that
    selected only the partitioned assets) leaves behind; the change sensor requests a
    serving-only run (``fallback_model``, ``model_bundle``) when it is true. Reads two manifests,
    no artifact.
    """
    current = {(k.window, k.cohort): e["sha256"] for k, e in model_store(spec).entries().items()}
    fallback = fallback_store(spec).entries().get(FALLBACK_KEY) if spec.fallback.enabled else None
    bundle = read_bundle(spec)
    if bundle is None:
        return bool(current) or fallback is not None
    routed = {(e["window"], e["cohort"]): e["sha256"] for entries in bundle["routes"].values() for e in entries}
    routed_fallback = (bundle.get("fallback") or {}).get("sha256")
    return routed != current or routed_fallback != (fallback or {}).get("sha256")


def smoke_test(spec: RetrainingSpec, rows: int = 5, previous: dict[str, Any] | None = None) -> list[str]:
    """Check that every model the bundle routes to serves; return the failures.

    Models new since the ``previous`` bundle (all, without one) are loaded and predict a few rows
    of their own training set. Models the previous bundle already served are checked by size and
    change token (local: size and mtime; object stores: the ETag) against the record, and read in
    full (checksum) only when those changed: a tick of one changed partition does not reload
    every sub-model.
    """
    failures = []
    model = RoutedModel.load(model_store(spec).storage)
    targets = [e for entries in model.bundle["routes"].values() for e in entries]
    if model.bundle.get("fallback"):
        targets.append(model.bundle["fallback"])
    served_before = {e["sha256"] for entries in (previous or {}).get("routes", {}).values() for e in entries}
    if (previous or {}).get("fallback"):
        served_before.add(previous["fallback"]["sha256"])
    damaged = {
        entry["path"]: problem
        for entry in targets
        if entry["sha256"] in served_before and (problem := _changed_on_disk(model.store, entry))
    }
    failures += [f"{e['window']}/{e['cohort']}: {damaged[e['path']]}" for e in targets if e["path"] in damaged]
    for entry in (e for e in targets if e["sha256"] not in served_before):
        where = f"{entry['window']}/{entry['cohort']}"
        try:
            sample = _sample(spec, entry, model.features, rows)
            problem = _check_output(model, entry, model._trainer.predict(model._model(entry), sample), sample.height)
            if problem:
                failures.append(f"{where}: {problem}")
        except Exception as exc:  # a smoke test reports every kind of failure, it does not raise
            failures.append(f"{where}: {type(exc).__name__}: {exc}")
    return failures


def _check_output(model: RoutedModel, entry: dict[str, Any], output: np.ndarray, rows: int) -> str | None:
    """What is wrong with a model's predictions for its task, if anything."""
    if model.task == "multiclass":
        k = len(model._trainer.classes(model._model(entry)))
        if output.shape != (rows, k):
            return f"predictions have shape {output.shape}, not ({rows}, {k})"
        if not (np.all((output >= 0) & (output <= 1)) and np.allclose(output.sum(axis=1), 1.0)):
            return "class probabilities out of range or not summing to 1"
        return None
    if output.shape != (rows,):
        return f"predictions have shape {output.shape}, not ({rows},)"
    if model.task == "regression":
        return None if np.all(np.isfinite(output)) else "non-finite predictions"
    return None if np.all((output >= 0) & (output <= 1)) else "predictions out of range"


def _changed_on_disk(store: ModelStore, entry: dict[str, Any]) -> str | None:
    token = store.storage.token(entry["path"])
    if token is None:
        return "artifact missing"
    recorded = entry.get("token") or (f"{entry['size_bytes']}:{entry['mtime_ns']}" if entry.get("mtime_ns") else None)
    if token == recorded:
        return None
    try:
        store.read_artifact(entry)
    except StoreError:
        return "artifact corrupted (checksum mismatch)"
    return None


def _sample(spec: RetrainingSpec, entry: dict[str, Any], features: list[str], rows: int) -> pl.DataFrame:
    try:
        data = training_sets(spec).read_bytes(training_set_rel(PartitionKey(entry["window"], entry["cohort"])))
    except FileNotFoundError:
        data = None
    if data is not None:
        return pl.read_parquet(io.BytesIO(data)).select(features).head(rows)
    categorical = set(entry.get("categorical_features") or [])
    return pl.DataFrame({f: [None] * rows if f in categorical else np.zeros(rows) for f in features},
                        schema={f: pl.String if f in categorical else pl.Float64 for f in features})
