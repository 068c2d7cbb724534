"""The global fallback model: one model over every cohort's newest windows.

It serves cohorts that have no sub-model (unseen cohorts) or whose sub-model was trained on fewer
rows than ``spec.fallback.min_rows``. Its retraining policy is explicit and content-based: it is
fitted on the stored training sets of every cohort in the newest ``spec.fallback.windows`` windows
that have data, with the retraining's task (the same one its sub-models have), and refitted only
when the fingerprint of those inputs (the partitions' fingerprints) changed; otherwise the current
one is kept, file untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from typing import Any

import polars as pl

from retrain_plugins.changes.fingerprints import EMPTY
from retrain_plugins.columns import categorical_features, model_features
from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.layout import FAILED, model_store, training_set_rel, training_sets
from retrain_plugins.partitions import PartitionKey, path_segment, windows
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.store import ModelStore
from retrain_plugins.tasks import resolve_task
from retrain_plugins.trainers import fit_and_evaluate, make_trainer
from retrain_plugins.labels import WINDOW_COL, label_order

FALLBACK_DIR = "_fallback"
FALLBACK_KEY = PartitionKey("global", "all")


def fallback_store(spec: RetrainingSpec) -> ModelStore:
    return ModelStore(model_store(spec).storage.child(FALLBACK_DIR), keep_versions=spec.store.keep_versions)


def _inputs(spec: RetrainingSpec) -> list[tuple[PartitionKey, str, str]]:
    """(partition, training-set path below :func:`training_sets`, fingerprint) of every cohort in
    the newest windows with data.

    A training set its own partition failed on (unusable labels or features; the training step
    leaves a ``.failed`` marker naming the fingerprint beside it) is left out: it would fail the
    fallback's fit as well, and one bad partition must not hold back the fallback.
    """
    storage = training_sets(spec)
    listed = set(storage.glob("*/*"))
    by_window: dict[str, list[tuple[PartitionKey, str, str]]] = {}
    for window in windows(spec):
        folder = path_segment(window.key)
        for meta_rel in sorted(r for r in listed if r.startswith(f"{folder}/") and r.endswith(".json")):
            meta = json.loads(storage.read_bytes(meta_rel))
            key = PartitionKey(window.key, meta["partition"].split("/", 1)[1])
            failed_rel = training_set_rel(key, FAILED)
            failed_on = storage.read_text(failed_rel).strip() if failed_rel in listed else None
            if meta["fingerprint"] != EMPTY and failed_on != meta["fingerprint"]:
                by_window.setdefault(window.key, []).append((key, meta_rel[: -len(".json")] + ".parquet", meta["fingerprint"]))
    newest = sorted(by_window)[-spec.fallback.windows :]
    return [item for window in newest for item in by_window[window]]


def _fingerprint(inputs: list[tuple[PartitionKey, str, str]]) -> str:
    return hashlib.sha256("|".join(f"{k.window}/{k.cohort}:{fp}" for k, _, fp in sorted(inputs)).encode()).hexdigest()[:32]


def _is_current(entry: dict[str, Any] | None, fingerprint: str, spec: RetrainingSpec, view: FeatureServiceView) -> bool:
    return (
        entry is not None
        and entry["fingerprint"] == fingerprint
        and entry["feature_columns"] == model_features(spec, view)
        and (spec.task == "auto" or entry.get("task", "binary") == spec.task)
    )


def fallback_affected(spec: RetrainingSpec, view: FeatureServiceView, changed_windows: Iterable[str]) -> bool:
    """Whether retraining partitions of ``changed_windows`` can change what the fallback is fitted on.

    The fallback reads the newest ``spec.fallback.windows`` windows that have a training set. When
    that many exist and the fallback is current, a window older than all of them cannot enter that
    set (the newer ones keep it full) nor leave it: the sensor then leaves ``fallback_model`` out
    of the run, which spares a step per run (``train_fallback`` would only answer "cached").
    """
    if not spec.fallback.enabled:
        return False
    inputs = _inputs(spec)
    newest = {k.window for k, _, _ in inputs}
    if len(newest) < spec.fallback.windows:
        return True
    if not _is_current(fallback_store(spec).entries().get(FALLBACK_KEY), _fingerprint(inputs), spec, view):
        return True  # stale already (its last refit failed, or the features changed): run it
    oldest = min(newest)
    return any(window >= oldest for window in changed_windows)


def train_fallback(spec: RetrainingSpec, view: FeatureServiceView, run_id: str | None) -> dict[str, Any]:
    """Refit the fallback if its inputs changed; return its metadata (``status`` trained/cached)."""
    store = fallback_store(spec)
    inputs = _inputs(spec)
    if not spec.fallback.enabled or not inputs:
        return {"status": "disabled" if not spec.fallback.enabled else "no training sets yet"}
    fingerprint = _fingerprint(inputs)
    current = store.entries().get(FALLBACK_KEY)
    if _is_current(current, fingerprint, spec, view):
        return {**current, "status": "cached"}
    label = spec.labels.label_column
    # Each partition's own window only: with a lookback, a training set also holds earlier windows'
    # rows, which the partitions of those windows hold too. Then the training sets' total order.
    storage = training_sets(spec)
    frame = pl.concat(
        [pl.read_parquet(io.BytesIO(storage.read_bytes(rel))).filter(pl.col(WINDOW_COL) == key.window) for key, rel, _ in inputs],
        how="vertical_relaxed",
    )
    frame = frame.sort(*label_order(spec), WINDOW_COL, nulls_last=True, maintain_order=True)
    task = resolve_task(spec, frame.schema[label])
    features = model_features(spec, view)
    categorical = categorical_features(frame, features)
    trainer = make_trainer(spec.trainer.name, spec.trainer.params, task=task, categorical=categorical)
    outcome = fit_and_evaluate(trainer, frame, features, label, spec.trainer.holdout_fraction, where="fallback model")
    entry = store.put(
        FALLBACK_KEY,
        lambda p: trainer.save(outcome.model, p),
        trainer.suffix,
        {
            **outcome.metrics,
            "task": task,
            "classes": trainer.classes(outcome.model) if task == "multiclass" else None,
            "fingerprint": fingerprint,
            "inputs": [str(k) for k, _, _ in inputs],
            "training_seconds": round(outcome.seconds, 3),
            "trainer": trainer.name,
            "feature_columns": features,
            "categorical_features": categorical,
            "run_id": run_id,
        },
    )
    return {**entry, "status": "trained"}
