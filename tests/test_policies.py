"""Retrain strategies, the champion/challenger gate and rollback, through real Dagster runs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from retrain_plugins import ModelStore, RoutedModel, StoreError, asof_training_set, load_feature_service_view
from retrain_plugins.dagster.execution import execute, materialize_all, tick
from retrain_plugins.demo.generate import write_parquet
from retrain_plugins.layout import model_store_root
from retrain_plugins.partitions import PartitionKey, windows
from retrain_plugins.trainers import make_trainer

KEY = PartitionKey("2025-03-01", "north")
LABELS = "sources/labels/month=2025-03"


def _run_sensor(project) -> list:
    result = tick(project.defs, project.sensor, project.instance)
    assert result.run_requests, result.skip_message
    runs = execute(project.defs, project.spec, result.run_requests, project.instance)
    assert all(r.success for r in runs)
    return runs


def _append_newer_labels(project, rows: int = 30) -> None:
    """New north labels after every existing one (last evening of the window)."""
    labels = pl.read_parquet(project.data / LABELS / "part-0.parquet").filter(pl.col("region") == "north")
    last = labels["label_timestamp"].max()
    new = labels.head(rows).with_columns(
        (pl.lit(last) + pl.duration(minutes=pl.int_range(1, rows + 1))).alias("label_timestamp"),
        (pl.int_range(0, rows) % 2).cast(pl.Int64).alias("churned"),
    )
    write_parquet(new, project.data / LABELS / "part-newer.parquet")


@pytest.fixture
def warm(make_project):
    project = make_project(trainer={"name": "catboost", "params": {"iterations": 25, "depth": 4}, "strategy": "warm_start"})
    assert materialize_all(project.defs, project.spec, project.instance).success
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    return project


def test_warm_start_continues_the_current_model_on_new_rows_only(warm):
    before = warm.models()[KEY]
    assert before["strategy"] == "refit" and "no current sub-model" in before["strategy_note"]
    _append_newer_labels(warm)
    _run_sensor(warm)
    after = warm.models()[KEY]
    assert after["strategy"] == "warm_start" and after["strategy_note"] is None
    assert after["model_size"] == 50  # 25 trees continued by 25
    assert after["rows"] == before["rows"] + 30
    assert after["rows_trained"] == after["rows"] - before["rows"] - after["rows_holdout"]


def test_warm_start_falls_back_to_refit_when_old_rows_changed_or_the_cap_is_reached(warm):
    path = warm.data / LABELS / "part-0.parquet"
    frame = pl.read_parquet(path)
    north = pl.col("region") == "north"
    earliest = frame.filter(north)["label_timestamp"].min()
    flip_one = north & (pl.col("label_timestamp") == earliest)
    flipped = pl.when(flip_one).then(1 - pl.col("churned")).otherwise(pl.col("churned")).alias("churned")
    write_parquet(frame.with_columns(flipped), path)
    _append_newer_labels(warm)
    _run_sensor(warm)
    entry = warm.models()[KEY]
    assert entry["strategy"] == "refit"
    assert entry["strategy_note"] == "warm_start not possible: rows the current sub-model was trained on changed; refitted"
    assert entry["model_size"] == 25


def test_warm_start_respects_max_trees(make_project):
    project = make_project(
        trainer={"name": "catboost", "params": {"iterations": 25, "depth": 4}, "strategy": "warm_start", "max_trees": 40}
    )
    assert materialize_all(project.defs, project.spec, project.instance).success
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    _append_newer_labels(project)
    _run_sensor(project)
    entry = project.models()[KEY]
    assert entry["strategy"] == "refit" and "would exceed max_trees 40" in entry["strategy_note"]


def test_a_worse_candidate_is_rejected_and_the_old_file_keeps_serving(make_project):
    project = make_project(gate={"enabled": True, "tolerance": 0.0})
    assert materialize_all(project.defs, project.spec, project.instance).success
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    champion = project.models()[KEY]
    digests = project.artifact_digests()
    # Poison the training part only: invert the labels of north's older rows, keep the holdout.
    path = project.data / LABELS / "part-0.parquet"
    frame = pl.read_parquet(path)
    north_times = frame.filter(pl.col("region") == "north")["label_timestamp"].sort()
    cutoff = north_times[int(len(north_times) * 0.7)]
    poisoned = frame.with_columns(
        pl.when((pl.col("region") == "north") & (pl.col("label_timestamp") < cutoff))
        .then(1 - pl.col("churned"))
        .otherwise(pl.col("churned"))
        .alias("churned")
    )
    write_parquet(poisoned, path)
    (run,) = _run_sensor(project)
    assert project.models()[KEY] == champion  # the manifest still names the champion
    assert project.artifact_digests() == digests  # and no serving file changed
    store = ModelStore(model_store_root(project.spec))
    (candidate,) = store.rejected(KEY)
    assert candidate["auc_holdout"] < candidate["champion_auc_holdout"]
    assert candidate["gate"].startswith("candidate AUC")
    mats = [
        e.event_specific_data.materialization
        for e in run.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key.path[-1] == "sub_model"
    ]
    assert [m.metadata["status"].value for m in mats] == ["rejected"]
    from retrain_plugins.cli.status import savings

    (ledger,) = savings(project.spec, project.instance)  # a rejected candidate is no retrain
    assert ledger[2:6] == (1, 0, 1, 0), ledger
    rows = _north_rows(project)
    served = RoutedModel.load(store.root).predict(rows)
    trainer = make_trainer("catboost")
    expected = trainer.predict_proba(trainer.load(store.path_of(champion)), rows.select(champion["feature_columns"]))
    assert set(served["served_by"]) == {str(KEY)}
    assert np.array_equal(served["prediction"].to_numpy(), expected)
    # the sensor does not ask again for data it already judged
    assert tick(project.defs, project.sensor, project.instance).run_requests == []


def _north_rows(project) -> pl.DataFrame:
    """North's rows of the newest window, with their features (what the router scores)."""
    spec = project.spec
    return asof_training_set(spec, load_feature_service_view(spec), windows(spec)[-1:], ["north"])


