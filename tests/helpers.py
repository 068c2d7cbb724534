"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from retrain_plugins import RetrainingSpec

COHORTS = ("east", "north", "south", "west")


def make_spec(root: Path, **overrides) -> RetrainingSpec:
    raw = {
        "name": "churn",
        "feature_repo": "feature_repo",
        "feature_service": "churn_model_v1",
        "data_dir": "data",
        "labels": {
            "path": "sources/labels/*/*.parquet",
            "entity_column": "customer_id",
            "timestamp_column": "label_timestamp",
            "label_column": "churned",
            "cohort_column": "region",
        },
        "windows": {"granularity": "monthly", "start": "2025-01-01", "end": "2025-04-01", "lookback": 1},
        "cohorts": list(COHORTS),
        "trainer": {"name": "catboost", "params": {"iterations": 25, "depth": 4}},
        # Test partitions hold ~40 rows: their holdout AUC is too noisy for a gate; gate tests turn it on.
        "gate": {"enabled": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return RetrainingSpec.model_validate(raw).resolve(root)
