"""retrain_plugins: partial retraining of per-segment models from a Feast feature store in Dagster.

Public API; everything else is internal and may move.

Names are imported on first use (PEP 562), so ``from retrain_plugins.routing import RoutedModel``
in a serving process loads the router and not Dagster, and ``import retrain_plugins`` costs
nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it.
_EXPORTS = {
    "ChangeReport": "retrain_plugins.changes.report",
    "PartitionChange": "retrain_plugins.changes.report",
    "detect_changes": "retrain_plugins.changes.detector",
    "state_store": "retrain_plugins.changes.detector",
    "frame_cells": "retrain_plugins.changes.fingerprints",
    "partition_fingerprint": "retrain_plugins.changes.fingerprints",
    "source_cells": "retrain_plugins.changes.fingerprints",
    "RetrainingAssets": "retrain_plugins.dagster.assets",
    "build_retraining_assets": "retrain_plugins.dagster.assets",
    "build_definitions": "retrain_plugins.dagster.definitions",
    "FeastResource": "retrain_plugins.dagster.resources",
    "build_change_sensor": "retrain_plugins.dagster.sensors",
    "run_requests_for": "retrain_plugins.dagster.sensors",
    "DataError": "retrain_plugins.errors",
    "RetrainError": "retrain_plugins.errors",
    "RoutingError": "retrain_plugins.errors",
    "SpecError": "retrain_plugins.errors",
    "StoreError": "retrain_plugins.errors",
    "FeatureServiceView": "retrain_plugins.feast_view",
    "load_feature_service_view": "retrain_plugins.feast_view",
    "apply_feature_repo": "retrain_plugins.feast_store",
    "PartitionKey": "retrain_plugins.partitions",
    "partitions_def": "retrain_plugins.partitions",
    "RoutedModel": "retrain_plugins.routing",
    "publish_bundle": "retrain_plugins.routing",
    "LabelSource": "retrain_plugins.spec",
    "RetrainingSpec": "retrain_plugins.spec",
    "TrainerSpec": "retrain_plugins.spec",
    "Windows": "retrain_plugins.spec",
    "Storage": "retrain_plugins.storage",
    "ModelStore": "retrain_plugins.store",
    "check_trainer": "retrain_plugins.testing",
    "Trainer": "retrain_plugins.trainers",
    "make_trainer": "retrain_plugins.trainers",
    "CatBoostTrainer": "retrain_plugins.trainers.catboost",
    "asof_training_set": "retrain_plugins.asof_join",
    "feast_training_set": "retrain_plugins.training_sets",
    "partition_training_set": "retrain_plugins.training_sets",
    "check_label_source": "retrain_plugins.validation",
}

__all__ = [
    "CatBoostTrainer",
    "ChangeReport",
    "DataError",
    "FeastResource",
    "FeatureServiceView",
    "LabelSource",
    "ModelStore",
    "PartitionChange",
    "PartitionKey",
    "RetrainError",
    "RetrainingAssets",
    "RetrainingSpec",
    "RoutedModel",
    "RoutingError",
    "SpecError",
    "Storage",
    "StoreError",
    "Trainer",
    "TrainerSpec",
    "Windows",
    "apply_feature_repo",
    "asof_training_set",
    "build_change_sensor",
    "build_definitions",
    "build_retraining_assets",
    "check_label_source",
    "check_trainer",
    "detect_changes",
    "feast_training_set",
    "frame_cells",
    "load_feature_service_view",
    "make_trainer",
    "partition_fingerprint",
    "partition_training_set",
    "partitions_def",
    "publish_bundle",
    "run_requests_for",
    "source_cells",
    "state_store",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see
    from retrain_plugins.asof_join import asof_training_set
    from retrain_plugins.changes.detector import detect_changes, state_store
    from retrain_plugins.changes.report import ChangeReport, PartitionChange
    from retrain_plugins.changes.fingerprints import frame_cells, partition_fingerprint, source_cells
    from retrain_plugins.dagster.assets import RetrainingAssets, build_retraining_assets
    from retrain_plugins.dagster.definitions import build_definitions
    from retrain_plugins.dagster.resources import FeastResource
    from retrain_plugins.dagster.sensors import build_change_sensor, run_requests_for
    from retrain_plugins.errors import DataError, RetrainError, RoutingError, SpecError, StoreError
    from retrain_plugins.feast_view import FeatureServiceView, load_feature_service_view
    from retrain_plugins.feast_store import apply_feature_repo
    from retrain_plugins.partitions import PartitionKey, partitions_def
    from retrain_plugins.routing import RoutedModel, publish_bundle
    from retrain_plugins.spec import LabelSource, RetrainingSpec, TrainerSpec, Windows
    from retrain_plugins.storage import Storage
    from retrain_plugins.store import ModelStore
    from retrain_plugins.testing import check_trainer
    from retrain_plugins.trainers import Trainer, make_trainer
    from retrain_plugins.trainers.catboost import CatBoostTrainer
    from retrain_plugins.training_sets import feast_training_set, partition_training_set
    from retrain_plugins.validation import check_label_source