def test_rollback_restores_the_previous_version(materialized):
    from retrain_plugins.demo import scenarios

    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []
    store = ModelStore(model_store_root(materialized.spec))
    original = store.entries()[KEY]
    scenarios.edit_rows(materialized.data, "2025-03", "north")
    _run_sensor(materialized)
    retrained = store.entries()[KEY]
    assert retrained["sha256"] != original["sha256"]
    restored = store.rollback(KEY)
    assert restored["sha256"] == original["sha256"] and store.entries()[KEY]["sha256"] == original["sha256"]
    with pytest.raises(StoreError, match="no previous version"):
        store.rollback(KEY)
    trainer = make_trainer("catboost")
    probe = _north_rows(materialized).select(original["feature_columns"])
    assert np.array_equal(
        trainer.predict_proba(trainer.load(store.verified_path(store.entries()[KEY])), probe),
        trainer.predict_proba(trainer.load(store.path_of(original)), probe),
    )


def test_rollback_command_republishes_the_bundle_and_status_shows_it(materialized, capsys):
    import json

    from retrain_plugins.cli.main import main
    from retrain_plugins.cli.status import partition_states
    from retrain_plugins.demo import scenarios

    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []
    store = ModelStore(model_store_root(materialized.spec))
    original = store.entries()[KEY]
    scenarios.edit_rows(materialized.data, "2025-03", "north")
    _run_sensor(materialized)
    spec_file = materialized.root / "spec.json"
    spec_file.write_text(materialized.spec.model_dump_json())
    assert main(["rollback", "2025-03-01", "north", "--spec", str(spec_file)]) == 0
    assert f"serving {original['path']} again" in capsys.readouterr().out
    bundle = json.loads((store.root / "bundle.json").read_text())
    assert bundle["routes"]["north"][-1]["sha256"] == original["sha256"]
    states = {i["partition"]: i["state"] for i in partition_states(materialized.spec, materialized.instance)}
    assert states[KEY].startswith("rolled back: serves an older model")  # and says so
    # a human's choice: the next tick does not undo it; a change of the data does
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []
    assert main(["rollback", "2025-03-01", "north", "--spec", str(spec_file)]) == 1
    assert "has no previous version" in capsys.readouterr().err


# --- other tasks: the gate compares the task's metric in its direction; warm starts continue them ---


def _regression_project(make_project, poisoned: bool = False, **overrides):
    """A materialized project with amount labels (north's training rows wrecked if ``poisoned``)."""
    from .helpers import amounts, relabel

    project = make_project("regression", **overrides)
    relabel(project, amounts)
    clean = pl.read_parquet(project.data / LABELS / "part-0.parquet")
    if poisoned:
        _poison_older_north(project)
    assert materialize_all(project.defs, project.spec, project.instance).success
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    return project, clean


