"""The demo retraining for a project folder: ``feature_repo/`` next to generated ``data/``.

Used by the demo, the tests and the benchmarks, so that all three declare the same retraining
(:func:`demo_spec`: the churn feature service, the generated label layout, windows covering the
generated months) and build throw-away projects the same way (:func:`copy_feature_repo`,
:func:`open_project` -> :class:`DemoProject`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from retrain_plugins.demo.generate import DemoConfig
from retrain_plugins.layout import model_store
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.spec import RetrainingSpec

if TYPE_CHECKING:
    from dagster import DagsterInstance, Definitions

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


class DemoProject(NamedTuple):
    """A retraining project: its folder, spec, Dagster definitions and instance."""

    root: Path
    spec: RetrainingSpec
    defs: "Definitions"
    instance: "DagsterInstance"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sensor(self) -> str:
        return f"{self.spec.name}_change_sensor"

    def models(self) -> dict[PartitionKey, dict]:
        """The model store's current entries (manifest), by partition."""
        return model_store(self.spec).entries()

    def close(self) -> None:
        """Release the Dagster instance (its sqlite files, for a persistent one)."""
        self.instance.dispose()


def copy_feature_repo(source: Path, root: Path, activity_ttl_days: int | None = None) -> Path:
    """Copy the Feast repo ``source`` to ``root/feature_repo``; optionally change the activity TTL.

    The demo repo computes its source paths from its own location, so the copy reads
    ``root/data/sources``. ``activity_ttl_days`` edits the copy's ``features.py`` (benchmarks of
    long TTLs); it fails loudly if the demo's ``ttl=timedelta(days=7)`` is not there exactly once.
    """
    target = root / "feature_repo"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    if activity_ttl_days is not None:
        features = target / "features.py"
        text = features.read_text()
        needle = "ttl=timedelta(days=7)"
        if text.count(needle) != 1:
            raise RuntimeError(f"cannot find the activity view's TTL ({needle}) in {features}")
        features.write_text(text.replace(needle, f"ttl=timedelta(days={activity_ttl_days})"))
    return target


def open_project(root: Path, spec: RetrainingSpec, instance: "DagsterInstance") -> DemoProject:
    """``feast apply`` the spec's repo (in-process), build its definitions, pair them with ``instance``."""
    from retrain_plugins import apply_feature_repo, build_definitions

    apply_feature_repo(spec.feature_repo, in_process=True)
    return DemoProject(root, spec, build_definitions(spec), instance)
