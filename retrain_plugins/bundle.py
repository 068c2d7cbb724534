"""Publishing the routing bundle and checking that everything it routes to really serves."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from retrain_plugins.fallback import FALLBACK_KEY, fallback_store
from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.layout import model_store_root, training_set_path
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.routing import RoutedModel, publish_bundle
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.store import ModelStore


def publish(spec: RetrainingSpec, view: FeatureServiceView) -> dict[str, Any]:
    """Write ``bundle.json`` for ``spec`` from the current sub-models and fallback."""
    payload = {
        "name": spec.name,
        "feature_columns": view.feature_columns,
        "cohort_column": spec.labels.cohort_column,
        "trainer": spec.trainer.name,
        "trainer_params": spec.trainer.params,
        "min_rows": spec.fallback.min_rows,
    }
    fallback = fallback_store(spec).entries().get(FALLBACK_KEY) if spec.fallback.enabled else None
    return publish_bundle(ModelStore(model_store_root(spec)), payload, fallback)


def smoke_test(spec: RetrainingSpec, rows: int = 5) -> list[str]:
    """Load every model the bundle routes to and predict a few rows; return the failures."""
    failures = []
    model = RoutedModel.load(model_store_root(spec))
    targets = [e for entries in model.bundle["routes"].values() for e in entries]
    if model.bundle.get("fallback"):
        targets.append(model.bundle["fallback"])
    for entry in targets:
        where = f"{entry['window']}/{entry['cohort']}"
        try:
            sample = _sample(spec, entry, model.features, rows)
            scores = model._trainer.predict_proba(model._model(entry), sample)
            if scores.shape != (sample.height,) or not np.all((scores >= 0) & (scores <= 1)):
                failures.append(f"{where}: predictions out of range")
        except Exception as exc:  # a smoke test reports every kind of failure, it does not raise
            failures.append(f"{where}: {type(exc).__name__}: {exc}")
    return failures


def _sample(spec: RetrainingSpec, entry: dict[str, Any], features: list[str], rows: int) -> pl.DataFrame:
    path = training_set_path(spec, PartitionKey(entry["window"], entry["cohort"]))
    if path.exists():
        return pl.read_parquet(path).select(features).head(rows)
    return pl.DataFrame({f: np.zeros(rows) for f in features})
