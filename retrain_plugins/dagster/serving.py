"""Serving-side assets: ``fallback_model``, the ``model_bundle`` the router reads, ``online_features``.

Also what the training step publishes itself when some of its partitions failed
(:func:`publish_despite_failures`): serving never waits for every partition to succeed.
"""

from collections.abc import Iterator, Mapping
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from retrain_plugins.bundle import publish, read_bundle, smoke_test
from retrain_plugins.dagster.bundle_update import bundle_update, run_outcomes, update_metadata
from retrain_plugins.dagster.metadata import as_metadata, auc_table, trainer_kind
from retrain_plugins.dagster.resources import feast_resource_key
from retrain_plugins.errors import DataError
from retrain_plugins.mlflow import MLflowRegistryResource, mlflow_resource_key, registry_of
from retrain_plugins.fallback import train_fallback
from retrain_plugins.online import materialize_online
from retrain_plugins.feast_view import FeatureServiceView, load_feature_service_view
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.spec import RetrainingSpec


def build_serving_assets(
    spec: RetrainingSpec, training_set: AssetKey, sub_model: AssetKey, *, mlflow: bool = False
) -> tuple[AssetsDefinition, AssetsDefinition, AssetsDefinition]:
    """``fallback_model``, ``model_bundle`` and ``online_features`` of one retraining (``model_bundle``
    requiring the retraining's MLflow registry with ``mlflow=True``)."""
    prefix = [spec.name]
    code_version = spec.definition_version()

    @asset(
        name="online_features",
        key_prefix=prefix,
        deps=[training_set],  # never beside a retrieval in the same run (see online.registry_lock)
        group_name=spec.name,
        kinds={"feast", "sqlite"},
        required_resource_keys={feast_resource_key(spec)},
        # Feast's materialize rewrites a file registry: the registry lock serializes it on one
        # host; limit this pool to 1 (`dagster instance concurrency set feast_materialize 1`) to
        # serialize it across hosts.
        pool="feast_materialize",
        description=(
            f"Feast online store (SQLite) holding the newest values of `{spec.feature_service}`'s "
            "features, for `retrain predict --entities`. Loads only from the earliest row of newly "
            "added feature files when nothing else changed, else the whole range. Writes are "
            "serialized by a registry lock."
        ),
    )
    def online_features(context: AssetExecutionContext) -> MaterializeResult:
        view = load_feature_service_view(spec)
        feast = getattr(context.resources, feast_resource_key(spec))
        return MaterializeResult(metadata=as_metadata(materialize_online(spec, view, feast.store())))

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
        try:
            meta = train_fallback(spec, load_feature_service_view(spec), context.run.run_id)
        except DataError as exc:
            # A partition whose data is unusable (its own run failed, by name) must not stop the
            # bundle for everyone: the current fallback keeps serving, and this says why.
            context.log.warning(f"fallback model not refitted, the current one serves: {exc}")
            meta = {"status": "kept: its inputs include unusable training sets", "error": str(exc)}
        context.log.info(f"fallback model: {meta['status']}")
        return MaterializeResult(metadata=as_metadata(meta))

    @asset(
        name="model_bundle",
        key_prefix=prefix,
        deps=[sub_model, fallback_model],
        group_name=spec.name,
        code_version=code_version,
        check_specs=[AssetCheckSpec("routed_models_serve", asset=[*prefix, "model_bundle"])],
        required_resource_keys={mlflow_resource_key(spec)} if mlflow else set(),
        description=(
            "The routing table the RoutedModel serves from: each cohort's sub-models by window, and "
            "the fallback. Checked: every routed model loads (checksum verified) and predicts. Shows "
            "a heatmap of the holdout metric with this update's retrained partitions outlined, and "
            "per update the partitions retrained, skipped, rejected and the training seconds avoided."
        ),
    )
    def model_bundle(context: AssetExecutionContext) -> MaterializeResult:
        outcomes = run_outcomes(context, sub_model)  # what this run's training step recorded
        metadata, failures, served = publish_model_bundle(
            spec, load_feature_service_view(spec), outcomes, registry=registry_of(context, spec)
        )
        return MaterializeResult(
            metadata=metadata,
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


def publish_model_bundle(
    spec: RetrainingSpec,
    view: FeatureServiceView,
    outcomes: Mapping[PartitionKey, Mapping[str, Any]] | None = None,
    registry: MLflowRegistryResource | None = None,
) -> tuple[dict[str, Any], list[str], int]:
    """Publish ``bundle.json`` and smoke-test what it routes to: (metadata, failures, models served).

    The body of the ``model_bundle`` asset, also called by the training step of a run in which
    some partitions failed (see :func:`publish_despite_failures`). ``outcomes`` are what this run
    recorded per sub-model partition (for the rejected and failed counts of the update). With a
    ``registry`` the published bundle is then logged and registered in MLflow (a registry that
    fails raises a ``RegistryError`` naming it, after ``bundle.json`` is written: serving never
    waits for MLflow).
    """
    previous = read_bundle(spec)
    bundle = publish(spec, view)
    failures = smoke_test(spec, previous=previous)
    served = sum(len(v) for v in bundle["routes"].values()) + (1 if bundle["fallback"] else 0)
    metadata = {
        "sub_models": sum(len(v) for v in bundle["routes"].values()),
        "cohorts": MetadataValue.json(sorted(bundle["routes"])),
        "fallback": MetadataValue.json(
            {k: bundle["fallback"].get(k) for k in ("path", "rows", "metric", "metric_holdout", "auc_holdout")}
            if bundle["fallback"]
            else None
        ),
        "holdout_auc": MetadataValue.md(auc_table(bundle["routes"])),
        **update_metadata(spec, bundle, bundle_update(previous, bundle, outcomes or {})),
    }
    if registry is not None:
        metadata |= registry.on_bundle_published(spec, bundle)
    return metadata, failures, served


def publish_despite_failures(
    context: AssetExecutionContext,
    spec: RetrainingSpec,
    view: FeatureServiceView,
    results: dict[str, dict],
    sub_model_key: AssetKey,
    checks: list[AssetCheckResult],
) -> Iterator[AssetMaterialization | AssetCheckResult]:
    """Record the partitions that did not fail, publish serving, then fail the step naming the failed ones.

    Why here, in the training step: a failed step makes Dagster abandon every downstream step of
    the run (``fallback_model`` and ``model_bundle`` depend on this one), and none of Dagster's
    own levers fixes that for our runs. Output ``is_required=False``/``skippable`` only lets a
    step *skip* downstream steps; a blocking asset check blocks them; yielding results and then
    raising still fails the step; the executor's ``step_dependency_config:
    {require_upstream_step_success: false}`` would start the serving steps as soon as the
    ``training_set`` output exists (beside the sub-model fits, which PITFALLS forbids on 2
    cores), needs executor config in every deployment, and is ignored by ``materialize()``; a
    run-failure sensor or a serving-only run requested by the change sensor costs a second run
    (seconds of launch, see PITFALLS) and only works with the daemon. So the step itself does
    what those two steps would have: refit the fallback if its inputs changed and publish the
    bundle, with the same functions, and reports each as a materialization of its asset (so
    Dagster's records match the files), when the run selected them and something was promoted.
    The sub-model is recorded per partition (``AssetMaterialization(partition=...)``) for the
    partitions that did not fail only: a failed partition is not shown as materialized. Then the
    step raises, so the run is failed and names the failed partitions and why.

    :func:`retrain_plugins.bundle.bundle_is_stale` is the net under this (a crash between a
    promotion and the publication, a run that selected only the partitioned assets): the change
    sensor can request a serving-only run when it is true.
    """
    failed = [r for r in results.values() if r["status"] == "failed"]
    for partition_key, meta in results.items():
        if meta["status"] != "failed":
            yield AssetMaterialization(asset_key=sub_model_key, partition=partition_key, metadata=as_metadata(meta))
    yield from checks
    # What this run materializes: the job's assets (materialize() builds a job of the selection),
    # narrowed by the run's selection when it has one (a daemon-launched run of the asset job).
    selection = set(context.job_def.asset_layer.selected_asset_keys)
    if context.run.asset_selection:
        selection &= set(context.run.asset_selection)
    keys = {name: AssetKey([spec.name, name]) for name in ("fallback_model", "model_bundle")}
    published = []
    if any(r["status"] == "trained" for r in results.values()):
        if spec.fallback.enabled and keys["fallback_model"] in selection:
            try:
                meta = train_fallback(spec, view, context.run.run_id)
            except DataError as exc:  # it reads the failed partitions' training sets too
                published.append(f"no fallback refit, the current one serves ({exc})")
            else:
                yield AssetMaterialization(asset_key=keys["fallback_model"], metadata=as_metadata(meta))
                published.append(f"fallback model ({meta['status']})")
        if keys["model_bundle"] in selection:
            outcomes = {PartitionKey.from_dagster(k): m for k, m in results.items()}
            metadata, problems, served = publish_model_bundle(spec, view, outcomes, registry=registry_of(context, spec))
            note = {"published_by": "training step (some partitions failed)", "smoke_test_failures": MetadataValue.json(problems)}
            yield AssetMaterialization(asset_key=keys["model_bundle"], metadata={**metadata, **note})
            published.append(f"bundle ({served - len(problems)} of {served} routed models serve)")
    trained = sum(r["status"] == "trained" for r in results.values())
    raise Failure(
        description=f"{len(failed)} of {len(results)} partition(s) failed: " + "; ".join(r["error"] for r in failed)
        + f". {trained} promoted; published: {', '.join(published) or 'nothing'}",
        metadata={"failed": MetadataValue.json([r["partition"] for r in failed]), "published": MetadataValue.json(published)},
    )
