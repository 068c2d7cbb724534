"""One bad partition never stops serving for everyone ("never lose a change").

Cohort values no path can hold (empty, 300 bytes), a partition whose model learns nothing, and a
partition whose data is unusable: each is contained to itself, every other partition trains and
serves, and the bundle and fallback are published.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dagster import materialize

from retrain_plugins import load_feature_service_view
from retrain_plugins.bundle import bundle_is_stale, read_bundle
from retrain_plugins.changes.detector import detect_changes, state_store
from retrain_plugins.dagster.assets import asset_keys
from retrain_plugins.fallback import FALLBACK_KEY, fallback_store
from retrain_plugins.dagster.execution import execute, materialize_all, retraining_assets, tick
from retrain_plugins.demo import scenarios
from retrain_plugins.demo.generate import write_parquet
from retrain_plugins.layout import model_store_root, training_set_path
from retrain_plugins.partitions import SEGMENT_MAX, PartitionKey, cohorts, path_segment
from retrain_plugins.policies import CONSTANT, constant_predictions
from retrain_plugins.routing import OWN, UNSEEN, RoutedModel
from retrain_plugins.sql import connect
from retrain_plugins.dagster.outcomes import refresh_state
from retrain_plugins.store import ModelStore
from retrain_plugins.trainers import make_trainer
from retrain_plugins.labels import blank_cohort

LONG = "cohort-" + "\u00e9" * 10 + "x" * 273  # 300 bytes of UTF-8: no file name can hold it
FEB = "2025-02"


def _copy_cohort(project, month: str, source: str, cohort: str, part: str, **changes: pl.Expr) -> Path:
    """Write ``source``'s label rows of ``month`` again as ``cohort`` (in a new file ``part``)."""
    labels = project.data / f"sources/labels/month={month}"
    frame = pl.read_parquet(labels / "part-0.parquet").filter(pl.col("region") == source)
    frame = frame.with_columns(pl.lit(cohort).alias("region"), *(e.alias(c) for c, e in changes.items()))
    return write_parquet(frame, labels / f"{part}.parquet")


def _steps(result) -> dict[str, str]:
    """Step key -> last event type (STEP_SUCCESS, STEP_FAILURE, ...)."""
    out = {}
    for event in result.all_events:
        if event.step_key and event.event_type_value.startswith("STEP_") and event.event_type_value != "STEP_START":
            if event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED", "STEP_UP_FOR_RETRY"):
                out[event.step_key] = event.event_type_value
    return out


def _materializations(result, asset: str) -> dict[str | None, dict]:
    return {
        (str(m.partition) if m.partition else None): m.metadata
        for e in result.get_asset_materialization_events()
        if (m := e.event_specific_data.materialization).asset_key.path[-1] == asset
    }


