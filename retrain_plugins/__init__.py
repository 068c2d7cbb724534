"""retrain_plugins: partial retraining of per-segment models from a Feast feature store in Dagster.

Public API; everything else is internal and may move.
"""

from retrain_plugins.changes.detector import ChangeReport, PartitionChange, detect_changes, state_store
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
from retrain_plugins.training_sets import asof_training_set, feast_training_set, partition_training_set
from retrain_plugins.validation import check_label_source

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
