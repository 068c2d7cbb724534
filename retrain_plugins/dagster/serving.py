"""Serving-side assets: ``fallback_model``, the ``model_bundle`` the router reads, ``online_features``."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from retrain_plugins.bundle import publish, read_bundle, smoke_test
from retrain_plugins.changes.detector import state_store
from retrain_plugins.dagster.metadata import as_metadata, auc_table, trainer_kind
from retrain_plugins.dagster.resources import FeastResource
from retrain_plugins.fallback import train_fallback
from retrain_plugins.online import materialize_online
from retrain_plugins.feast_view import load_feature_service_view
from retrain_plugins.spec import RetrainingSpec


def build_serving_assets(
    spec: RetrainingSpec, training_set: AssetKey, sub_model: AssetKey
) -> tuple[AssetsDefinition, AssetsDefinition, AssetsDefinition]:
    """``fallback_model``, ``model_bundle`` and ``online_features`` of one retraining."""
    prefix = [spec.name]
    code_version = spec.definition_version()

    @asset(
        name="online_features",
        key_prefix=prefix,
        deps=[training_set],  # never beside a retrieval in the same run (see online.registry_lock)
        group_name=spec.name,
        kinds={"feast", "sqlite"},
        description=(
            f"Feast online store (SQLite) holding the newest values of `{spec.feature_service}`'s "
            "features, for `retrain predict --entities`. Loads only from the earliest row of newly "
            "added feature files when nothing else changed, else the whole range. Writes are "
            "serialized by a registry lock."
        ),
    )
    def online_features(feast: FeastResource) -> MaterializeResult:
        view = load_feature_service_view(spec)
        return MaterializeResult(metadata=as_metadata(materialize_online(spec, view, feast.store(), state_store(spec))))

    @asset(
        name="fallback_model",
        key_prefix=prefix,
        deps=[training_set],
        group_name=spec.name,
        code_version=code_version,
        kinds={trainer_kind(spec)},
        description=(
            f"Global model over every cohort's newest {spec.fallback.windows} window(s); serves cohorts "
            f"with no sub-model or fewer than {spec.fallback.min_rows} rows. Refitted only when its "
            "input training sets changed."
        ),
    )
    def fallback_model(context: AssetExecutionContext) -> MaterializeResult:
        meta = train_fallback(spec, load_feature_service_view(spec), context.run.run_id)
        context.log.info(f"fallback model: {meta['status']}")
        return MaterializeResult(metadata=as_metadata(meta))

    @asset(
        name="model_bundle",
        key_prefix=prefix,
        deps=[sub_model, fallback_model],
        group_name=spec.name,
        code_version=code_version,
        check_specs=[AssetCheckSpec("routed_models_serve", asset=[*prefix, "model_bundle"])],
        description=(
            "The routing table the RoutedModel serves from: each cohort's sub-models by window, and "
            "the fallback. Checked: every routed model loads (checksum verified) and predicts."
        ),
    )
    def model_bundle() -> MaterializeResult:
        previous = read_bundle(spec)
        bundle = publish(spec, load_feature_service_view(spec))
        failures = smoke_test(spec, previous=previous)
        served = sum(len(v) for v in bundle["routes"].values()) + (1 if bundle["fallback"] else 0)
        return MaterializeResult(
            metadata={
                "sub_models": sum(len(v) for v in bundle["routes"].values()),
                "cohorts": MetadataValue.json(sorted(bundle["routes"])),
                "fallback": MetadataValue.json(
                    {k: bundle["fallback"].get(k) for k in ("path", "rows", "metric", "metric_holdout", "auc_holdout")}
                    if bundle["fallback"]
                    else None
                ),
                "holdout_auc": MetadataValue.md(auc_table(bundle["routes"])),
            },
            check_results=[
                AssetCheckResult(
                    check_name="routed_models_serve",
                    passed=not failures,
                    severity=AssetCheckSeverity.ERROR,
                    metadata={"models": served, "failures": MetadataValue.json(failures)},
                    description=f"{served - len(failures)} of {served} routed models load and predict",
                )
            ],
        )

    return fallback_model, model_bundle, online_features