def test_empty_and_overlong_cohorts_are_contained_and_everyone_else_serves(make_project):
    project = make_project(dynamic_cohorts=True)
    blank_files = [_copy_cohort(project, m, "north", c, f"part-blank-{i}") for i, (m, c) in enumerate([(FEB, ""), (FEB, "  ")])]
    for month in ("2025-01", FEB):
        _copy_cohort(project, month, "south", LONG, "part-long")
    view = load_feature_service_view(project.spec)
    # What the sensor's report says about the blank rows (computed, not committed).
    report = detect_changes(project.spec, view, state_store(project.spec), cohorts(project.spec, project.instance))
    counts = {str(p): pl.read_parquet(p).height for p in blank_files}
    assert report.refused == {
        p: f"{p}: {n} label row(s) with an empty cohort value in column 'region', not trained" for p, n in counts.items()
    }
    assert "" not in report.new_cohorts and "  " not in report.new_cohorts and LONG in report.new_cohorts

    first = tick(project.defs, project.sensor, project.instance)
    assert set(cohorts(project.spec, project.instance)) == {
        "east", "north", "south", "west", LONG
    }
    runs = execute(project.defs, project.spec, first.run_requests, project.instance)
    assert runs and all(r.success for r in runs)
    for run in runs:
        steps = _steps(run)
        assert steps["churn__fallback_model"] == steps["churn__model_bundle"] == "STEP_SUCCESS"

    # The long name: a bounded segment, its real name in the manifest and the bundle.
    models = project.models()
    key = PartitionKey("2025-02-01", LONG)
    entry = models[key]
    segment = Path(entry["path"]).parts[2]
    assert segment == path_segment(LONG) and len(segment) <= SEGMENT_MAX and entry["cohort"] == LONG
    record = ModelStore(model_store_root(project.spec)).record_path(key)
    assert len(record.name) <= 255 and json.loads(record.read_text())["cohort"] == LONG
    bundle = read_bundle(project.spec)
    assert set(bundle["routes"]) == {"east", "north", "south", "west", LONG}
    assert training_set_path(project.spec, key).exists() and len(training_set_path(project.spec, key).name) <= 255

    # The blank rows: no partition, no empty path segment, reported on the training sets of their window.
    for folder in (model_store_root(project.spec) / "artifacts", project.data / "training_sets" / "churn"):
        assert all(p.name not in ("", ".parquet", ".json") and not p.name.startswith(".parquet") for p in folder.rglob("*"))
    feb = {k: m for run in runs for k, m in _materializations(run, "training_set").items() if k.endswith("2025-02-01")}
    assert feb and all(m["refused_blank_cohort_rows"].value == counts for m in feb.values())
    jan = {k: m for run in runs for k, m in _materializations(run, "training_set").items() if k.endswith("2025-01-01")}
    assert jan and all("refused_blank_cohort_rows" not in m for m in jan.values())

    # Routing by the real name: the long cohort to its own sub-model, a blank one to the fallback.
    features = bundle["feature_columns"]
    frame = pl.read_parquet(training_set_path(project.spec, key)).head(3)
    rows = pl.concat([frame, frame.with_columns(pl.lit("").alias("region"))]).select("region", *features)
    served = RoutedModel.load(model_store_root(project.spec)).predict(rows)
    assert served["served_by"].to_list() == [f"2025-02-01/{LONG}"] * 3 + ["fallback"] * 3
    assert served["route"].to_list() == [OWN] * 3 + [UNSEEN] * 3

    # Later runs: the settled state requests nothing; an edit trains, and serving is published again.
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    scenarios.edit_rows(project.data, FEB, "south")
    later = tick(project.defs, project.sensor, project.instance)
    (run,) = execute(project.defs, project.spec, later.run_requests, project.instance)
    assert run.success and _steps(run)["churn__model_bundle"] == "STEP_SUCCESS"
    assert not bundle_is_stale(project.spec)


def test_blank_cohort_rows_are_named_in_the_sensor_tick_message(materialized):
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []
    path = _copy_cohort(materialized, FEB, "west", "", "part-blank")
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert result.run_requests == []  # nothing of any partition changed
    n = pl.read_parquet(path).height
    assert f"{path}: {n} label row(s) with an empty cohort value in column 'region', not trained" in result.skip_message


def test_blank_means_empty_or_only_white_space():
    values = ["", " ", "\t\n", "\u00a0", "\u3000 ", "a", " a ", "-", "\u200b"]
    con = connect()
    blank = [
        con.execute(f"SELECT {blank_cohort('CAST($v AS VARCHAR)')}", {"v": v}).fetchone()[0] for v in values
    ]
    assert blank == [True, True, True, True, True, False, False, False, False]


@pytest.mark.parametrize("task", ["binary", "regression", "multiclass"])
def test_constant_predictions_are_recognised_for_every_task(task):
    labels = {"binary": np.array([0, 1] * 20), "regression": np.arange(40.0), "multiclass": np.array([0, 1, 2, 3] * 10)}[task]
    trainer = make_trainer("catboost", {"iterations": 10, "depth": 3}, task=task)
    null = pl.DataFrame({"a": [None] * 40, "b": [3.0] * 40}, schema={"a": pl.Float64, "b": pl.Float64})
    assert constant_predictions(trainer, trainer.fit(null, labels), null)
    useful = null.with_columns(pl.Series("a", labels.astype(np.float64)))
    assert not constant_predictions(trainer, trainer.fit(useful, labels), useful)


