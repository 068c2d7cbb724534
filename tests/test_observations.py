"""What the change sensor reports into Dagster, read back from the instance after real ticks.

Observations of the ``training_set`` partitions whose fingerprint changed (data version = that
fingerprint), evaluations of ``source_files_valid`` on the source assets naming the file and
column, and the standard ``dagster/row_count`` / ``dagster/column_schema`` of training sets.
"""

from __future__ import annotations

import json

import polars as pl
from dagster import AssetCheckKey, AssetKey, AssetRecordsFilter, AssetSelection, TableColumn, materialize

from retrain_plugins.changes.detector import current_fingerprint, state_store
from retrain_plugins.dagster.execution import execute, retraining_assets, tick
from retrain_plugins.dagster.observations import SOURCE_CHECK
from retrain_plugins.dagster.tags import DETAIL_TAG, SEQ_TAG
from retrain_plugins.demo import scenarios
from retrain_plugins.partitions import PartitionKey

TRAINING_SET = AssetKey(["churn", "training_set"])
LABELS_CHECK = AssetCheckKey(AssetKey(["churn", "labels"]), SOURCE_CHECK)
FEATURES_CHECK = AssetCheckKey(AssetKey(["churn", "features"]), SOURCE_CHECK)


def _observations(instance) -> list:
    records = instance.fetch_observations(AssetRecordsFilter(asset_key=TRAINING_SET), limit=10_000, ascending=True)
    return [r.asset_observation for r in records.records]


def _meta(event) -> dict:
    return {name: value.value for name, value in event.metadata.items()}


def _evaluations(instance, key: AssetCheckKey) -> list:
    """Every recorded evaluation of ``key``, oldest first."""
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
    return [r.event.dagster_event.event_specific_data for r in reversed(records)]


def _settle(project) -> None:
    first = tick(project.defs, project.sensor, project.instance)
    assert first.run_requests == [] and first.skip_message.startswith("no partition changed")


def test_first_tick_observes_every_partition_and_passes_the_source_checks(project):
    result = tick(project.defs, project.sensor, project.instance)
    (request,) = result.run_requests  # nothing trained yet: all 12 partitions, one run
    details = json.loads(request.tags[DETAIL_TAG])
    seen = _observations(project.instance)
    keys = [PartitionKey(w, c) for w in ("2025-01-01", "2025-02-01", "2025-03-01") for c in ("east", "north", "south", "west")]
    assert sorted(o.partition for o in seen) == sorted(k.to_dagster() for k in keys)
    state = state_store(project.spec)
    for event in seen:
        key = PartitionKey.from_dagster(event.partition)
        meta = _meta(event)
        assert event.data_version == meta["fingerprint"] == current_fingerprint(project.spec, state, key)
        assert (meta["reason"], meta["detail"], meta["requested"]) == ("new_data", details[str(key)], True)
        assert meta["previous_fingerprint"] == "empty" and "trained_fingerprint" not in meta
        assert meta["sensor_seq"] == int(request.tags[SEQ_TAG])
    for key in (LABELS_CHECK, FEATURES_CHECK):
        (evaluation,) = _evaluations(project.instance, key)
        assert evaluation.passed and _meta(evaluation)["files_with_problems"] == 0
    # the run trains what the sensor observed: each training set records that fingerprint
    assert all(r.success for r in execute(project.defs, project.spec, result.run_requests, project.instance))
    for event in seen:
        (record,) = project.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=TRAINING_SET, asset_partitions=[event.partition]), limit=5
        ).records
        assert record.asset_materialization.metadata["fingerprint"].value == event.data_version
    # a quiet tick emits nothing at all
    quiet = tick(project.defs, project.sensor, project.instance)
    assert quiet.run_requests == [] and quiet.asset_events == ()
    assert len(_observations(project.instance)) == 12
    assert [len(_evaluations(project.instance, k)) for k in (LABELS_CHECK, FEATURES_CHECK)] == [1, 1]


def test_an_edit_is_observed_on_exactly_its_partition_before_any_run(materialized):
    _settle(materialized)
    # the sensor's first look (a new state; the models come from a full run) observes nothing:
    # every partition holds the data its sub-model was trained on
    assert _observations(materialized.instance) == []

    scenarios.edit_rows(materialized.data, "2025-02", "south")
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    (request,) = result.run_requests
    key = PartitionKey("2025-02-01", "south")
    (seen,) = _observations(materialized.instance)  # exactly the edited partition
    meta = _meta(seen)
    assert seen.partition == key.to_dagster()
    assert seen.data_version == current_fingerprint(materialized.spec, state_store(materialized.spec), key)
    assert meta["reason"] == "edited_rows" and meta["detail"] == json.loads(request.tags[DETAIL_TAG])[str(key)]
    trained = materialized.models()[key]["fingerprint"]
    assert meta["previous_fingerprint"] == meta["trained_fingerprint"] == trained != seen.data_version
    assert meta["requested"] is True and meta["sensor_seq"] == int(request.tags[SEQ_TAG])
    # its run has not happened yet: the next tick sees the same data and observes nothing new
    tick(materialized.defs, materialized.sensor, materialized.instance)
    assert len(_observations(materialized.instance)) == 1

    # the file changes back before the run: observed again, as the data its sub-model already has
    scenarios.edit_rows(materialized.data, "2025-02", "south")  # flips the same labels back
    back = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert back.run_requests == []
    first, second = _observations(materialized.instance)
    assert (second.partition, second.data_version) == (key.to_dagster(), trained)
    assert _meta(second)["reason"] == "none" and _meta(second)["requested"] is False
    assert _meta(second)["previous_fingerprint"] == first.data_version


