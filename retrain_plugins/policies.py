"""Retrain policies: which strategy a partition is trained with, and whether the result serves.

``warm_start`` continues the current sub-model on the rows that are new since it was trained;
it is only sound when the old rows are exactly what that model saw, the features are the same,
the trainer can continue a model, and the model stays under ``max_trees``. Otherwise the
partition is refitted, and the reason is recorded. The champion/challenger gate scores the current
sub-model on the candidate's holdout rows (the newest rows of the new training set) and refuses a
candidate whose AUC is lower by more than the spec's tolerance.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import polars as pl

from retrain_plugins.changes.fingerprints import frame_cells, partition_fingerprint
from retrain_plugins.feast_view import FeatureServiceView
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.store import ModelStore
from retrain_plugins.trainers.base import FitOutcome, Trainer, auc_or_none, holdout_size


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
    if current.get("trainer") != trainer.name or current.get("feature_columns") != view.feature_columns:
        return refit("the trainer or the features changed")
    if current.get("max_label_time") is None:
        return refit("the current sub-model does not record its last label time")
    ts = spec.labels.timestamp_column
    cutoff = datetime.fromisoformat(current["max_label_time"])
    old = frame.filter(pl.col(ts) <= cutoff)
    if partition_fingerprint(frame_cells(spec, view, old), span, key.cohort) != current["fingerprint"]:
        return refit("rows the current sub-model was trained on changed")
    n_train = frame.height - holdout_size(frame.height, spec.trainer.holdout_fraction)
    if n_train - old.height <= 0 or frame[spec.labels.label_column][old.height:n_train].n_unique() < 2:
        return refit("too few new rows outside the holdout")
    model = trainer.load(models.verified_path(current))
    size = trainer.size(model)
    added = int(trainer.params.get("iterations", 0))
    if size is not None and size + added > spec.trainer.max_trees:
        return refit(f"{size} + {added} trees would exceed max_trees {spec.trainer.max_trees}")
    return Plan("warm_start", model, old.height, "")


class Verdict(NamedTuple):
    promote: bool
    champion_auc: float | None
    note: str


def gate(
    spec: RetrainingSpec,
    view: FeatureServiceView,
    trainer: Trainer,
    models: ModelStore,
    key: PartitionKey,
    outcome: FitOutcome,
) -> Verdict:
    """Champion/challenger on the candidate's holdout rows."""
    current = models.entries().get(key)
    if not spec.gate.enabled or current is None:
        return Verdict(True, None, "")
    if current.get("trainer") != trainer.name or current.get("feature_columns") != view.feature_columns:
        return Verdict(True, None, "current sub-model not comparable (trainer or features changed)")
    features, labels = outcome.holdout
    champion = trainer.load(models.verified_path(current))
    champion_auc = auc_or_none(labels, trainer.predict_proba(champion, features))
    candidate_auc = outcome.metrics.get("auc_holdout")
    if champion_auc is None or candidate_auc is None:
        return Verdict(True, champion_auc, "holdout has a single class: no comparison")
    if candidate_auc < champion_auc - spec.gate.tolerance:
        return Verdict(
            False,
            champion_auc,
            f"candidate AUC {candidate_auc:.3f} < current {champion_auc:.3f} - tolerance {spec.gate.tolerance}",
        )
    return Verdict(True, champion_auc, "")
