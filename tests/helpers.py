"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from retrain_plugins import RetrainingSpec
from retrain_plugins.demo.generate import DemoConfig
from retrain_plugins.demo.project import demo_spec

COHORTS = ("east", "north", "south", "west")
TEST_DEFAULTS = {
    "trainer": {"name": "catboost", "params": {"iterations": 25, "depth": 4}},
    # Test partitions hold ~40 rows: their holdout AUC is too noisy for a gate; gate tests turn it on.
    "gate": {"enabled": False},
}


def make_spec(root: Path, **overrides) -> RetrainingSpec:
    """The demo spec at test size: 3 months (2025-01..03) x 4 cohorts, small CatBoost models."""
    merged = dict(TEST_DEFAULTS)
    for key, value in overrides.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and key in merged else value
    return demo_spec(root, DemoConfig(cohorts=COHORTS, months=3), **merged)
