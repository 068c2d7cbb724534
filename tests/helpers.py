"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
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


def relabel(project, change) -> None:
    """Rewrite every label file of ``project`` with ``change(frame) -> frame`` (e.g. another label type)."""
    import polars as pl

    from retrain_plugins.demo.generate import write_parquet

    for path in sorted((project.data / "sources" / "labels").glob("*/*.parquet")):
        write_parquet(change(pl.read_parquet(path)), path)


def amounts(frame):
    """Regression labels: the churn flag becomes a float amount that also depends on the customer."""
    import polars as pl

    noise = (pl.col("customer_id").hash(seed=1) % 1000).cast(pl.Float64) / 250.0
    return frame.with_columns((pl.col("churned") * 5.0 + noise).alias("churned"))


def three_classes(frame):
    """Multiclass labels 0/1/2 (integers: set ``task: multiclass``)."""
    import polars as pl

    churned, other = pl.col("churned") == 1, pl.col("customer_id").hash(seed=2) % 2
    return frame.with_columns(pl.when(churned).then(2).otherwise(other).cast(pl.Int64).alias("churned"))


def ui_backfill(project, names: Sequence[str], partitions: Sequence[str] | None):
    """A backfill as the UI launches it (``launchPartitionBackfill``), recorded as requested; its
    daemon has created no run yet."""
    from dagster._core.execution.backfill import PartitionBackfill

    from retrain_plugins.dagster.assets import asset_keys

    selection = [key for name, key in asset_keys(project.spec).items() if name in names]
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=uuid.uuid4().hex[:8], asset_graph=project.defs.resolve_asset_graph(), partition_names=partitions,
        asset_selection=selection, backfill_timestamp=time.time(), tags={},
        dynamic_partitions_store=project.instance, all_partitions=partitions is None, title=None, description=None,
        run_config=None,
    )  # fmt: skip
    project.instance.add_backfill(backfill)
    return backfill
