"""Online prediction: Feast's SQLite online store, filled by Dagster, served through the router."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from retrain_plugins import RoutedModel, RoutingError, load_feature_service_view
from retrain_plugins.dagster.execution import retraining_assets
from retrain_plugins.demo.generate import write_parquet
from retrain_plugins.feast_store import feature_store
from retrain_plugins.layout import model_store_root
from retrain_plugins.online import online_frame


def test_online_prediction_equals_batch_prediction_on_the_same_feature_values(materialized):
    from dagster import materialize

    spec = materialized.spec
    online_asset = retraining_assets(materialized.defs, materialized.spec, "online_features")
    assert materialize(online_asset, instance=materialized.instance, resources=materialized.defs.resources).success
    store = feature_store(str(spec.feature_repo))
    labels = pl.read_parquet(materialized.data / "sources/labels/*/*.parquet").sort("label_timestamp")
    newest = labels.group_by("customer_id").agg(pl.col("region").last()).sort("customer_id")
    picked = pl.concat([newest.filter(pl.col("region") == c).head(2) for c in ("east", "north", "south", "west")])
    entities = picked["customer_id"].to_list()
    online = online_frame(spec, store, entities)
    assert online["region"].to_list() == picked["region"].to_list()

    offline = _offline_at_end(spec, store, entities)
    features = load_feature_service_view(spec).feature_columns
    assert_frame_equal(online.sort("customer_id").select("customer_id", *features), offline, check_dtypes=False)

    model = RoutedModel.load(model_store_root(spec))
    served_online = model.predict(online.sort("customer_id"))
    served_batch = model.predict(offline.with_columns(online.sort("customer_id")["region"]))
    assert served_online["prediction"].to_list() == served_batch["prediction"].to_list()
    assert served_online["served_by"].to_list() == [f"2025-03-01/{c}" for c in online.sort("customer_id")["region"]]


def _offline_at_end(spec, store, entities) -> pl.DataFrame:
    """The features of ``entities`` as of the end of the data, through Feast's point-in-time join."""
    end = datetime(2025, 3, 31, 23, 59, tzinfo=timezone.utc)
    entity_df = pd.DataFrame({"customer_id": entities, "event_timestamp": [end] * len(entities)})
    service = store.get_feature_service(spec.feature_service)
    offline = pl.from_arrow(store.get_historical_features(entity_df=entity_df, features=service).to_arrow())
    return offline.sort("customer_id").select("customer_id", *load_feature_service_view(spec).feature_columns)


def _load_online(project) -> dict:
    """Materialize the online_features asset; return its metadata values."""
    from dagster import materialize

    online_asset = retraining_assets(project.defs, project.spec, "online_features")
    result = materialize(online_asset, instance=project.instance, resources=project.defs.resources)
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    return {name: getattr(value, "value", value) for name, value in meta.items()}


def test_the_online_store_loads_only_what_added_feature_files_add(materialized):
    spec = materialized.spec
    store = feature_store(str(spec.feature_repo))
    features = load_feature_service_view(spec).feature_columns
    entities = sorted(pl.read_parquet(materialized.data / "sources/labels/*/*.parquet")["customer_id"].unique())[:12]

    def online_matches_offline() -> pl.DataFrame:
        online = online_frame(spec, store, entities).sort("customer_id").select("customer_id", *features)
        assert_frame_equal(online, _offline_at_end(spec, store, entities), check_dtypes=False)
        return online

    assert _load_online(materialized)["mode"] == "full"  # no record of a load from these files
    assert _load_online(materialized)["mode"] == "up to date"  # nothing changed, nothing loaded
    # a late activity file: two customers' newest rows, with values no other row has
    march = materialized.data / "sources/activity/month=2025-03"
    activity = pl.read_parquet(march / "part-0.parquet")
    at = datetime(2025, 3, 31, 23, tzinfo=timezone.utc)  # after every other row, before the end
    late = (
        activity.filter(pl.col("customer_id").is_in(entities[:2]))
        .group_by("customer_id")
        .agg(pl.all().last())
        .with_columns(
            pl.lit(at).cast(activity.schema["event_timestamp"]).alias("event_timestamp"),
            pl.lit(9999).cast(activity.schema["sessions_7d"]).alias("sessions_7d"),
        )
        .select(activity.columns)
    )
    write_parquet(late, march / "part-late.parquet")
    meta = _load_online(materialized)
    assert (meta["mode"], meta["start"], meta["files_added"]) == ("added files", at.isoformat(), 1)
    assert meta["feature_views"] == ["customer_activity_fv"]  # the profile view had nothing added
    online = online_matches_offline()
    assert online.filter(pl.col("customer_id").is_in(entities[:2]))["sessions_7d"].to_list() == [9999, 9999]
    # an edited file can move an entity's newest row back in time: the whole range is loaded
    edited = late.with_columns(pl.lit(5).cast(activity.schema["sessions_7d"]).alias("sessions_7d"))
    write_parquet(edited, march / "part-late.parquet")
    assert _load_online(materialized)["mode"] == "full"
    assert online_matches_offline().filter(pl.col("customer_id").is_in(entities[:2]))["sessions_7d"].to_list() == [5, 5]
    # an online store that is gone is rebuilt whole
    (materialized.data / "feast/online_store.db").unlink()
    assert _load_online(materialized)["mode"] == "full"
    online_matches_offline()


def test_entities_without_a_known_cohort_fail_clearly(materialized):
    store = feature_store(str(materialized.spec.feature_repo))
    with pytest.raises(RoutingError, match=r"no cohort known for entities \[424242\]"):
        online_frame(materialized.spec, store, [1, 424242])


def test_predict_command_scores_entities_from_the_online_store(materialized, capsys):
    from dagster import materialize

    from retrain_plugins.cli.main import main

    online_asset = retraining_assets(materialized.defs, materialized.spec, "online_features")
    assert materialize(online_asset, instance=materialized.instance, resources=materialized.defs.resources).success
    labels = pl.read_parquet(materialized.data / "sources/labels/*/*.parquet")
    ids = labels.filter(pl.col("region") == "west")["customer_id"].unique().sort().head(3).to_list()
    spec_file = materialized.root / "spec.json"
    spec_file.write_text(materialized.spec.model_dump_json())
    assert main(["predict", "--spec", str(spec_file), "--entities", ",".join(map(str, ids))]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == ids
    assert all(r[1] == "west" and r[2] == "2025-03-01/west" and r[3] == "own_sub_model" for r in rows)
    assert all(0.0 <= float(r[4]) <= 1.0 for r in rows)
    assert main(["predict", "--spec", str(spec_file)]) == 1
    assert "predict needs --input rows.parquet, --entities id,id,... or --entity key=value" in capsys.readouterr().err
    # an entity with no label row: its cohort given (--cohorts); Feast has no features for it
    assert main(["predict", "--spec", str(spec_file), "--entities", "424242", "--cohorts", "north"]) == 0
    (row,) = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["424242"]]
    assert row[1:4] == ["north", "2025-03-01/north", "own_sub_model"]
