"""Where a retraining keeps its files under ``spec.data_dir``."""

from __future__ import annotations

from pathlib import Path

from retrain_plugins.partitions import PartitionKey, path_segment
from retrain_plugins.spec import RetrainingSpec


def model_store_root(spec: RetrainingSpec) -> Path:
    return Path(spec.data_dir) / "models" / spec.name


def training_set_path(spec: RetrainingSpec, key: PartitionKey) -> Path:
    return (
        Path(spec.data_dir) / "training_sets" / spec.name / path_segment(key.window) / f"{path_segment(key.cohort)}.parquet"
    )


def state_path(spec: RetrainingSpec) -> Path:
    return Path(spec.data_dir) / "state" / spec.name / "state.sqlite"
