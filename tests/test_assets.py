"""Full materialization through Dagster: one sub-model per partition, with its metadata."""

from __future__ import annotations

import json

from dagster import AssetKey, MultiPartitionKey

from retrain_plugins.dagster.assets import asset_keys
from retrain_plugins.dagster.execution import retraining_assets
from retrain_plugins.layout import model_store_root, training_set_path
from retrain_plugins.partitions import PartitionKey, all_partitions
from retrain_plugins.store import ModelStore


def _metadata_by_partition(result, asset: str) -> dict[PartitionKey, dict]:
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key == AssetKey(["churn", asset]):
            out[PartitionKey.from_dagster(mat.partition)] = {k: v.value for k, v in mat.metadata.items()}
    return out


def test_full_materialization_gives_one_sub_model_per_partition(project):
    from retrain_plugins.dagster.execution import materialize_all

    result = materialize_all(project.defs, project.spec, project.instance)
    assert result.success
    partitions = all_partitions(project.spec)
    assert len(partitions) == 12

    sets = _metadata_by_partition(result, "training_set")
    models = _metadata_by_partition(result, "sub_model")
    assert set(sets) == set(models) == set(partitions)
    for key in partitions:
        meta = models[key]
        assert meta["status"] == "trained"
        assert meta["reason"] == "manual"
        assert meta["rows"] == sets[key]["rows"] > 15
        assert meta["fingerprint"] == sets[key]["fingerprint"]
        assert 0.0 <= meta["auc_holdout"] <= 1.0
        assert meta["feature_service"] == "churn_model_v1"
        assert meta["strategy"] == "refit"

    entries = ModelStore(model_store_root(project.spec)).entries()
    assert set(entries) == set(partitions)
    for key, entry in entries.items():
        assert entry["rows"] == models[key]["rows"]
        assert (model_store_root(project.spec) / entry["path"]).stat().st_size == entry["size_bytes"]

    bundle = json.loads((model_store_root(project.spec) / "bundle.json").read_text())
    assert sorted(bundle["routes"]) == ["east", "north", "south", "west"]
    assert all(len(v) == 3 for v in bundle["routes"].values())

    # Dagster itself records every partition as materialized.
    materialized = project.instance.get_materialized_partitions(AssetKey(["churn", "sub_model"]))
    assert {PartitionKey.from_dagster(k) for k in materialized} == set(partitions)
    assert MultiPartitionKey({"window": "2025-01-01", "cohort": "east"}) in materialized


def test_refit_on_same_data_is_deterministic(materialized):
    """Materializing a partition again gives a model with identical predictions (CatBoost seeded)."""
    import polars as pl
    from dagster import materialize

    from retrain_plugins.layout import training_set_path
    from retrain_plugins.trainers import make_trainer

    key = PartitionKey("2025-02-01", "south")
    before = materialized.models()[key]
    assets = retraining_assets(materialized.defs, materialized.spec)
    result = materialize(
        assets,
        instance=materialized.instance,
        resources=materialized.defs.resources,
        partition_key=str(key.to_dagster()),
        selection=[asset_keys(materialized.spec)[n] for n in ("training_set", "sub_model")],
    )
    assert result.success
    after = materialized.models()[key]
    trainer = make_trainer("catboost")
    store = ModelStore(model_store_root(materialized.spec))
    frame = pl.read_parquet(training_set_path(materialized.spec, key)).select(before["feature_columns"])
    p_before = trainer.predict_proba(trainer.load(store.path_of(before)), frame)
    p_after = trainer.predict_proba(trainer.load(store.path_of(after)), frame)
    assert (p_before == p_after).all()
    assert after["fingerprint"] == before["fingerprint"]
    assert store.history(key)[-1]["sha256"] == before["sha256"]


def test_one_step_materializes_both_assets_and_each_alone(materialized):
    """training_set and sub_model share a step; selecting one of them runs only its half."""
    from dagster import materialize

    spec, keys = materialized.spec, asset_keys(materialized.spec)
    key = PartitionKey("2025-03-01", "east")
    assets = retraining_assets(materialized.defs, spec)

    def run(*names: str):
        result = materialize(
            assets,
            instance=materialized.instance,
            resources=materialized.defs.resources,
            partition_key=str(key.to_dagster()),
            selection=[keys[n] for n in names],
        )
        assert result.success
        steps = {e.step_key for e in result.all_events if e.is_step_success}
        done = sorted(e.materialization.asset_key.path[-1] for e in result.get_asset_materialization_events())
        return steps, done

    assert run("training_set", "sub_model") == ({"churn__train"}, ["sub_model", "training_set"])
    training_set = training_set_path(spec, key)
    stamp = training_set.stat().st_mtime_ns
    before = materialized.models()[key]
    assert run("sub_model") == ({"churn__train"}, ["sub_model"])
    assert training_set.stat().st_mtime_ns == stamp  # trained from the stored set, nothing retrieved
    assert materialized.models()[key]["fingerprint"] == before["fingerprint"]
    trained = materialized.models()[key]
    assert run("training_set") == ({"churn__train"}, ["training_set"])
    assert training_set.stat().st_mtime_ns != stamp  # retrieved again...
    assert materialized.models()[key] == trained  # ...and nothing trained


def test_regression_runs_check_rmse_against_a_ceiling_and_bad_amounts_fail_by_file(make_project):
    import polars as pl
    from dagster import materialize

    from retrain_plugins.dagster.execution import materialize_all
    from retrain_plugins.demo.generate import write_parquet

    from .helpers import amounts, relabel

    project = make_project("regression", gate={"enabled": False, "metric_bound": 0.01})
    relabel(project, amounts)
    result = materialize_all(project.defs, project.spec, project.instance)
    assert result.success
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "holdout_metric_floor"]
    assert not check.passed and check.metadata["metric"].value == "rmse" and check.metadata["bound"].value == 0.01
    assert check.description == "0 of 12 sub-models in this run: RMSE at most 0.01"
    path = project.data / "sources/labels/month=2025-01/part-0.parquet"
    frame = pl.read_parquet(path)
    write_parquet(frame.with_columns(pl.when(pl.col("region") == "south").then(float("inf")).otherwise(pl.col("churned")).alias("churned")), path)
    key = PartitionKey("2025-01-01", "south")
    run = materialize(
        retraining_assets(project.defs, project.spec),
        instance=project.instance,
        resources=project.defs.resources,
        partition_key=str(key.to_dagster()),
        selection=[asset_keys(project.spec)[n] for n in ("training_set", "sub_model")],
        raise_on_error=False,
    )
    failure = run.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert f"partition {key}: label column 'churned' has" in failure and "null or non-finite values" in failure
    assert f"label files with null or non-finite values in column 'churned': ['{path}']" in failure