def test_a_sub_model_that_learns_nothing_is_rejected_and_never_serves(make_project):
    # "ghost": label rows of customers no feature view knows, so every feature is null.
    project = make_project(cohorts=["east", "ghost", "north", "south", "west"])
    for month in ("2025-01", FEB, "2025-03"):
        _copy_cohort(project, month, "west", "ghost", "part-ghost", customer_id=pl.col("customer_id") + 10_000_000)
    assert materialize_all(project.defs, project.spec, project.instance).success
    store = ModelStore(model_store_root(project.spec))
    assert not any(k.cohort == "ghost" for k in store.entries())
    ghost = PartitionKey("2025-02-01", "ghost")
    (rejected,) = store.rejected(ghost)
    assert rejected["gate"] == CONSTANT
    assert refresh_state(project.spec, state_store(project.spec), project.instance).trained()[ghost].status == "rejected"
    bundle = read_bundle(project.spec)
    assert "ghost" not in bundle["routes"] and bundle["fallback"]
    frame = pl.read_parquet(training_set_path(project.spec, ghost)).head(4)
    served = RoutedModel.load(model_store_root(project.spec)).predict(frame)
    assert set(served["served_by"]) == {"fallback"} and set(served["route"]) == {UNSEEN}

    # A partition that had a model: its rows lose their features, the candidate is rejected, the old one serves.
    south = PartitionKey("2025-02-01", "south")
    before = store.entries()[south]
    labels = project.data / f"sources/labels/month={FEB}/part-0.parquet"
    frame = pl.read_parquet(labels)
    unknown = pl.when(pl.col("region") == "south").then(pl.col("customer_id") + 10_000_000).otherwise(pl.col("customer_id"))
    write_parquet(frame.with_columns(unknown.alias("customer_id")), labels)
    result = tick(project.defs, project.sensor, project.instance)
    runs = execute(project.defs, project.spec, result.run_requests, project.instance)
    assert runs and all(r.success for r in runs)
    assert store.entries()[south] == before
    assert store.rejected(south)[-1]["gate"] == CONSTANT
    assert read_bundle(project.spec)["routes"]["south"][1]["sha256"] == before["sha256"]


