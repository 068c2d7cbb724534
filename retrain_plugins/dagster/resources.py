"""Dagster resources: each retraining's Feast store (built once per process).

A retraining's storage (sub-models, training sets, bundle) is not a resource: it is the spec's
``store`` (:func:`retrain_plugins.layout.storage`), which the assets, the sensor, the CLI and the
router all read, so no two of them can disagree about where a retraining's models are.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

from retrain_plugins.feast_store import feature_store
from retrain_plugins.spec import RetrainingSpec

if TYPE_CHECKING:
    from feast import FeatureStore


class FeastResource(ConfigurableResource):
    """A Feast repo. ``store()`` builds the ``FeatureStore`` once per process and reuses it."""

    repo_path: str = Field(description="Folder holding feature_store.yaml (absolute, or relative to the working directory).")

    def store(self) -> "FeatureStore":
        return feature_store(str(Path(self.repo_path).resolve()))


def feast_resource_key(spec: RetrainingSpec) -> str:
    """The resource key of ``spec``'s Feast repo: one per retraining, so retrainings on different
    repos (or two Components in one code location) never collide on a shared key."""
    return f"{spec.name}_feast"


def retraining_resources(spec: RetrainingSpec) -> dict[str, FeastResource]:
    """The resources ``spec``'s assets require, under their per-retraining keys."""
    return {feast_resource_key(spec): FeastResource(repo_path=str(spec.feature_repo))}
