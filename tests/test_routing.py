"""The routed model serves every cohort from its own sub-model and says which one."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from retrain_plugins import ModelStore, RoutedModel, RoutingError, asof_training_set, load_feature_service_view
from retrain_plugins.dagster.execution import retraining_assets
from retrain_plugins.layout import model_store_root
from retrain_plugins.partitions import windows
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


def test_unseen_cohorts_are_served_by_the_fallback(materialized, scoring_frame):
    model = RoutedModel.load(model_store_root(materialized.spec))
    unseen = scoring_frame.head(3).with_columns(pl.lit("atlantis").alias("region"))
    mixed = model.predict(pl.concat([unseen, scoring_frame.head(2)]))
    assert mixed["route"].to_list() == ["unseen_cohort"] * 3 + ["own_sub_model"] * 2
    assert mixed["served_by"].to_list()[:3] == ["fallback"] * 3
    fallback = model.bundle["fallback"]
    assert set(fallback["inputs"]) == {f"{w}/{c}" for w in ("2025-01-01", "2025-02-01", "2025-03-01") for c in ("east", "north", "south", "west")}
    trainer = make_trainer("catboost")
    direct = trainer.predict_proba(trainer.load(ModelStore(model_store_root(materialized.spec)).verified_path(fallback)), unseen.select(model.features))
    assert (mixed["prediction"].to_numpy()[:3] == direct).all()
    with pytest.raises(RoutingError, match=r"lacks columns \['sessions_7d'\]"):
        model.predict(scoring_frame.drop("sessions_7d"))


def test_small_sub_models_defer_to_the_fallback_and_no_fallback_is_a_clear_error(make_project):
    from retrain_plugins.dagster.execution import materialize_all

    project = make_project(fallback={"min_rows": 1000, "windows": 1})
    assert materialize_all(project.defs, project.spec, project.instance).success
    model = RoutedModel.load(model_store_root(project.spec))
    frame = asof_training_set(project.spec, load_feature_service_view(project.spec), windows(project.spec)[-1:], None)
    scored = model.predict(frame)
    assert set(scored["route"]) == {"too_small"} and set(scored["served_by"]) == {"fallback"}
    assert model.bundle["fallback"]["inputs"] == [f"2025-03-01/{c}" for c in ("east", "north", "south", "west")]

    without = make_project("nofallback", fallback={"enabled": False})
    assert materialize_all(without.defs, without.spec, without.instance).success
    model = RoutedModel.load(model_store_root(without.spec))
    with pytest.raises(RoutingError, match="cohort 'atlantis' has no usable sub-model \\(unseen_cohort\\) and there is no fallback"):
        model.predict(frame.head(2).with_columns(pl.lit("atlantis").alias("region")))


def test_the_fallback_is_cached_when_its_inputs_did_not_change(materialized):
    from retrain_plugins.dagster.execution import execute, tick
    from retrain_plugins.demo import scenarios

    store = ModelStore(model_store_root(materialized.spec) / "_fallback")
    (before,) = store.entries().values()
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []
    scenarios.rewrite_identical(materialized.data, "labels", "2025-02")
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []
    from dagster import materialize

    fallback_asset = retraining_assets(materialized.defs, materialized.spec, "fallback_model")
    again = materialize(fallback_asset, instance=materialized.instance, resources=materialized.defs.resources)
    (event,) = again.get_asset_materialization_events()
    assert event.event_specific_data.materialization.metadata["status"].value == "cached"
    assert store.entries() == {k: before for k in store.entries()}
    scenarios.edit_rows(materialized.data, "2025-02", "east")
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    (run,) = execute(materialized.defs, materialized.spec, result.run_requests, materialized.instance)
    (after,) = store.entries().values()
    assert after["sha256"] != before["sha256"]  # one of its inputs changed: refitted in the same run
    fallback_events = [
        e for e in run.get_asset_materialization_events() if e.event_specific_data.materialization.asset_key.path[-1] == "fallback_model"
    ]
    assert fallback_events[0].event_specific_data.materialization.metadata["status"].value == "trained"


def test_runs_leave_the_fallback_out_only_when_no_change_can_reach_its_inputs(make_project):
    from retrain_plugins.dagster.execution import execute, materialize_all, tick
    from retrain_plugins.demo import scenarios
    from retrain_plugins.store import sha256_file

    project = make_project(fallback={"windows": 2})  # fitted on 2025-02 and 2025-03
    assert materialize_all(project.defs, project.spec, project.instance).success
    store = ModelStore(model_store_root(project.spec) / "_fallback")
    (before,) = store.entries().values()
    digest = sha256_file(store.path_of(before))

    def update(month: str, cohort: str) -> tuple[set[str], list[str]]:
        scenarios.edit_rows(project.data, month, cohort)
        result = tick(project.defs, project.sensor, project.instance)
        (request,) = result.run_requests
        (run,) = execute(project.defs, project.spec, result.run_requests, project.instance)
        assert run.success
        events = run.get_asset_materialization_events()
        return {k.path[-1] for k in request.asset_selection}, [
            e.event_specific_data.materialization.metadata["partition"].value
            for e in events
            if e.event_specific_data.materialization.asset_key.path[-1] == "sub_model"
        ]

    # 2025-01 is older than both of the fallback's windows: left out of the run, file untouched
    selected, trained = update("2025-01", "east")
    assert trained == ["2025-01-01/east"] and "fallback_model" not in selected and "model_bundle" in selected
    assert store.entries() == {k: before for k in store.entries()} and sha256_file(store.path_of(before)) == digest
    # 2025-02 is one of them: in the run, refitted
    selected, trained = update("2025-02", "north")
    assert trained == ["2025-02-01/north"] and "fallback_model" in selected
    (after,) = store.entries().values()
    assert after["sha256"] != before["sha256"] and "2025-02-01/north" in after["inputs"]


def test_a_corrupted_artifact_never_serves_and_is_repaired(materialized, scoring_frame):
    from retrain_plugins import StoreError
    from retrain_plugins.dagster.execution import execute, tick
    from retrain_plugins.dagster.tags import REASONS_TAG

    store = ModelStore(model_store_root(materialized.spec))
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []
    entry = next(e for k, e in store.entries().items() if str(k) == "2025-03-01/north")
    path = store.path_of(entry)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    north = scoring_frame.filter(pl.col("region") == "north")
    scored = RoutedModel.load(store.root).predict(north)
    assert set(scored["route"]) == {"damaged_sub_model"} and set(scored["served_by"]) == {"fallback"}
    bundle = dict(RoutedModel.load(store.root).bundle, fallback=None)
    with pytest.raises(StoreError, match="corrupted"):
        RoutedModel(store, bundle).predict(north)

    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert [r.tags[REASONS_TAG] for r in result.run_requests] == ['{"2025-03-01/north":"repair"}']
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []  # asked once
    assert all(r.success for r in execute(materialized.defs, materialized.spec, result.run_requests, materialized.instance))
    repaired = RoutedModel.load(store.root).predict(north)
    assert set(repaired["route"]) == {"own_sub_model"}


def _check_passed(result, name: str) -> bool:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation.passed


def test_regression_end_to_end_routes_predicted_values(make_project):
    from retrain_plugins.dagster.execution import materialize_all

    from .helpers import amounts, relabel

    project = make_project("regression")
    relabel(project, amounts)  # float labels: task auto -> regression
    result = materialize_all(project.defs, project.spec, project.instance)
    assert result.success and _check_passed(result, "routed_models_serve")
    model = RoutedModel.load(model_store_root(project.spec))
    assert (model.task, model.bundle["classes"]) == ("regression", None)
    store = ModelStore(model_store_root(project.spec))
    entry = store.entries()[next(k for k in store.entries() if str(k) == "2025-03-01/east")]
    assert entry["task"] == "regression" and entry["metric"] == "rmse" and entry["rmse_holdout"] == entry["metric_holdout"] > 0
    assert "auc_holdout" not in entry and entry["label_rate"] is None
    frame = asof_training_set(project.spec, load_feature_service_view(project.spec), windows(project.spec)[-1:], None)
    scored = model.predict(pl.concat([frame, frame.head(2).with_columns(pl.lit("atlantis").alias("region"))]))
    trainer = make_trainer("catboost", task="regression")
    east = scored.filter(pl.col("region") == "east")
    direct = trainer.predict(trainer.load(store.path_of(entry)), east.select(model.features))
    assert scored["prediction"].dtype == pl.Float64 and (east["prediction"].to_numpy() == direct).all()
    assert not east["prediction"].is_between(0.0, 1.0).all()  # values, not probabilities
    assert scored.tail(2)["served_by"].to_list() == ["fallback", "fallback"]
    assert model.bundle["fallback"]["task"] == "regression"


def test_multiclass_end_to_end_routes_the_likeliest_class_and_one_probability_per_class(make_project):
    from retrain_plugins.dagster.execution import materialize_all

    from .helpers import relabel, three_classes

    project = make_project("multiclass", task="multiclass")
    relabel(project, three_classes)
    result = materialize_all(project.defs, project.spec, project.instance)
    assert result.success and _check_passed(result, "routed_models_serve")
    model = RoutedModel.load(model_store_root(project.spec))
    assert (model.task, model.classes) == ("multiclass", [0, 1, 2])
    store = ModelStore(model_store_root(project.spec))
    entry = store.entries()[next(k for k in store.entries() if str(k) == "2025-03-01/north")]
    assert entry["classes"] == [0, 1, 2] and entry["metric"] == "logloss" and 0 <= entry["accuracy_holdout"] <= 1
    frame = asof_training_set(project.spec, load_feature_service_view(project.spec), windows(project.spec)[-1:], ["north"])
    scored = model.predict(frame)
    proba = scored.select("proba_0", "proba_1", "proba_2").to_numpy()
    trainer = make_trainer("catboost", task="multiclass")
    direct = trainer.predict(trainer.load(store.path_of(entry)), frame.select(model.features))
    assert np.array_equal(proba, direct) and np.allclose(proba.sum(axis=1), 1.0)
    assert scored["prediction"].to_list() == [[0, 1, 2][i] for i in direct.argmax(axis=1)]


def test_sub_models_with_fewer_classes_give_zero_to_the_classes_they_never_saw(tmp_path):
    from retrain_plugins.partitions import PartitionKey
    from retrain_plugins.routing import publish_bundle
    from retrain_plugins.testing import make_dataset

    features, labels = make_dataset(task="multiclass", categorical=True)
    store = ModelStore(tmp_path / "models")
    trainer = make_trainer("sklearn_hgb", {"max_iter": 10}, task="multiclass", categorical=["color"])
    two = labels != "c"
    fitted = {"full": trainer.fit(features, labels), "two": trainer.fit(features.filter(pl.Series(two)), labels[two])}
    for cohort, model in fitted.items():
        meta = {"rows": 480, "task": "multiclass", "classes": trainer.classes(model), "categorical_features": ["color"],
                "window_start": "2025-01-01T00:00:00"}
        store.put(PartitionKey("2025-01-01", cohort), lambda p, m=model: trainer.save(m, p), trainer.suffix, meta)
    payload = {"name": "t", "task": "multiclass", "feature_columns": features.columns, "cohort_column": "cohort",
               "trainer": "sklearn_hgb", "trainer_params": {"max_iter": 10}, "min_rows": 0}
    bundle = publish_bundle(store, payload)
    assert (bundle["classes"], bundle["categorical_features"]) == (["a", "b", "c"], ["color"])
    rows = features.head(6).with_columns(pl.Series("cohort", ["full", "two"] * 3))
    scored = RoutedModel(store, bundle).predict(rows)
    two_rows = scored.filter(pl.col("cohort") == "two")
    assert (two_rows["proba_c"] == 0.0).all() and (scored.filter(pl.col("cohort") == "full")["proba_c"] > 0).all()
    direct = trainer.predict(fitted["two"], two_rows.select(features.columns))
    assert np.array_equal(two_rows.select("proba_a", "proba_b").to_numpy(), direct)
    assert scored["prediction"].dtype == pl.String and set(scored["prediction"]) <= {"a", "b", "c"}
