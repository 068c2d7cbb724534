"""The change sensor requests exactly the affected partitions, and only those retrain."""

from __future__ import annotations

import json

from dagster import DagsterRunStatus, RunsFilter

from retrain_plugins.dagster.execution import execute, tick
from retrain_plugins.dagster.tags import REASON_TAG, REASONS_TAG
from retrain_plugins.demo import scenarios
from retrain_plugins.partitions import PartitionKey

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def _requested(tick_result) -> list[tuple[str, str, dict]]:
    return [
        (r.tags[RANGE_START], r.tags[RANGE_END], json.loads(r.tags[REASONS_TAG])) for r in tick_result.run_requests
    ]


def _settle(project):
    """First tick on a copied project re-reads every file: it must find nothing to do."""
    first = tick(project.defs, project.sensor, project.instance)
    assert first.run_requests == []
    assert first.skip_message.startswith("no partition changed")


def test_no_change_skips(materialized):
    _settle(materialized)
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert result.run_requests == []
    assert result.skip_message == "no partition changed (0 changed file(s) of 11)"


def test_edit_in_one_cell_requests_exactly_that_partition_and_only_it_retrains(materialized):
    _settle(materialized)
    before = materialized.artifact_digests()
    scenarios.edit_rows(materialized.data, "2025-02", "north")
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert _requested(result) == [("north|2025-02-01", "north|2025-02-01", {"2025-02-01/north": "edited_rows"})]
    assert result.run_requests[0].tags[REASON_TAG] == "edited_rows"

    runs = execute(materialized.defs, materialized.spec, result.run_requests, materialized.instance)
    assert all(r.success for r in runs)
    after = materialized.artifact_digests()
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {PartitionKey("2025-02-01", "north")}
    # every other sub-model file: same path, same bytes, same mtime
    assert {k: v for k, v in after.items() if k not in changed} == {k: v for k, v in before.items() if k not in changed}
    assert materialized.models()[PartitionKey("2025-02-01", "north")]["reason"] == "edited_rows"
    # exactly one run happened on this instance
    runs_on_instance = materialized.instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    assert len(runs_on_instance) == 1
    # and afterwards the sensor is quiet again
    again = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert again.run_requests == []


def test_identical_rewrite_requests_nothing(materialized):
    _settle(materialized)
    assert scenarios.rewrite_identical(materialized.data, "labels", "2025-03")
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert result.run_requests == []
    # same label rows: no cell needs its features joined again
    assert result.skip_message == "no partition changed (1 changed file(s) of 11, 0 cell(s) re-fingerprinted)"
    assert scenarios.rewrite_identical(materialized.data, "activity", "2025-02")
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert result.run_requests == []
    # a feature file: every cell of the two months it reaches (TTL) is joined again, and found equal
    assert result.skip_message == "no partition changed (1 changed file(s) of 11, 8 cell(s) re-fingerprinted)"


def test_late_rows_request_their_old_window_with_reason_late_data(materialized):
    _settle(materialized)
    scenarios.late_rows(scenarios.DemoConfig(n_customers=60, months=3), materialized.data, "2025-01", cohorts=("south", "west"))
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    # south and west are neighbours in key order, so one run covers both
    assert _requested(result) == [
        ("south|2025-01-01", "west|2025-01-01", {"2025-01-01/south": "late_data", "2025-01-01/west": "late_data"})
    ]


def test_feature_row_change_requests_the_partitions_that_join_it(materialized):
    """Edit one customer's activity on one day: only the label rows joined to it change."""
    import polars as pl

    from retrain_plugins.demo.generate import write_parquet

    _settle(materialized)
    labels = pl.read_parquet(materialized.data / "sources/labels/month=2025-03/part-0.parquet")
    target = labels.filter(pl.col("region") == "east").row(0, named=True)
    day = target["label_timestamp"].replace(hour=0)
    path = materialized.data / "sources/activity/month=2025-03/part-0.parquet"
    activity = pl.read_parquet(path)
    hit = (pl.col("customer_id") == target["customer_id"]) & (pl.col("event_timestamp") == day)
    assert activity.filter(hit).height == 1
    write_parquet(activity.with_columns(pl.when(hit).then(777).otherwise(pl.col("sessions_7d")).alias("sessions_7d")), path)
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert _requested(result) == [("east|2025-03-01", "east|2025-03-01", {"2025-03-01/east": "edited_rows"})]


def test_lookback_followers_are_requested(make_project):
    """With lookback 2, an edit in February also affects March's sub-model (trained on Feb + Mar)."""
    from retrain_plugins.dagster.execution import materialize_all

    project = make_project(windows={"lookback": 2})
    assert materialize_all(project.defs, project.spec, project.instance).success
    _settle(project)
    scenarios.edit_rows(project.data, "2025-02", "west")
    result = tick(project.defs, project.sensor, project.instance)
    assert _requested(result) == [
        ("west|2025-02-01", "west|2025-03-01", {"2025-02-01/west": "edited_rows", "2025-03-01/west": "edited_rows"})
    ]
    before = project.artifact_digests()
    assert all(r.success for r in execute(project.defs, project.spec, result.run_requests, project.instance))
    after = project.artifact_digests()
    assert {k for k in before if before[k] != after[k]} == {
        PartitionKey("2025-02-01", "west"),
        PartitionKey("2025-03-01", "west"),
    }


def test_a_partition_that_changes_back_runs_again(materialized):
    """Run keys must not block a partition whose data returns to an earlier state."""
    _settle(materialized)
    path = materialized.data / "sources/labels/month=2025-02/part-0.parquet"
    original = path.read_bytes()
    keys = []
    for _ in range(2):
        scenarios.edit_rows(materialized.data, "2025-02", "north")
        result = tick(materialized.defs, materialized.sensor, materialized.instance)
        assert len(result.run_requests) == 1
        keys.append(result.run_requests[0].run_key)
        assert all(r.success for r in execute(materialized.defs, materialized.spec, result.run_requests, materialized.instance))
        path.write_bytes(original)
        result = tick(materialized.defs, materialized.sensor, materialized.instance)
        assert _requested(result) == [("north|2025-02-01", "north|2025-02-01", {"2025-02-01/north": "edited_rows"})]
        keys.append(result.run_requests[0].run_key)
        assert all(r.success for r in execute(materialized.defs, materialized.spec, result.run_requests, materialized.instance))
    assert len(set(keys)) == 4
