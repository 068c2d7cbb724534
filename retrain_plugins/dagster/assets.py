"""Asset factory: ``training_set`` and ``sub_model`` per (window, cohort); serving assets beside.

Both partitioned assets use one shared partitions definition and a single-run backfill policy, so
a range (a cohort over months, a month over cohorts) is one run, not N process start-ups, and one
step (a subsettable multi-asset) materializes both. The default IO manager cannot persist
multi-partition outputs, so artifacts go through our own stores and each asset yields a
``MaterializeResult``, with metadata recorded per partition key. The training step's inline
checks over the sub-models it trained are :mod:`retrain_plugins.dagster.run_checks`.
"""


from typing import NamedTuple

from dagster import (
    AssetObservation,
    AssetChecksDefinition,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from retrain_plugins.changes.state import StateStore
from retrain_plugins.dagster.resources import FeastResource, feast_resource_key
from retrain_plugins.dagster.metadata import as_metadata, column_schema, trainer_kind
from retrain_plugins.dagster.observations import build_source_checks
from retrain_plugins.dagster.run_checks import check_specs, run_checks
from retrain_plugins.dagster.serving import build_serving_assets, publish_despite_failures
from retrain_plugins.dagster.tags import SEQ_TAG, RequestLookup
from retrain_plugins.errors import DataError
from retrain_plugins.feast_view import FeatureServiceView, load_feature_service_view
from retrain_plugins.labels import blank_cohort_rows
from retrain_plugins.layout import model_store, state_path
from retrain_plugins.mlflow import mlflow_resource_key, register_promoted
from retrain_plugins.partitions import PartitionKey, partitions_def, windows
from retrain_plugins.sources import validate_sources
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.sql import listings_held
from retrain_plugins.trainers import check_trainer_spec
from retrain_plugins.training import build_training_set, train_sub_model


class RetrainingAssets(NamedTuple):
    training: AssetsDefinition  # one step, two assets: ``training_set`` and ``sub_model``
    fallback_model: AssetsDefinition
    model_bundle: AssetsDefinition
    online_features: AssetsDefinition
    sources: tuple[AssetSpec, ...] = ()
    checks: tuple[AssetChecksDefinition, ...] = ()  # ``source_files_valid`` on the sources

    @property
    def training_set_key(self) -> AssetKey:
        return next(k for k in self.training.keys if k.path[-1] == "training_set")

    @property
    def sub_model_key(self) -> AssetKey:
        return next(k for k in self.training.keys if k.path[-1] == "sub_model")

    @property
    def materializable(self) -> list[AssetsDefinition]:
        return [self.training, self.fallback_model, self.model_bundle, self.online_features]

    @property
    def all(self) -> list[AssetsDefinition | AssetSpec]:
        """What goes into ``Definitions``: the external sources, their checks and the five assets."""
        return [*self.sources, *self.checks, *self.materializable]

    @property
    def keys(self) -> list[AssetKey]:
        """What a retraining run (full, or requested by the sensor) materializes.

        The online store is refreshed in every run, so serving sees the data the models saw.
        """
        return [
            self.training_set_key,
            self.sub_model_key,
            self.fallback_model.key,
            self.model_bundle.key,
            self.online_features.key,
        ]


def source_specs(spec: RetrainingSpec) -> tuple[AssetSpec, ...]:
    """External assets for the lineage graph: the label files and the Feast feature service."""
    return (
        AssetSpec(
            key=[spec.name, "labels"],
            group_name=spec.name,
            kinds={"parquet"},
            description=f"Label rows (`{spec.labels.label_column}` per `{', '.join(spec.labels.key_columns)}` and "
            f"`{spec.labels.timestamp_column}`, cohort `{spec.labels.cohort_column}`): `{spec.label_glob}`.",
            metadata={"path": MetadataValue.path(spec.label_glob)},
        ),
        AssetSpec(
            key=[spec.name, "features"],
            group_name=spec.name,
            kinds={"feast", "duckdb"},
            description=f"Feast feature service `{spec.feature_service}` of the repo `{spec.feature_repo}` "
            "(offline store DuckDB): the features joined point-in-time into every training set.",
            metadata={"feature_repo": MetadataValue.path(str(spec.feature_repo))},
        ),
    )


def build_retraining_assets(spec: RetrainingSpec, *, mlflow: bool = False) -> RetrainingAssets:
    """The five assets of one retraining, keyed ``<spec.name>/<asset>`` (the two partitioned ones in one step).

    With ``mlflow=True`` the training step and ``model_bundle`` require the retraining's MLflow
    registry (resource key ``<name>_mlflow``, see :mod:`retrain_plugins.mlflow`).
    """
    registry_keys = {mlflow_resource_key(spec)} if mlflow else set()
    parts = partitions_def(spec)
    code_version = spec.definition_version()
    sources = source_specs(spec)

    training_set_key, sub_model_key = asset_keys(spec)["training_set"], asset_keys(spec)["sub_model"]
    checks = check_specs(sub_model_key)

    # One step materializes both assets: a Dagster step has a fixed price (compute-log capture
    # processes, event writes, input data-version queries; ~0.15 s on a local sqlite instance), paid
    # per run, which is what a one-partition update mostly is. Both stay separate assets in the
    # graph, with their own metadata, lineage and partitions; selecting only one runs only its half.
    @multi_asset(
        name=f"{spec.name}__train",
        specs=[
            AssetSpec(
                training_set_key,
                deps=list(sources),
                group_name=spec.name,
                code_version=code_version,
                kinds={"feast", "duckdb"},
                skippable=True,
                description=(
                    f"Point-in-time training set of one (window, cohort) from Feast feature service "
                    f"`{spec.feature_service}`: cohort labels in windows w-{spec.windows.lookback - 1}..w."
                ),
            ),
            AssetSpec(
                sub_model_key,
                deps=[training_set_key],
                group_name=spec.name,
                code_version=code_version,
                kinds={trainer_kind(spec)},
                skippable=True,
                description=(
                    f"One `{spec.trainer.name}` sub-model per (window, cohort), fitted on its training set, "
                    "evaluated on a time-based holdout and promoted atomically into the model store."
                ),
            ),
        ],
        check_specs=checks,
        partitions_def=parts,
        backfill_policy=BackfillPolicy.single_run(),
        can_subset=True,
        required_resource_keys={feast_resource_key(spec), *registry_keys},
        pool=f"retrain_{spec.name}",
    )
    def training(context: AssetExecutionContext):
        check_trainer_spec(spec)
        view = load_feature_service_view(spec)
        selected = context.selected_asset_keys
        if training_set_key in selected:
            feast = getattr(context.resources, feast_resource_key(spec))
            _build_training_sets(context, spec, view, feast, training_set_key)
            yield MaterializeResult(asset_key=training_set_key)
        if sub_model_key in selected:
            results = _train_sub_models(context, spec, view, sub_model_key)
            register_promoted(context, spec, results, sub_model_key)  # MLflow, when the retraining has it
            wanted = {c.name for c in context.selected_asset_check_keys}
            evaluated = [c for c in run_checks(spec, list(results.values()), sub_model_key) if c.check_name in wanted]
            if not any(r["status"] == "failed" for r in results.values()):
                yield MaterializeResult(asset_key=sub_model_key, check_results=evaluated)
            else:
                yield from publish_despite_failures(context, spec, view, results, sub_model_key, evaluated)

    fallback_model, model_bundle, online_features = build_serving_assets(spec, training_set_key, sub_model_key, mlflow=mlflow)
    return RetrainingAssets(training, fallback_model, model_bundle, online_features, sources, build_source_checks(spec))


def _build_training_sets(
    context: AssetExecutionContext, spec: RetrainingSpec, view: FeatureServiceView, feast: FeastResource, asset_key: AssetKey
) -> None:
    """Write every partition's training set of this run (nothing if a source file is unusable)."""
    # What the change sensor last saw valid (checked then) is not read again: where the sensor's
    # state is on this host. Read only: the state is the sensor's (one writer per fact).
    seen = {k: (f.size, f.mtime_ns) for k, f in StateStore(state_path(spec)).files().items()} if state_path(spec).exists() else {}
    with listings_held():  # object-store sources: listed once for the step (see sql.listings_held)
        _build_validated(context, spec, view, feast, asset_key, seen)


def _build_validated(
    context: AssetExecutionContext,
    spec: RetrainingSpec,
    view: FeatureServiceView,
    feast: FeastResource,
    asset_key: AssetKey,
    seen: dict[tuple[str, str], tuple[int, int]],
) -> None:
    problems = validate_sources(spec, view, seen)
    if problems:  # Feast would fail on them too, less clearly; nothing is written
        raise DataError("unusable source files:\n" + "\n".join(problems.values()))
    # Only the Feast path needs the FeatureStore: the DuckDB ASOF path never imports Feast (seconds).
    store = feast.store() if spec.retrieval == "feast" else None
    refused: dict[tuple[str, ...], dict[str, int]] = {}
    all_windows = windows(spec)
    for partition_key in context.partition_keys:
        key = PartitionKey.from_dagster(partition_key)
        meta = build_training_set(spec, view, store, key)
        context.log.info(f"{key}: {meta['rows']} rows, fingerprint {meta['fingerprint']}")
        span = tuple(meta["windows"])
        if span not in refused:  # label rows of no partition (a blank cohort), once per span of this run
            refused[span] = blank_cohort_rows(spec, [w for w in all_windows if w.key in span])
            for path, n in refused[span].items():
                context.log.warning(f"{path}: {n} label row(s) with an empty cohort value in {span}: not trained")
        if refused[span]:
            meta = {**meta, "refused_blank_cohort_rows": refused[span]}
        standard = {"dagster/row_count": meta["rows"], "dagster/column_schema": column_schema(spec, view, meta["columns"])}
        context.add_asset_metadata({**as_metadata(meta), **standard}, asset_key=asset_key, partition_key=partition_key)


def _train_sub_models(
    context: AssetExecutionContext, spec: RetrainingSpec, view: FeatureServiceView, asset_key: AssetKey
) -> dict[str, dict]:
    """Train every partition of this run from its stored training set: Dagster key -> its metadata.

    What each partition's model now answers (status, fingerprint, definition, the sensor tick
    that asked) goes into this run's own records: the sub-model's materialization metadata, or,
    for a partition that failed (not materialized), an ``AssetObservation`` of it. The change
    sensor reads both back from Dagster's event log; the run never writes the sensor's state.
    A partition that fails (unusable data) is recorded as such and the others go on.
    """
    models = model_store(spec)
    seq = context.run.tags.get(SEQ_TAG)
    requested = RequestLookup(spec, context.run.tags)  # the tick's request log: any run size (tags.py)
    results = {}
    for partition_key in context.partition_keys:
        key = PartitionKey.from_dagster(partition_key)
        reason, detail, _ = requested(key)
        meta = train_sub_model(spec, view, models, key, reason, context.run.run_id, detail)
        if seq is not None:  # requested by the change sensor: its ledger counts the outcome
            meta = {**meta, "sensor_seq": int(seq)}
        context.log.info(f"{key}: {meta['status']} ({reason})")
        if meta["status"] == "failed":
            context.log_event(AssetObservation(asset_key=asset_key, partition=partition_key, metadata=as_metadata(meta)))
        else:
            context.add_asset_metadata(as_metadata(meta), asset_key=asset_key, partition_key=partition_key)
        results[partition_key] = meta
    return results


def asset_keys(spec: RetrainingSpec) -> dict[str, AssetKey]:
    names = ("training_set", "sub_model", "fallback_model", "model_bundle", "online_features")
    return {name: AssetKey([spec.name, name]) for name in names}
