"""``MLflowRegistryResource``: where a retraining mirrors its promoted models in MLflow.

Importing this module does not import ``mlflow`` (seconds of start-up): the resource's methods
import :mod:`retrain_plugins.mlflow.registry` (and :mod:`~retrain_plugins.mlflow.routed_model`)
when they run, so a code location that declares the resource, and every retraining without one,
never pays for it.

How a retraining gets one: a ``Definitions`` resource under :func:`mlflow_resource_key`
(``<name>_mlflow``), given to :func:`retrain_plugins.build_definitions` with ``resources=``.
Only then do that retraining's training step and ``model_bundle`` require the key.
"""

from __future__ import annotations

import re
import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource
from pydantic import Field

from retrain_plugins.errors import RetrainError
from retrain_plugins.partitions import PartitionKey

if TYPE_CHECKING:
    from dagster import AssetExecutionContext

    from retrain_plugins.spec import RetrainingSpec

_ALIAS_CHARS = re.compile(r"[^\w-]")  # MLflow aliases: alphanumerics, "_" and "-" only
_ALIAS_MAX = 255


def mlflow_resource_key(spec: "RetrainingSpec") -> str:
    """The resource key of ``spec``'s MLflow registry: ``<name>_mlflow`` (like ``<name>_feast``)."""
    return f"{spec.name}_mlflow"


