"""The routed bundle in MLflow: one pyfunc model version per published ``bundle.json``.

:func:`sync_bundle` reconciles the sub-models the bundle routes to (their versions and aliases,
:meth:`Registry.sync_sub_models <retrain_plugins.mlflow.registry.Registry.sync_sub_models>`),
then logs the bundle with a copy of each routed artifact (checksums verified) as the
``routed_model`` pyfunc (``model_code/routed.py``) and moves the serving alias to its version.
Imported only when a resource's method runs, like :mod:`retrain_plugins.mlflow.registry`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature

from retrain_plugins.mlflow.pyfunc import STORE_ARTIFACT
from retrain_plugins.mlflow.registry import Registry, RegistryError
from retrain_plugins.mlflow.runs import register, routed_signature
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.routing import BUNDLE

__all__ = ["sync_bundle"]


def _bundle_signature(registry: Registry, bundle: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> ModelSignature | None:
    if not registry.settings.signature:
        return None
    columns = [bundle["cohort_column"], *bundle["feature_columns"]]
    for entry in reversed(entries):  # the newest routed training set that is there
        sample = registry.training_sample(PartitionKey(entry["window"], entry["cohort"]), columns)
        if sample is not None and sample.height:
            return routed_signature(bundle, sample, registry.spec.labels.timestamp_column)
    return None


def sync_bundle(registry: Registry, bundle: Mapping[str, Any]) -> dict[str, Any]:
    """Reconcile the routed sub-models (:meth:`Registry.sync_sub_models`), then log and register ``bundle``."""
    entries = [e for routed in bundle["routes"].values() for e in routed]
    synced = registry.sync_sub_models(entries)
    out: dict[str, Any] = {
        "mlflow_sub_models": registry.settings.sub_models(registry.spec),
        "mlflow_sub_models_logged_now": sum(s["mlflow_logged_now"] for s in synced.values()),
    }
    if not registry.settings.log_bundle:
        return out
    name = registry.settings.bundle_model(registry.spec)
    body = json.dumps(bundle, indent=1, sort_keys=True).encode()  # bundle.json's bytes (routing.publish_bundle)
    files = [*entries, *([bundle["fallback"]] if bundle.get("fallback") else [])]
    tags = {
        "retraining": registry.spec.name,
        "bundle_sha256": hashlib.sha256(body).hexdigest(),
        "published_at": str(bundle.get("published_at")),
        "task": str(bundle.get("task")),
        "store": registry.store.storage.uri(),
    }
    try:
        model = registry.registered_model(
            name,
            f"The routed model of the retraining {registry.spec.name!r} (retrain_plugins RoutedModel as a pyfunc): "
            f"one version per published bundle; alias {registry.settings.alias} is the bundle serving.",
        )
        with tempfile.TemporaryDirectory(prefix="retrain-mlflow-bundle-") as tmp:
            root = Path(tmp) / STORE_ARTIFACT
            root.mkdir()
            (root / BUNDLE).write_bytes(body)
            for entry in files:
                target = root / entry["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(registry.store.verified_path(dict(entry)), target)
            run_id, model_id = registry.log_model(
                run_name=f"{registry.spec.name} bundle",
                name="routed_model",
                code="routed.py",
                artifacts={STORE_ARTIFACT: str(root)},
                params={"trainer": bundle.get("trainer"), "task": bundle.get("task"), "min_rows": bundle.get("min_rows"),
                        "cohort_column": bundle.get("cohort_column")},
                metrics={"sub_models": float(len(entries)), "cohorts": float(len(bundle["routes"])),
                         "fallback": float(bool(bundle.get("fallback")))},
                tags=tags,
                signature=_bundle_signature(registry, bundle, entries),
                trainer=str(bundle.get("trainer")),
            )
        routed = {key: s["mlflow_version"] for key, s in synced.items()}
        registry.client.log_dict(run_id, {"sub_model": out["mlflow_sub_models"], "versions": routed}, "routed_versions.json")
        version = register(registry.client, name, run_id, model_id, tags)
        if str(model.aliases.get(registry.settings.alias)) != str(version.version):
            registry.client.set_registered_model_alias(name, registry.settings.alias, version.version)
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"{registry.where()}: bundle of {registry.spec.name} not registered: {exc}") from exc
    return {
        **out,
        "mlflow_bundle_model": name,
        "mlflow_bundle_version": int(version.version),
        "mlflow_bundle_uri": f"models:/{name}@{registry.settings.alias}",
        "mlflow_run_id": run_id,
    }
