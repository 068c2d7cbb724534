"""What the training step calls after its partitions are trained (no ``mlflow`` import here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from retrain_plugins.errors import RetrainError
from retrain_plugins.mlflow.resource import registry_of

if TYPE_CHECKING:
    from dagster import AssetExecutionContext, AssetKey

    from retrain_plugins.spec import RetrainingSpec


def register_promoted(
    context: "AssetExecutionContext", spec: "RetrainingSpec", results: dict[str, dict[str, Any]], asset_key: "AssetKey"
) -> None:
    """Register this run's promoted sub-models in MLflow when ``spec`` has a registry attached.

    ``results`` maps each Dagster partition key to its training metadata (``_train_sub_models``);
    the promoted ones (status ``trained``) get what was registered (``mlflow_model``,
    ``mlflow_version``, ``mlflow_alias``, ``mlflow_run_id``) added, in ``results`` and in the
    partition's materialization metadata. A registry that fails here does not fail the step (the
    models are promoted and must be recorded as such, or the sensor would retrain them): it is a
    warning, and the ``model_bundle`` publication of the run registers what is missing, or fails
    naming the registry.
    """
    registry = registry_of(context, spec)
    promoted = [meta for meta in results.values() if meta["status"] == "trained"]
    if registry is None or not promoted:
        return
    try:
        registered = registry.on_promoted(spec, promoted)
    except RetrainError as exc:
        context.log.warning(f"{exc}; the model_bundle publication registers what is missing")
        return
    for partition_key, meta in results.items():
        if (found := registered.get(meta["partition"])) is not None:
            meta.update(found)
            context.add_asset_metadata(found, asset_key=asset_key, partition_key=partition_key)
            context.log.info(f"{meta['partition']}: MLflow {found['mlflow_model']} version {found['mlflow_version']} ({found['mlflow_alias']})")
