"""The MLflow side of :class:`~retrain_plugins.mlflow.resource.MLflowRegistryResource`: one
retraining's experiment, registered models, versions and aliases.

Imported only when a resource's method runs (``import mlflow`` costs seconds). Every call goes
through one ``MlflowClient`` built from the resource's URIs (:mod:`retrain_plugins.mlflow.runs`).
The model store stays the source of truth: a version is found again by its ``partition`` and
``sha256`` tags, so logging is idempotent, and every bundle publication re-checks each routed
sub-model's version and alias (what a crash, an unreachable server or a rollback without
``--mlflow`` left behind is repaired there). The bundle's own model is logged by
:mod:`retrain_plugins.mlflow.routed_model`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import polars as pl
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from retrain_plugins.errors import RetrainError
from retrain_plugins.layout import model_store, training_set_rel, training_sets
from retrain_plugins.mlflow.pyfunc import MODEL_ARTIFACT
from retrain_plugins.mlflow.runs import (
    MAX_TAG, library_versions, log_pyfunc, number, register, requirements, schema_of, text,
)
from retrain_plugins.partitions import PartitionKey

if TYPE_CHECKING:
    from retrain_plugins.mlflow.resource import MLflowRegistryResource
    from retrain_plugins.spec import RetrainingSpec

METRICS = ("rows", "rows_train", "rows_holdout", "rows_trained", "label_rate", "label_mean", "n_classes",
           "training_seconds", "model_size", "size_bytes")
LINEAGE = ("fingerprint", "definition", "feature_service", "feature_service_version", "reason", "gate", "strategy",
           "trainer", "task", "max_label_time", "window_start")
_MISSING = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


class RegistryError(RetrainError):
    """The MLflow tracking server or registry refused or failed a call."""


def _quoted(value: str) -> str:
    """A value in an MLflow search filter."""
    return f'"{value}"' if "'" in value else f"'{value}'"


class Registry:
    """One retraining's view of an MLflow tracking store and registry (see the module docstring)."""

    def __init__(self, settings: "MLflowRegistryResource", spec: "RetrainingSpec"):
        self.settings = settings
        self.spec = spec
        self.client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri or settings.tracking_uri)
        self.store = model_store(spec)
        self.libraries = library_versions()
        self._experiment: str | None = None

    def where(self) -> str:
        """Which MLflow, for messages."""
        return f"MLflow at {self.settings.tracking_uri}"

    # -- experiment, registered models, versions ------------------------------------------------

    def experiment_id(self) -> str:
        if self._experiment is None:
            name = self.settings.experiment_name(self.spec)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                try:
                    self._experiment = self.client.create_experiment(
                        name, artifact_location=self.settings.artifact_location, tags={"retraining": self.spec.name}
                    )
                except MlflowException:  # created meanwhile by another process
                    found = self.client.get_experiment_by_name(name)
                    if found is None:
                        raise
            if found is not None:
                self._experiment = str(found.experiment_id)
        return str(self._experiment)

    def registered_model(self, name: str, description: str) -> RegisteredModel:
        """``name``, created (with ``description``) if it does not exist yet."""
        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != _MISSING:
                raise
        try:
            return self.client.create_registered_model(name, tags={"retraining": self.spec.name}, description=description)
        except MlflowException:  # created meanwhile
            return self.client.get_registered_model(name)

    def versions(self, name: str) -> dict[tuple[str, str], ModelVersion]:
        """``name``'s versions by (``partition``, ``sha256``) tag; the newest one where several match."""
        out: dict[tuple[str, str], ModelVersion] = {}
        token = None
        while True:
            page = self.client.search_model_versions(f"name = {_quoted(name)}", page_token=token)
            for v in page:
                partition, sha256 = v.tags.get("partition"), v.tags.get("sha256")
                if partition is None or sha256 is None:
                    continue  # not one of ours
                if (partition, sha256) not in out or int(v.version) > int(out[partition, sha256].version):
                    out[partition, sha256] = v
            token = page.token
            if not token:
                return out

    # -- logging one model --------------------------------------------------------------------

    def log_model(self, *, trainer: str, tags: Mapping[str, str], **kwargs: Any) -> tuple[str, str]:
        """:func:`log_pyfunc` in this retraining's experiment, with its library versions and requirements."""
        return log_pyfunc(
            self.client,
            self.experiment_id(),
            tags={**tags, **{f"library.{k}": v for k, v in self.libraries.items()}},
            pip_requirements=requirements(trainer, self.libraries),
            metadata={"retrain_plugins": {"retraining": self.spec.name, "libraries": self.libraries, **tags}},
            **kwargs,
        )

    def training_sample(self, key: PartitionKey, columns: Sequence[str], rows: int = 50) -> pl.DataFrame | None:
        """The first rows of ``key``'s stored training set (``columns`` only), for a signature."""
        try:
            data = training_sets(self.spec).read_bytes(training_set_rel(key))
        except FileNotFoundError:
            return None
        frame = pl.read_parquet(io.BytesIO(data))
        if any(c not in frame.columns for c in columns):
            return None
        return frame.select(columns).head(rows)

    # -- sub-models ---------------------------------------------------------------------------

    def _lineage(self, key: PartitionKey, entry: Mapping[str, Any]) -> dict[str, str]:
        tags = {
            "retraining": self.spec.name,
            "partition": str(key),
            "window": key.window,
            "cohort": key.cohort,
            "sha256": entry["sha256"],
            "artifact": self.store.storage.uri(entry["path"]),
            "dagster_run_id": entry.get("run_id"),
            "change": entry.get("change"),
            **{k: entry.get(k) for k in LINEAGE},
        }
        return {k: text(v, MAX_TAG) for k, v in tags.items() if v is not None}

    def log_sub_model(self, name: str, key: PartitionKey, entry: Mapping[str, Any]) -> ModelVersion:
        """Log ``entry``'s artifact (checksum verified) as a run and register it as a version of ``name``."""
        features = list(entry.get("feature_columns") or [])
        sample = self.training_sample(key, features)
        trainer = entry.get("trainer") or self.spec.trainer.name
        tags = self._lineage(key, entry)
        params = {
            "trainer": trainer,
            "task": entry.get("task"),
            "strategy": entry.get("strategy"),
            "holdout_fraction": self.spec.trainer.holdout_fraction,
            "lookback": self.spec.windows.lookback,
            "feature_service": entry.get("feature_service"),
            "feature_service_version": entry.get("feature_service_version"),
            "metric": entry.get("metric"),
            **{f"trainer_params.{k}": v for k, v in (entry.get("trainer_params") or {}).items()},
        }
        metrics = {
            k: metric
            for k, value in entry.items()
            if (k in METRICS or k.endswith("_holdout")) and (metric := number(value)) is not None
        }
        run_id, model_id = self.log_model(
            run_name=f"{self.spec.name} {key}",
            name="sub_model",
            code="sub_model.py",
            artifacts={MODEL_ARTIFACT: str(self.store.verified_path(dict(entry)))},
            model_config={
                "trainer": trainer,
                "trainer_params": entry.get("trainer_params") or {},
                "task": entry.get("task") or "binary",
                "categorical_features": list(entry.get("categorical_features") or []),
                "feature_columns": features,
            },
            params=params,
            metrics=metrics,
            tags=tags,
            signature=ModelSignature(inputs=schema_of(sample)) if self.settings.signature and sample is not None and sample.height else None,
            trainer=trainer,
        )
        return register(self.client, name, run_id, model_id, tags)

    def sync_sub_models(self, entries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each entry registered (once) and its partition's alias on it; per partition what that is."""
        if not entries:
            return {}
        name = self.settings.sub_models(self.spec)
        try:
            model = self.registered_model(
                name,
                f"Sub-models of the retraining {self.spec.name!r}: one version per promoted (window, cohort) "
                f"model, tagged partition/window/cohort/sha256; alias {self.settings.alias}-<window>-<cohort> "
                "is the version serving that partition.",
            )
            known = self.versions(name)
            out = {}
            for entry in entries:
                key = PartitionKey(entry["window"], entry["cohort"])
                found = known.get((str(key), entry["sha256"]))
                logged_now = found is None
                if found is None:
                    found = known[(str(key), entry["sha256"])] = self.log_sub_model(name, key, entry)
                alias = self.settings.partition_alias(key)
                if str(model.aliases.get(alias)) != str(found.version):
                    self.client.set_registered_model_alias(name, alias, found.version)
                out[str(key)] = {
                    "mlflow_model": name,
                    "mlflow_version": int(found.version),
                    "mlflow_alias": alias,
                    "mlflow_run_id": found.run_id,
                    "mlflow_logged_now": logged_now,
                }
            return out
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"{self.where()}: sub-models of {self.spec.name} not registered: {exc}") from exc
