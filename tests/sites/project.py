"""The "sites" retraining for a project folder: ``feature_repo/`` next to generated ``data/``.

:func:`sites_spec` declares the retraining (two join keys, the site as cohort, label-row features,
a regression or multiclass target); :func:`new_sites_project` builds a throw-away project.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from retrain_plugins.spec import RetrainingSpec

from .generate import SitesConfig, generate

FEATURE_REPO = Path(__file__).resolve().parent / "feature_repo"
TARGETS = {"regression": "demand", "multiclass": "level"}
SITES_TRAINER: dict[str, Any] = {"name": "catboost", "params": {"iterations": 25, "depth": 4}}


def sites_spec(root: Path, task: str = "regression", config: SitesConfig = SitesConfig(), **overrides: Any) -> RetrainingSpec:
    """The sites spec for a project at ``root``, monthly windows covering ``config``'s months.

    Args:
        root: Project folder holding ``feature_repo/`` and ``data/``.
        task: "regression" (label ``demand``) or "multiclass" (label ``level``).
        config: The generated world.
        **overrides: Top-level spec fields; dicts are merged one level deep.

    Returns:
        The validated spec, paths resolved against ``root``.
    """
    if task not in TARGETS:
        raise ValueError(f"task must be one of {sorted(TARGETS)}, got {task!r}")
    raw: dict[str, Any] = {
        "name": "sites",
        "feature_repo": "feature_repo",
        "feature_service": "sites_model",
        "data_dir": "data",
        "labels": {
            "path": "sources/events/*/*.parquet",
            "entity_columns": {"site_id": "site", "device_id": "device"},
            "timestamp_column": "event_time",
            "label_column": TARGETS[task],
            "cohort_column": "site",
            "feature_columns": ["hour_of_day", "event_kind"],
        },
        "windows": {
            "granularity": "monthly",
            "start": config.month_start(0).date().isoformat(),
            "end": config.month_start(config.months).date().isoformat(),
            "lookback": 1,
        },
        "cohorts": list(config.sites),
        "task": task,
        "trainer": SITES_TRAINER,
        "gate": {"enabled": False},
    }
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return RetrainingSpec.model_validate(raw).resolve(root)


def copy_feature_repo(root: Path) -> Path:
    """Copy the sites Feast repo to ``root/feature_repo`` (its sources then read ``root/data``)."""
    target = Path(root) / "feature_repo"
    shutil.copytree(FEATURE_REPO, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def new_sites_project(
    root: Path, config: SitesConfig = SitesConfig(), task: str = "regression", **overrides: Any
) -> tuple[Path, RetrainingSpec]:
    """Copy the Feast repo to ``root``, generate ``root/data``, ``feast apply`` in-process.

    Args:
        root: Project folder to create (may exist, must not hold ``feature_repo/``).
        config: The world to generate.
        task: "regression" or "multiclass", see :func:`sites_spec`.
        **overrides: Spec overrides, see :func:`sites_spec`.

    Returns:
        ``(root, spec)``.
    """
    from retrain_plugins import apply_feature_repo

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    copy_feature_repo(root)
    generate(root / "data", config)
    spec = sites_spec(root, task, config, **overrides)
    apply_feature_repo(spec.feature_repo, in_process=True)
    return root, spec
