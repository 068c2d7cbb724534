"""Retrain policies: which strategy a partition is trained with, and whether the result serves.

``warm_start`` continues the current sub-model on the rows that are new since it was trained;
it is only sound when the old rows are exactly what that model saw, the features are the same,
the trainer can continue a model, and the model stays under ``max_trees``. Otherwise the
partition is refitted, and the reason is recorded. The champion/challenger gate scores the current
sub-model on the candidate's holdout rows (the newest rows of the new training set) and refuses a
candidate whose primary metric (AUC, multi-class logloss, RMSE: see :mod:`retrain_plugins.tasks`)
is worse by more than the spec's tolerance, in that metric's units.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from retrain_plugins.changes.fingerprints import frame_cells, partition_fingerprint
from retrain_plugins.columns import model_features
from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.store import ModelStore
from retrain_plugins.tasks import PRIMARY
from retrain_plugins.trainers.base import FitOutcome, Trainer, evaluate, holdout_size


class Plan(NamedTuple):
    strategy: str  # what will run: "refit" or "warm_start"
    init_model: Any
    train_from: int
    note: str  # why, when it differs from what the spec asked


def plan(
    spec: RetrainingSpec,
    view: FeatureServiceView,
    trainer: Trainer,
    models: ModelStore,
    key: PartitionKey,
    frame: pl.DataFrame,
    span: list[str],
) -> Plan:
    """Decide how to train ``key`` on ``frame`` (its new training set, in time order)."""
    wanted = spec.trainer.strategy_for(key.window, key.cohort)
    if wanted == "refit":
        return Plan("refit", None, 0, "")

    def refit(why: str) -> Plan:
        return Plan("refit", None, 0, f"warm_start not possible: {why}; refitted")

    current = models.entries().get(key)
    if not trainer.supports_warm_start:
        return refit(f"trainer {trainer.name!r} cannot continue a model")
    if current is None:
        return refit("no current sub-model")
    if not _comparable(current, trainer, spec, view):
        return refit("the trainer, the task or the features changed")
    if current.get("max_label_time") is None:
        return refit("the current sub-model does not record its last label time")
    ts = spec.labels.timestamp_column
    cutoff = datetime.fromisoformat(current["max_label_time"])
    old = frame.filter(pl.col(ts) <= cutoff)
    if partition_fingerprint(frame_cells(spec, view, old), span, key.cohort) != current["fingerprint"]:
        return refit("rows the current sub-model was trained on changed")
    n_train = frame.height - holdout_size(frame.height, spec.trainer.holdout_fraction)
    new_labels = frame[spec.labels.label_column][old.height:n_train]
    if n_train - old.height <= 0 or new_labels.n_unique() < 2:
        return refit("too few new rows outside the holdout")
    model = trainer.load(models.verified_path(current))
    if trainer.task == "multiclass":
        unknown = set(new_labels.drop_nulls().to_list()) - set(trainer.classes(model))
        if unknown:
            return refit(f"new rows hold classes {sorted(unknown, key=str)} the current sub-model does not know")
    size = trainer.size(model)
    added = int(trainer.params.get("iterations", 0))
    if size is not None and size + added > spec.trainer.max_trees:
        return refit(f"{size} + {added} trees would exceed max_trees {spec.trainer.max_trees}")
    return Plan("warm_start", model, old.height, "")


def _comparable(current: dict[str, Any], trainer: Trainer, spec: RetrainingSpec, view: FeatureServiceView) -> bool:
    """Whether the current sub-model has this trainer, task and model features (and categoricals)."""
    return (
        current.get("trainer") == trainer.name
        and current.get("task", "binary") == trainer.task
        and current.get("feature_columns") == model_features(spec, view)
        and list(current.get("categorical_features") or []) == list(trainer.categorical)
    )


class Verdict(NamedTuple):
    promote: bool
    champion_metric: float | None  # the current sub-model's primary metric on the candidate's holdout
    note: str

    @property
    def champion_auc(self) -> float | None:
        """The champion's metric (AUC for binary); kept for callers written before tasks."""
        return self.champion_metric


def gate(
    spec: RetrainingSpec,
    view: FeatureServiceView,
    trainer: Trainer,
    models: ModelStore,
    key: PartitionKey,
    outcome: FitOutcome,
) -> Verdict:
    """Champion/challenger on the candidate's holdout rows, by the task's primary metric.

    The current sub-model predicts the candidate's holdout; the candidate is refused when its
    metric is worse than the champion's by more than ``spec.gate.tolerance`` (higher is better for
    AUC, lower for logloss and RMSE).
    """
    current = models.entries().get(key)
    if not spec.gate.enabled or current is None:
        return Verdict(True, None, "")
    if not _comparable(current, trainer, spec, view):
        return Verdict(True, None, "current sub-model not comparable (trainer, task or features changed)")
    metric = PRIMARY[trainer.task]
    features, labels = outcome.holdout
    champion = trainer.load(models.verified_path(current))
    champion_value = evaluate(trainer, champion, features, labels)["metric_holdout"]
    candidate_value = outcome.metrics.get("metric_holdout")
    if champion_value is None or candidate_value is None:
        why = "holdout has a single class" if trainer.task == "binary" else "empty holdout"
        return Verdict(True, champion_value, f"{why}: no comparison")
    if not metric.better(candidate_value, champion_value, spec.gate.tolerance):
        sign, relation = ("-", "<") if metric.higher_is_better else ("+", ">")
        return Verdict(
            False,
            champion_value,
            f"candidate {metric.label} {candidate_value:.3f} {relation} current {champion_value:.3f} "
            f"{sign} tolerance {spec.gate.tolerance}",
        )
    return Verdict(True, champion_value, "")


CONSTANT = "constant predictions: no feature splits the rows"


def constant_predictions(trainer: Trainer, model: Any, features: pl.DataFrame) -> bool:
    """Whether ``model`` predicts the same thing for every row of ``features`` (its training rows).

    Such a model learnt nothing a feature can tell apart (all features null or constant in its
    partition): whatever its holdout metric (a binary AUC of exactly 0.5 passes a 0.5 floor), it
    is no better than the fallback, which at least learnt from every cohort. The test is the same
    for every task: binary probabilities, regression values, and multiclass probability rows all
    equal (up to float noise).
    """
    if features.height < 2:
        return False
    output = np.asarray(trainer.predict(model, features), dtype=np.float64)
    return bool(np.allclose(output, output[:1], rtol=1e-9, atol=1e-12))
