"""RoutedModel: one ``predict`` over every sub-model of a retraining.

The ``model_bundle`` asset publishes ``bundle.json``: for each cohort, its sub-models by window.
A row is served by its cohort's sub-model of the newest window starting at or before the row's
time (or the newest window when no time is given), and the result says which one served it.

What ``prediction`` holds depends on the bundle's ``task``: P(class 1) (binary), the predicted value
(regression), or the most likely class (multiclass), which also adds one ``proba_<class>`` column
per class of the bundle's ``classes`` (a class a sub-model never saw gets probability 0 from it).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from retrain_plugins.errors import RoutingError, StoreError
from retrain_plugins.fallback import FALLBACK_DIR
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.storage import Storage
from retrain_plugins.store import ModelStore
from retrain_plugins.tasks import Task
from retrain_plugins.trainers import make_trainer, trainer_class

BUNDLE = "bundle.json"
OWN, TOO_SMALL, UNSEEN, DAMAGED = "own_sub_model", "too_small", "unseen_cohort", "damaged_sub_model"


def _sorted(values: set[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:  # mixed types: order by text
        return sorted(values, key=str)


def publish_bundle(store: ModelStore, spec_payload: dict[str, Any], fallback: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``bundle.json`` from the store's current entries (and the fallback); return it.

    The bundle replaces the previous one whole (a rename locally, one PUT on an object store), and
    only names content-addressed artifacts that are complete before any record names them.

    Beside ``spec_payload``, the bundle records what its models say about themselves: ``task``
    (the payload's, or the models'), ``classes`` (multiclass: the sorted union of every model's
    classes, the ``proba_<class>`` columns of :meth:`RoutedModel.predict`) and
    ``categorical_features``.
    """
    routes: dict[str, list[dict[str, Any]]] = {}
    for key, entry in sorted(store.entries().items()):
        routes.setdefault(key.cohort, []).append(entry)
    models = [e for entries in routes.values() for e in entries] + ([fallback] if fallback else [])
    task = spec_payload.get("task")
    if task in (None, "auto"):
        task = next((m["task"] for m in reversed(models) if m.get("task")), "binary")
    categorical = next((m["categorical_features"] for m in models if m.get("categorical_features")), [])
    classes = _sorted({c for m in models for c in (m.get("classes") or [])}) if task == "multiclass" else None
    if fallback is not None:
        fallback = {**fallback, "path": f"{FALLBACK_DIR}/{fallback['path']}"}
    bundle = {
        **spec_payload,
        "task": task,
        "classes": classes,
        "categorical_features": categorical,
        "routes": routes,
        "fallback": fallback,
        "published_at": datetime.now().astimezone().isoformat(),
    }
    store.storage.write_bytes(BUNDLE, json.dumps(bundle, indent=1, sort_keys=True).encode())
    return bundle


