"""Dagster resources: the Feast store (built once per process) and the model store root."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

from retrain_plugins.feast_store import feature_store
from retrain_plugins.store import ModelStore

if TYPE_CHECKING:
    from feast import FeatureStore


class FeastResource(ConfigurableResource):
    """A Feast repo. ``store()`` builds the ``FeatureStore`` once per process and reuses it."""

    repo_path: str = Field(description="Folder holding feature_store.yaml (absolute, or relative to the working directory).")

    def store(self) -> "FeatureStore":
        return feature_store(str(Path(self.repo_path).resolve()))


class ModelStoreResource(ConfigurableResource):
    """Root folder of the model stores; each retraining keeps its own store below it."""

    root: str = Field(description="Folder under which <retraining name>/ holds artifacts and per-partition records.")

    def for_retraining(self, name: str, keep_versions: int = 5) -> ModelStore:
        """The store of retraining ``name``, keeping ``keep_versions`` versions per partition."""
        return ModelStore(Path(self.root) / name, keep_versions=keep_versions)