def test_bad_source_files_fail_the_check_naming_file_and_column_until_fixed(materialized):
    _settle(materialized)
    passed = {key: _evaluations(materialized.instance, key) for key in (LABELS_CHECK, FEATURES_CHECK)}
    assert all(len(v) == 1 and v[0].passed for v in passed.values())

    activity = materialized.data / "sources/activity/month=2025-02/part-0.parquet"
    frame = pl.read_parquet(activity)
    frame.with_columns(pl.col("spend_30d").cast(pl.String)).write_parquet(activity)
    labels = materialized.data / "sources/labels/month=2025-03/part-0.parquet"
    original = labels.read_bytes()
    labels.write_bytes(original[: len(original) // 2])  # truncated parquet
    held = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert held.run_requests == []

    features = materialized.instance.get_latest_asset_check_evaluation_record(FEATURES_CHECK).event.dagster_event.event_specific_data
    assert not features.passed and features.severity.value == "ERROR"
    (problem,) = _meta(features)["problems"]
    assert problem["file"] == str(activity) and problem["source"] == "customer_activity_fv"
    assert problem["columns"] == ["spend_30d"]
    assert problem["problem"] == f"{activity}: column 'spend_30d' is VARCHAR, expected numeric"
    assert f"{activity} (column 'spend_30d')" in features.description
    labels_eval = _evaluations(materialized.instance, LABELS_CHECK)[-1]
    (problem,) = _meta(labels_eval)["problems"]
    assert not labels_eval.passed and problem["file"] == str(labels) and problem["columns"] == []
    assert problem["problem"].startswith(f"{labels}: unreadable parquet")

    # the same problems on the next tick: nothing new is recorded
    tick(materialized.defs, materialized.sensor, materialized.instance)
    assert [len(_evaluations(materialized.instance, k)) for k in (LABELS_CHECK, FEATURES_CHECK)] == [2, 2]

    # another problem in the feature file: a new failed evaluation, naming the missing column
    frame.drop("orders_30d").with_columns(pl.col("spend_30d").cast(pl.String)).write_parquet(activity)
    tick(materialized.defs, materialized.sensor, materialized.instance)
    features = _evaluations(materialized.instance, FEATURES_CHECK)[-1]
    assert [p["columns"] for p in _meta(features)["problems"]] == [["orders_30d"]]

    # fixed: both checks pass again, once
    frame.write_parquet(activity)
    labels.write_bytes(original)
    tick(materialized.defs, materialized.sensor, materialized.instance)
    tick(materialized.defs, materialized.sensor, materialized.instance)
    for key in (LABELS_CHECK, FEATURES_CHECK):
        history = _evaluations(materialized.instance, key)
        assert history[-1].passed and _meta(history[-1])["problems"] == []
    assert [len(_evaluations(materialized.instance, k)) for k in (LABELS_CHECK, FEATURES_CHECK)] == [3, 4]


def test_executing_the_source_check_validates_every_file_now(materialized):
    path = materialized.data / "sources/labels/month=2025-01/part-0.parquet"
    pl.read_parquet(path).drop("region").write_parquet(path)
    result = materialize(
        list(materialized.defs.assets),
        selection=AssetSelection.checks(LABELS_CHECK, FEATURES_CHECK),
        instance=materialized.instance,
        resources=materialized.defs.resources,
    )
    assert result.success  # a failed check is an outcome, not a failed run
    outcomes = {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}
    assert outcomes["features"].passed
    (problem,) = _meta(outcomes["labels"])["problems"]
    assert not outcomes["labels"].passed
    assert (problem["file"], problem["columns"]) == (str(path), ["region"])


def test_training_sets_carry_dagster_row_count_and_column_schema(materialized):
    key = PartitionKey("2025-03-01", "west")
    ran = materialize(
        retraining_assets(materialized.defs, materialized.spec),
        selection=[TRAINING_SET],
        partition_key=key.to_dagster(),
        instance=materialized.instance,
        resources=materialized.defs.resources,
    )
    assert ran.success
    (record,) = materialized.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=TRAINING_SET, asset_partitions=[key.to_dagster()]), limit=5
    ).records
    meta = record.asset_materialization.metadata
    frame = pl.read_parquet(meta["path"].value)
    assert meta["dagster/row_count"].value == frame.height == meta["rows"].value > 0
    schema = meta["dagster/column_schema"].value
    assert [(c.name, c.type) for c in schema.columns] == [(n, str(t)) for n, t in frame.schema.items()]
    assert meta["columns"].value == {n: str(t) for n, t in frame.schema.items()}
    described = {c.name: c.description for c in schema.columns}
    assert described["churned"] == "label" and described["customer_id"] == "entity key"
    assert described["region"] == "cohort (partition key)" and described["sessions_7d"] == "feature (customer_activity_fv)"
    assert isinstance(schema.columns[0], TableColumn)