def test_a_failed_partition_does_not_hold_back_the_others(materialized):
    spec = materialized.spec
    store = ModelStore(model_store_root(spec))
    before = store.entries()
    fallback_sha = read_bundle(spec)["fallback"]["sha256"]
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []
    labels = materialized.data / f"sources/labels/month={FEB}/part-0.parquet"
    frame = pl.read_parquet(labels)
    write_parquet(frame.with_columns(pl.when(pl.col("region") == "south").then(2).otherwise(pl.col("churned")).alias("churned")), labels)
    scenarios.edit_rows(materialized.data, FEB, "north")
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    requested = {k for r in result.run_requests for k in json.loads(r.tags["retrain/reasons"])}
    assert requested == {"2025-02-01/north", "2025-02-01/south"}
    runs = [
        materialize(
            retraining_assets(materialized.defs, spec),
            instance=materialized.instance,
            resources=materialized.defs.resources,
            selection=request.asset_selection,
            tags=dict(request.tags),
            raise_on_error=False,
        )
        for request in result.run_requests
    ]
    failed = [r for r in runs if not r.success]
    (run,) = failed
    failure = next(e for e in run.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error.to_string()
    assert "1 of 2 partition(s) failed: partition 2025-02-01/south: label column 'churned' has" in failure
    # The fallback leaves out the training set its partition failed on: it is refitted on the
    # others, and the bundle is published with the promoted partition.
    assert "1 promoted; published: fallback model (trained)" in failure
    assert "bundle (" in failure
    north, south = PartitionKey("2025-02-01", "north"), PartitionKey("2025-02-01", "south")
    after = store.entries()
    assert after[north]["sha256"] != before[north]["sha256"] and after[south] == before[south]
    bundle = read_bundle(spec)
    assert [e["sha256"] for e in bundle["routes"]["north"] if e["window"] == "2025-02-01"] == [after[north]["sha256"]]
    assert not bundle_is_stale(spec)
    # Dagster's records: the promoted partition materialized, the failed one not; serving published by the step.
    subs = _materializations(run, "sub_model")
    assert "north|2025-02-01" in subs and "south|2025-02-01" not in subs
    assert _materializations(run, "model_bundle")[None]["published_by"].value == "training step (some partitions failed)"
    assert read_bundle(spec)["fallback"]["sha256"] != fallback_sha
    assert south.window + "/" + south.cohort not in fallback_store(spec).entries()[FALLBACK_KEY]["inputs"]

    # A later change elsewhere, the bad rows still there: it trains and serves, and so does the fallback.
    fallback_before = read_bundle(spec)["fallback"]["sha256"]
    scenarios.edit_rows(materialized.data, FEB, "west")
    later = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert {k for r in later.run_requests for k in json.loads(r.tags["retrain/reasons"])} == {"2025-02-01/west"}
    (ok,) = execute(materialized.defs, spec, later.run_requests, materialized.instance)
    assert ok.success and _steps(ok)["churn__model_bundle"] == "STEP_SUCCESS"
    west = PartitionKey("2025-02-01", "west")
    assert read_bundle(spec)["routes"]["west"][1]["sha256"] == store.entries()[west]["sha256"] != before[west]["sha256"]
    assert _materializations(ok, "fallback_model")[None]["status"].value == "trained"
    assert read_bundle(spec)["fallback"]["sha256"] != fallback_before

    # Fixed data: the next run succeeds, serving steps included.
    write_parquet(frame, labels)
    scenarios.edit_rows(materialized.data, FEB, "north")
    fixed = tick(materialized.defs, materialized.sensor, materialized.instance)
    again = execute(materialized.defs, spec, fixed.run_requests, materialized.instance)
    assert again and all(r.success for r in again)
    assert all(_steps(r)["churn__model_bundle"] == "STEP_SUCCESS" for r in again)


def test_bundle_is_stale_after_a_promotion_the_bundle_has_not_seen(materialized):
    spec = materialized.spec
    assert not bundle_is_stale(spec)
    scenarios.edit_rows(materialized.data, FEB, "north")
    key = PartitionKey("2025-02-01", "north")
    result = materialize(
        retraining_assets(materialized.defs, spec),
        instance=materialized.instance,
        resources=materialized.defs.resources,
        partition_key=str(key.to_dagster()),
        selection=[asset_keys(spec)["training_set"], asset_keys(spec)["sub_model"]],
    )
    assert result.success
    assert bundle_is_stale(spec)  # promoted, not published: the sensor asks for a serving-only run
    serving = [asset_keys(spec)["fallback_model"], asset_keys(spec)["model_bundle"]]
    assert materialize(
        retraining_assets(materialized.defs, spec),
        instance=materialized.instance,
        resources=materialized.defs.resources,
        selection=serving,
    ).success
    assert not bundle_is_stale(spec)


def test_a_bundle_behind_the_store_is_published_by_a_serving_run(materialized):
    """A run that promoted models but died before model_bundle: the next tick publishes."""
    from retrain_plugins.dagster.tags import SERVING_TAG

    project = materialized
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    scenarios.edit_rows(project.data, FEB, "west")
    result = tick(project.defs, project.sensor, project.instance)
    partitioned = [k for k in result.run_requests[0].asset_selection if k.path[-1] in ("training_set", "sub_model")]
    only_training = result.run_requests[0]._replace(asset_selection=partitioned)  # as if it died before serving
    assert all(r.success for r in execute(project.defs, project.spec, [only_training], project.instance))
    assert bundle_is_stale(project.spec)
    serving = tick(project.defs, project.sensor, project.instance)
    assert len(serving.run_requests) == 1 and serving.run_requests[0].tags[SERVING_TAG] == "true"
    assert {k.path[-1] for k in serving.run_requests[0].asset_selection} == {"fallback_model", "model_bundle"}
    assert all(r.success for r in execute(project.defs, project.spec, serving.run_requests, project.instance))
    assert not bundle_is_stale(project.spec)
    assert tick(project.defs, project.sensor, project.instance).run_requests == []


@pytest.mark.parametrize("publisher", ["run", "UI backfill"])
def test_no_serving_run_while_a_run_that_publishes_the_bundle_is_in_flight(materialized, publisher):
    """A retraining run promotes in its train step and publishes in its bundle step: a tick in
    between sees the store ahead of the bundle, and must leave the publishing to that run (or to
    the requested backfill whose serving assets are still to come)."""
    from dagster import DagsterRunStatus
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    from retrain_plugins.dagster.tags import RETRAINING_TAG, SERVING_TAG

    from .helpers import ui_backfill

    project = materialized
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    scenarios.edit_rows(project.data, FEB, "west")
    (request,) = tick(project.defs, project.sensor, project.instance).run_requests
    partitioned = [k for k in request.asset_selection if k.path[-1] in ("training_set", "sub_model")]
    assert all(r.success for r in execute(project.defs, project.spec, [request._replace(asset_selection=partitioned)], project.instance))
    assert bundle_is_stale(project.spec)  # the train step is done, the bundle step is still to come:
    if publisher == "run":
        in_flight = project.instance.add_run(
            DagsterRun(
                job_name="__ASSET_JOB",
                run_id=make_new_run_id(),
                status=DagsterRunStatus.STARTED,
                asset_selection=frozenset(request.asset_selection),
                tags={**request.tags, RETRAINING_TAG: project.spec.name},
            )
        )
    else:
        backfill = ui_backfill(project, ("fallback_model", "model_bundle"), None)
    waiting = tick(project.defs, project.sensor, project.instance)
    assert waiting.run_requests == [] and waiting.skip_message.startswith("no partition changed"), waiting
    if publisher == "run":
        project.instance.report_run_failed(in_flight, "died before its bundle step")
    else:
        project.instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELED))
    (serving,) = tick(project.defs, project.sensor, project.instance).run_requests  # now nobody will publish
    assert serving.tags[SERVING_TAG] == "true"