class MLflowRegistryResource(ConfigurableResource):
    """An MLflow tracking server (or store) and model registry that a retraining mirrors itself into.

    On every promotion the training step logs each promoted sub-model as an MLflow run (params,
    holdout metrics, fingerprint, feature service and version, library versions, the artifact)
    and registers it as a version of one registered model per retraining
    (``<name>_sub_models``), tagged with its partition; the alias ``<alias>-<window>-<cohort>``
    moves to it. Every ``model_bundle`` publication logs the routed bundle as a pyfunc model
    (``<name>_routed``, alias ``<alias>``) that ``mlflow.pyfunc.load_model`` serves in any process
    with ``retrain-plugins`` installed, without the original store. ``retrain rollback`` moves both
    aliases back. Nothing here is ever the source of truth: the model store is; each publication
    reconciles the registry with what the bundle routes to.
    """

    tracking_uri: str = Field(
        description="MLflow tracking URI: sqlite:///<abs path>/mlflow.db, postgresql://..., http(s)://host:5000, databricks."
    )
    registry_uri: str | None = Field(default=None, description="Model registry URI (default: the tracking URI).")
    experiment: str | None = Field(
        default=None, description="Experiment of the runs (default: retrain/<name>); created if missing."
    )
    artifact_location: str | None = Field(
        default=None,
        description=(
            "Artifact root of the experiment when this resource creates it (a folder, s3://...). Without it "
            "MLflow's default applies, which for a SQL tracking store is ./mlruns of the creating process."
        ),
    )
    sub_model_name: str | None = Field(
        default=None, description="Registered model of the sub-models (default: <name>_sub_models)."
    )
    bundle_model_name: str | None = Field(
        default=None, description="Registered model of the routed bundle (default: <name>_routed)."
    )
    alias: str = Field(
        default="champion",
        description="Alias of the serving version: the bundle's, and the stem of each partition's (<alias>-<window>-<cohort>).",
    )
    log_bundle: bool = Field(default=True, description="Log and register the routed bundle at every publication.")
    signature: bool = Field(
        default=True,
        description=(
            "Log an input signature inferred from a training set. MLflow enforces it: integer features must "
            "then be passed as integers without nulls. False: no signature, any frame RoutedModel takes."
        ),
    )

    # -- names --------------------------------------------------------------------------------

    def experiment_name(self, spec: "RetrainingSpec") -> str:
        return self.experiment or f"retrain/{spec.name}"

    def sub_models(self, spec: "RetrainingSpec") -> str:
        """The registered model holding ``spec``'s sub-model versions."""
        return self.sub_model_name or f"{spec.name}_sub_models"

    def bundle_model(self, spec: "RetrainingSpec") -> str:
        """The registered model holding ``spec``'s routed bundles."""
        return self.bundle_model_name or f"{spec.name}_routed"

    def partition_alias(self, key: PartitionKey) -> str:
        """``<alias>-<window>-<cohort>``: the alias of the version serving ``key``.

        Characters MLflow refuses in an alias (anything but letters, digits, ``_`` and ``-``)
        become ``_``, and then an 8-hex digest of the real key is appended, so two cohorts never
        share an alias.
        """
        raw = f"{self.alias}-{key.window}-{key.cohort}"
        clean = _ALIAS_CHARS.sub("_", raw)
        if clean != raw or len(clean) > _ALIAS_MAX:
            digest = hashlib.sha256(str(key).encode()).hexdigest()[:8]
            clean = f"{clean[: _ALIAS_MAX - 9]}-{digest}"
        return clean

    # -- hooks (what the assets and the CLI call) ----------------------------------------------

    def on_promoted(self, spec: "RetrainingSpec", entries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Log and register each promoted sub-model (``entries``: its store entries); move its alias.

        Returns, per partition (``str(PartitionKey)``), what was registered: the registered
        model, version, alias and run id. A version already registered for an entry (same
        partition and sha256) is reused, not logged again.
        """
        from retrain_plugins.mlflow.registry import Registry

        return Registry(self, spec).sync_sub_models(entries)

    def on_bundle_published(self, spec: "RetrainingSpec", bundle: Mapping[str, Any]) -> dict[str, Any]:
        """Reconcile the sub-models' versions and aliases with what ``bundle`` routes to, then log
        and register the bundle as a pyfunc model and move ``alias`` to it. Returns metadata."""
        from retrain_plugins.mlflow.registry import Registry
        from retrain_plugins.mlflow.routed_model import sync_bundle

        return sync_bundle(Registry(self, spec), bundle)

    def on_rollback(
        self, spec: "RetrainingSpec", key: PartitionKey, entry: Mapping[str, Any], bundle: Mapping[str, Any]
    ) -> dict[str, Any]:
        """After ``retrain rollback``: the partition's alias back to ``entry``'s version, and the
        republished ``bundle`` registered with ``alias`` on it. Returns metadata."""
        from retrain_plugins.mlflow.registry import Registry
        from retrain_plugins.mlflow.routed_model import sync_bundle

        registry = Registry(self, spec)
        return {**registry.sync_sub_models([entry])[str(key)], **sync_bundle(registry, bundle)}


def attached(spec: "RetrainingSpec", resources: Mapping[str, Any] | None) -> bool:
    """Whether ``resources`` (a ``Definitions``' resources) holds ``spec``'s MLflow registry.

    Raises:
        TypeError: ``<name>_mlflow`` holds something else than an :class:`MLflowRegistryResource`.
    """
    value = (resources or {}).get(mlflow_resource_key(spec))
    if value is None:
        return False
    if not isinstance(value, MLflowRegistryResource):
        raise TypeError(
            f"resource {mlflow_resource_key(spec)!r} must be a retrain_plugins.mlflow.MLflowRegistryResource, "
            f"not {type(value).__name__}"
        )
    return True


def registry_of(context: "AssetExecutionContext", spec: "RetrainingSpec") -> MLflowRegistryResource | None:
    """``spec``'s MLflow registry in a step that required it, else ``None`` (no registry attached)."""
    return getattr(context.resources, mlflow_resource_key(spec), None)


def from_cli(settings: Sequence[str]) -> MLflowRegistryResource | None:
    """The resource described by ``--mlflow field=value`` arguments (``None`` when there are none).

    Raises:
        RetrainError: an argument is not ``field=value`` of a resource field, or ``tracking_uri`` is missing.
    """
    if not settings:
        return None
    known = sorted(MLflowRegistryResource.model_fields)
    fields: dict[str, Any] = {}
    for item in settings:
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise RetrainError(f"--mlflow {item!r}: expected field=value, field one of {known}")
        fields[name] = value.lower() in ("1", "true", "yes") if name in ("log_bundle", "signature") else value
    if "tracking_uri" not in fields:
        raise RetrainError("--mlflow needs tracking_uri=... (the resource's tracking URI)")
    return MLflowRegistryResource(**fields)