class RoutedModel:
    """Predict with the sub-model of each row's cohort (and time), or with the fallback.

    A cohort with no sub-model (``unseen_cohort``), whose sub-model was trained on fewer than
    ``min_rows`` rows (``too_small``), or whose artifact fails its checksum (``damaged_sub_model``)
    is served by the global fallback model; every other row by its own sub-model
    (``own_sub_model``). ``predict`` says which model served each row and why.
    """

    def __init__(self, store: ModelStore, bundle: dict[str, Any]):
        self.store = store
        self.bundle = bundle
        self.features: list[str] = bundle["feature_columns"]
        self.cohort_column: str = bundle["cohort_column"]
        self.min_rows: int = bundle.get("min_rows", 0)
        self.task: Task = bundle.get("task", "binary")
        self.classes: list[Any] = list(bundle.get("classes") or [])
        # A dotted trainer path imports code: only when the spec that published the bundle opted in.
        trainer_class(bundle["trainer"], allow_import=bool(bundle.get("trainer_allow_import")))
        self._trainer = make_trainer(
            bundle["trainer"],
            bundle.get("trainer_params"),
            task=self.task,
            categorical=bundle.get("categorical_features") or (),
        )
        self._models: dict[str, Any] = {}

    @classmethod
    def load(cls, store_root: "Storage | Path | str", storage_options: dict[str, Any] | None = None) -> "RoutedModel":
        """The routed model a store's ``bundle.json`` describes.

        Args:
            store_root: The model store: a :class:`Storage`, a local folder or an fsspec URL
                (``s3://bucket/retrain/models/churn``; see :func:`retrain_plugins.layout.model_store`).
            storage_options: fsspec options of a URL (endpoint, credentials...).
        """
        storage = store_root if isinstance(store_root, Storage) else Storage(os.fspath(store_root), storage_options)
        try:
            bundle = json.loads(storage.read_bytes(BUNDLE))
        except FileNotFoundError:
            raise RoutingError(f"no model bundle at {storage.uri(BUNDLE)}: materialize the model_bundle asset first") from None
        return cls(ModelStore(storage), bundle)

    @property
    def cohorts(self) -> list[str]:
        return sorted(self.bundle["routes"])

    def _model(self, entry: dict[str, Any]) -> Any:
        if entry["path"] not in self._models:
            self._models[entry["path"]] = self._trainer.load(self.store.verified_path(entry))
        return self._models[entry["path"]]

    def _route(self, cohort: str, when: datetime | None) -> tuple[dict[str, Any], str, str]:
        """(entry, served_by, route) for one cohort and time."""
        entries = self.bundle["routes"].get(cohort)
        if entries:
            if when is None:
                entry = entries[-1]
            else:
                eligible = [e for e in entries if datetime.fromisoformat(e["window_start"]) <= when]
                entry = eligible[-1] if eligible else entries[0]
            if entry.get("rows", 0) >= self.min_rows:
                return entry, str(PartitionKey(entry["window"], entry["cohort"])), OWN
            route = TOO_SMALL
        else:
            route = UNSEEN
        fallback = self.bundle.get("fallback")
        if fallback is None:
            raise RoutingError(
                f"cohort {cohort!r} has no usable sub-model ({route}) and there is no fallback model; "
                f"cohorts with sub-models: {self.cohorts}"
            )
        return fallback, "fallback", route

    def predict(self, frame: pl.DataFrame, timestamp_column: str | None = None) -> pl.DataFrame:
        """Score every row with the model that serves it.

        Args:
            frame: Rows with the cohort column and every model feature (extra columns are kept).
            timestamp_column: Route each row by its time (the newest window starting at or before
                it); without it, each cohort's newest sub-model serves.

        Returns:
            ``frame`` plus ``prediction``, ``served_by`` (partition key or ``fallback``) and
            ``route`` per row. ``prediction`` is P(class 1) for binary, the predicted value for
            regression, and the most likely class for multiclass, which also adds
            ``proba_<class>`` columns, one per class of the bundle, in its order.
        """
        missing = [c for c in [self.cohort_column, *self.features] if c not in frame.columns]
        if missing:
            raise RoutingError(f"prediction frame lacks columns {missing}")
        multiclass = self.task == "multiclass"
        prediction = np.full((frame.height, len(self.classes)) if multiclass else frame.height, np.nan)
        served = np.empty(frame.height, dtype=object)
        route = np.empty(frame.height, dtype=object)
        indexed = frame.with_row_index("_i")
        group_cols = [self.cohort_column] + ([timestamp_column] if timestamp_column else [])
        for keys, rows in indexed.group_by(group_cols, maintain_order=True):
            when = keys[1] if timestamp_column else None
            entry, served_by, why = self._route(str(keys[0]), when)
            try:
                model = self._model(entry)
            except StoreError:
                if why != OWN or not self.bundle.get("fallback"):
                    raise
                # Never serve a model whose bytes do not match the manifest; the change sensor
                # requests its retraining (reason "repair").
                entry, served_by, why = self.bundle["fallback"], "fallback", DAMAGED
                model = self._model(entry)
            idx = rows["_i"].to_numpy()
            output = self._trainer.predict(model, rows.select(self.features))
            prediction[idx] = self._aligned(model, output) if multiclass else output
            served[idx] = served_by
            route[idx] = why
        extra = [pl.Series("served_by", served, dtype=pl.String), pl.Series("route", route, dtype=pl.String)]
        if not multiclass:
            return frame.with_columns(pl.Series("prediction", prediction), *extra)
        labels = pl.Series("prediction", self.classes)
        best = labels.gather(np.argmax(prediction, axis=1)) if frame.height else labels.clear()
        proba = [pl.Series(f"proba_{c}", prediction[:, i]) for i, c in enumerate(self.classes)]
        return frame.with_columns(best, *proba, *extra)

    def _aligned(self, model: Any, proba: np.ndarray) -> np.ndarray:
        """A sub-model's (n, k) probabilities placed in the bundle's class columns (0 for classes it lacks)."""
        own = self._trainer.classes(model)
        out = np.zeros((proba.shape[0], len(self.classes)))
        position = {c: i for i, c in enumerate(self.classes)}
        unknown = [c for c in own if c not in position]
        if unknown:
            raise RoutingError(f"a sub-model predicts classes {unknown} the bundle does not list ({self.classes})")
        for j, c in enumerate(own):
            out[:, position[c]] = proba[:, j]
        return out
