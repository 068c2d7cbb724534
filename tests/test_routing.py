"""The routed model serves every cohort from its own sub-model and says which one."""

from __future__ import annotations

import polars as pl
import pytest

from retrain_plugins import RoutedModel, RoutingError, asof_training_set, load_feature_service_view
from retrain_plugins.layout import model_store_root
from retrain_plugins.partitions import windows
from retrain_plugins.store import ModelStore
from retrain_plugins.trainers import make_trainer


@pytest.fixture
def scoring_frame(materialized) -> pl.DataFrame:
    spec = materialized.spec
    return asof_training_set(spec, load_feature_service_view(spec), windows(spec), None)


def test_predicts_for_all_cohorts_and_reports_the_serving_sub_model(materialized, scoring_frame):
    model = RoutedModel.load(model_store_root(materialized.spec))
    scored = model.predict(scoring_frame)
    assert scored.height == scoring_frame.height
    assert scored["prediction"].is_between(0.0, 1.0).all()
    # without a timestamp, each cohort's newest sub-model serves
    served = dict(scored.group_by("region").agg(pl.col("served_by").unique()).iter_rows())
    assert served == {c: [f"2025-03-01/{c}"] for c in ("east", "north", "south", "west")}
    # the value is exactly that sub-model's own prediction
    store = ModelStore(model_store_root(materialized.spec))
    entry = next(e for k, e in store.entries().items() if str(k) == "2025-03-01/east")
    trainer = make_trainer("catboost")
    east = scored.filter(pl.col("region") == "east")
    direct = trainer.predict_proba(trainer.load(store.path_of(entry)), east.select(model.features))
    assert (east["prediction"].to_numpy() == direct).all()


def test_routes_by_time_to_the_window_of_each_row(materialized, scoring_frame):
    model = RoutedModel.load(model_store_root(materialized.spec))
    scored = model.predict(scoring_frame, timestamp_column="label_timestamp")
    expected = scored["window"] + "/" + scored["region"]
    assert (scored["served_by"] == expected).all()


def test_unseen_cohort_and_missing_feature_fail_clearly(materialized, scoring_frame):
    model = RoutedModel.load(model_store_root(materialized.spec))
    unseen = scoring_frame.head(3).with_columns(pl.lit("atlantis").alias("region"))
    with pytest.raises(RoutingError, match="cohort 'atlantis' has no sub-model"):
        model.predict(unseen)
    with pytest.raises(RoutingError, match=r"lacks columns \['sessions_7d'\]"):
        model.predict(scoring_frame.drop("sessions_7d"))


def test_corrupted_artifact_is_refused(materialized, scoring_frame):
    store = ModelStore(model_store_root(materialized.spec))
    entry = next(e for k, e in store.entries().items() if str(k) == "2025-03-01/north")
    path = store.path_of(entry)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    model = RoutedModel.load(store.root)
    from retrain_plugins import StoreError

    with pytest.raises(StoreError, match="corrupted"):
        model.predict(scoring_frame.filter(pl.col("region") == "north"))