def _poison_older_north(project) -> None:
    """Wreck the amounts of north's older (training) rows, keep its newest (holdout) rows."""
    path = project.data / LABELS / "part-0.parquet"
    frame = pl.read_parquet(path)
    north_times = frame.filter(pl.col("region") == "north")["label_timestamp"].sort()
    cutoff = north_times[int(len(north_times) * 0.7)]
    older_north = (pl.col("region") == "north") & (pl.col("label_timestamp") < cutoff)
    wrecked = pl.when(older_north).then(50.0 - 8.0 * pl.col("churned")).otherwise(pl.col("churned"))
    write_parquet(frame.with_columns(wrecked.alias("churned")), path)


def test_a_regression_candidate_with_a_higher_rmse_is_rejected(make_project):
    project, _ = _regression_project(make_project, gate={"enabled": True, "tolerance": 0.0})
    champion = project.models()[KEY]
    assert champion["task"] == "regression"
    digests = project.artifact_digests()
    _poison_older_north(project)
    _run_sensor(project)
    assert project.models()[KEY] == champion and project.artifact_digests() == digests
    (candidate,) = ModelStore(model_store_root(project.spec)).rejected(KEY)
    assert candidate["rmse_holdout"] > candidate["champion_metric_holdout"] and candidate["champion_auc_holdout"] is None
    assert candidate["gate"].startswith(f"candidate RMSE {candidate['rmse_holdout']:.3f} > current ")
    assert candidate["gate"].endswith("+ tolerance 0.0")


def test_a_regression_candidate_with_a_lower_rmse_is_promoted(make_project):
    project, clean = _regression_project(make_project, poisoned=True, gate={"enabled": True, "tolerance": 0.0})
    champion = project.models()[KEY]
    # the clean amounts again: a gate comparing RMSE the way it compares AUC would refuse this candidate
    write_parquet(clean, project.data / LABELS / "part-0.parquet")
    _run_sensor(project)
    entry = project.models()[KEY]
    assert entry["sha256"] != champion["sha256"] and entry["gate"] == "promoted"
    assert entry["rmse_holdout"] < entry["champion_metric_holdout"]


def test_warm_start_continues_a_regression_sub_model(make_project):
    project, _ = _regression_project(
        make_project, trainer={"name": "catboost", "params": {"iterations": 25, "depth": 4}, "strategy": "warm_start"}
    )
    labels = pl.read_parquet(project.data / LABELS / "part-0.parquet").filter(pl.col("region") == "north")
    last = labels["label_timestamp"].max()
    new = labels.head(30).with_columns(
        (pl.lit(last) + pl.duration(minutes=pl.int_range(1, 31))).alias("label_timestamp"),
        (pl.int_range(0, 30) % 3).cast(pl.Float64).alias("churned"),
    )
    write_parquet(new, project.data / LABELS / "part-newer.parquet")
    _run_sensor(project)
    entry = project.models()[KEY]
    assert (entry["strategy"], entry["strategy_note"], entry["model_size"]) == ("warm_start", None, 50)
    assert entry["task"] == "regression" and entry["rmse_holdout"] is not None


def test_warm_start_continues_a_multiclass_sub_model_and_refits_for_a_class_it_does_not_know(make_project):
    from .helpers import relabel, three_classes

    project = make_project(
        "multiclass", task="multiclass",
        trainer={"name": "catboost", "params": {"iterations": 25, "depth": 4}, "strategy": "warm_start"},
    )
    relabel(project, three_classes)
    assert materialize_all(project.defs, project.spec, project.instance).success
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    labels = pl.read_parquet(project.data / LABELS / "part-0.parquet").filter(pl.col("region") == "north")
    last = labels["label_timestamp"].max()

    def append(name: str, start: int, classes: int) -> None:
        new = labels.head(30).with_columns(
            (pl.lit(last) + pl.duration(minutes=pl.int_range(start, start + 30))).alias("label_timestamp"),
            (pl.int_range(0, 30) % classes).cast(pl.Int64).alias("churned"),
        )
        write_parquet(new, project.data / LABELS / name)

    append("part-newer.parquet", 1, 3)
    _run_sensor(project)
    entry = project.models()[KEY]
    assert (entry["strategy"], entry["model_size"], entry["classes"]) == ("warm_start", 50, [0, 1, 2])
    append("part-newest.parquet", 100, 4)  # class 3 is new
    _run_sensor(project)
    entry = project.models()[KEY]
    assert entry["strategy"] == "refit" and entry["classes"] == [0, 1, 2, 3]
    assert entry["strategy_note"] == (
        "warm_start not possible: new rows hold classes [3] the current sub-model does not know; refitted"
    )
    bundle = RoutedModel.load(model_store_root(project.spec)).bundle
    assert bundle["classes"] == [0, 1, 2, 3]

