"""The demo retraining's spec for a project folder: ``feature_repo/`` next to generated ``data/``.

Used by the demo, the tests and the benchmarks, so that all three declare the same retraining:
the churn feature service, the generated label layout, and windows covering the generated months.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrain_plugins.demo.generate import DemoConfig
from retrain_plugins.spec import RetrainingSpec

DEMO_TRAINER: dict[str, Any] = {"name": "catboost", "params": {"iterations": 200, "depth": 6}, "holdout_fraction": 0.2}


def demo_spec(root: Path, config: DemoConfig = DemoConfig(), **overrides: Any) -> RetrainingSpec:
    """The demo spec for a project at ``root``, windows covering ``config``'s label months.

    Args:
        root: Project folder holding ``feature_repo/`` and ``data/``.
        config: The generated world.
        **overrides: Top-level spec fields; dicts are merged one level deep.
    """
    raw: dict[str, Any] = {
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
        "windows": {
            "granularity": "monthly",
            "start": config.month_start(0).isoformat(),
            "end": config.month_start(config.months).isoformat(),
            "lookback": 1,
        },
        "cohorts": list(config.cohorts),
        "trainer": DEMO_TRAINER,
    }
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return RetrainingSpec.model_validate(raw).resolve(root)
