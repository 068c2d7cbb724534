"""Asset factory: ``training_set`` and ``sub_model`` per (window, cohort), and ``model_bundle``.

Both partitioned assets use one shared partitions definition and a single-run backfill policy, so
a range (a cohort over months, a month over cohorts) is one run, not N process start-ups. The
default IO manager cannot persist multi-partition outputs, so artifacts go through our own stores
and each asset returns a ``MaterializeResult``, with metadata recorded per partition key.
"""


import json
from typing import NamedTuple

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from retrain_plugins.changes.state import StateStore
from retrain_plugins.dagster.resources import FeastResource, ModelStoreResource
from retrain_plugins.dagster.tags import detail_for, reason_for
from retrain_plugins.feast_view import load_feature_service_view
from retrain_plugins.layout import state_path
from retrain_plugins.partitions import PartitionKey, partitions_def
from retrain_plugins.routing import publish_bundle
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.training import build_training_set, train_sub_model


class RetrainingAssets(NamedTuple):
    training_set: AssetsDefinition
    sub_model: AssetsDefinition
    model_bundle: AssetsDefinition

    @property
    def partitioned(self) -> list[AssetsDefinition]:
        return [self.training_set, self.sub_model]


def _metadata(values: dict) -> dict:
    out = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, dict)):
            out[name] = MetadataValue.json(value)
        elif name == "path":
            out[name] = MetadataValue.path(value)
        else:
            out[name] = value
    return out


def build_retraining_assets(spec: RetrainingSpec) -> RetrainingAssets:
    """The three assets of one retraining, keyed ``<spec.name>/<asset>``."""
    parts = partitions_def(spec)
    prefix = [spec.name]
    code_version = spec.definition_version()

    @asset(
        name="training_set",
        key_prefix=prefix,
        partitions_def=parts,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=spec.name,
        code_version=code_version,
        kinds={"feast", "duckdb"},
        description=(
            f"Point-in-time training set of one (window, cohort) from Feast feature service "
            f"`{spec.feature_service}`: cohort labels in windows w-{spec.windows.lookback - 1}..w."
        ),
    )
    def training_set(context: AssetExecutionContext, feast: FeastResource) -> MaterializeResult:
        view = load_feature_service_view(spec)
        store = feast.store()
        for partition_key in context.partition_keys:
            key = PartitionKey.from_dagster(partition_key)
            meta = build_training_set(spec, view, store, key)
            context.log.info(f"{key}: {meta['rows']} rows, fingerprint {meta['fingerprint']}")
            context.add_asset_metadata(_metadata(meta), partition_key=partition_key)
        return MaterializeResult()

    @asset(
        name="sub_model",
        key_prefix=prefix,
        partitions_def=parts,
        backfill_policy=BackfillPolicy.single_run(),
        deps=[training_set],
        group_name=spec.name,
        code_version=code_version,
        kinds={spec.trainer.name},
        description=(
            f"One `{spec.trainer.name}` sub-model per (window, cohort), fitted on its training set, "
            "evaluated on a time-based holdout and promoted atomically into the model store."
        ),
    )
    def sub_model(context: AssetExecutionContext, model_store: ModelStoreResource) -> MaterializeResult:
        view = load_feature_service_view(spec)
        models = model_store.for_retraining(spec.name)
        state = StateStore(state_path(spec))
        for partition_key in context.partition_keys:
            key = PartitionKey.from_dagster(partition_key)
            reason = reason_for(context.run.tags, key)
            detail = detail_for(context.run.tags, key)
            meta = train_sub_model(spec, view, models, state, key, reason, context.run.run_id, detail)
            context.log.info(f"{key}: {meta['status']} ({reason})")
            context.add_asset_metadata(_metadata(meta), partition_key=partition_key)
        return MaterializeResult()

    @asset(
        name="model_bundle",
        key_prefix=prefix,
        deps=[sub_model],
        group_name=spec.name,
        code_version=code_version,
        description="The routing table the RoutedModel serves from: each cohort's sub-models by window.",
    )
    def model_bundle(model_store: ModelStoreResource) -> MaterializeResult:
        models = model_store.for_retraining(spec.name)
        bundle = publish_bundle(
            models,
            {
                "name": spec.name,
                "feature_columns": load_feature_service_view(spec).feature_columns,
                "cohort_column": spec.labels.cohort_column,
                "trainer": spec.trainer.name,
                "trainer_params": spec.trainer.params,
            },
        )
        table = _auc_table(bundle["routes"])
        return MaterializeResult(
            metadata={
                "sub_models": sum(len(v) for v in bundle["routes"].values()),
                "cohorts": MetadataValue.json(sorted(bundle["routes"])),
                "holdout_auc": MetadataValue.md(table),
                "path": MetadataValue.path(str(models.root / "bundle.json")),
            }
        )

    return RetrainingAssets(training_set, sub_model, model_bundle)


def _auc_table(routes: dict) -> str:
    windows = sorted({e["window"] for entries in routes.values() for e in entries})
    lines = ["| window | " + " | ".join(sorted(routes)) + " |", "|---" * (len(routes) + 1) + "|"]
    by = {(e["window"], c): e.get("auc_holdout") for c, entries in routes.items() for e in entries}
    for w in windows:
        cells = [f"{by[(w, c)]:.3f}" if by.get((w, c)) is not None else "-" for c in sorted(routes)]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def asset_keys(spec: RetrainingSpec) -> dict[str, AssetKey]:
    return {name: AssetKey([spec.name, name]) for name in ("training_set", "sub_model", "model_bundle")}
