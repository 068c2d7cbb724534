"""Online prediction: Feast's SQLite online store, filled by Dagster, served through the router."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from retrain_plugins import RoutedModel, RoutingError, load_feature_service_view
from retrain_plugins.dagster.execution import retraining_assets
from retrain_plugins.feast_view import feature_store
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

    # The same features offline, as of the end of the data, through Feast's point-in-time join.
    end = datetime(2025, 3, 31, 23, 59, tzinfo=timezone.utc)
    entity_df = pd.DataFrame({"customer_id": entities, "event_timestamp": [end] * len(entities)})
    service = store.get_feature_service(spec.feature_service)
    offline = pl.from_arrow(store.get_historical_features(entity_df=entity_df, features=service).to_arrow())
    features = load_feature_service_view(spec).feature_columns
    offline = offline.sort("customer_id").select("customer_id", *features)
    assert_frame_equal(online.sort("customer_id").select("customer_id", *features), offline, check_dtypes=False)

    model = RoutedModel.load(model_store_root(spec))
    served_online = model.predict(online.sort("customer_id"))
    served_batch = model.predict(offline.with_columns(online.sort("customer_id")["region"]))
    assert served_online["prediction"].to_list() == served_batch["prediction"].to_list()
    assert served_online["served_by"].to_list() == [f"2025-03-01/{c}" for c in online.sort("customer_id")["region"]]


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
    assert "predict needs --input rows.parquet or --entities" in capsys.readouterr().err
