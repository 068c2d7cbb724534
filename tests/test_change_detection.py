"""Change detection beyond plain edits: new and vanished cohorts, definitions, drift, bad files."""

from __future__ import annotations

import json
import sqlite3

import polars as pl

from retrain_plugins import build_definitions, detect_changes, load_feature_service_view, state_store
from retrain_plugins.dagster.sensors import describe
from retrain_plugins.cli.status import explain, partition_states, savings
from retrain_plugins.dagster.execution import execute, materialize_all, tick
from retrain_plugins.dagster.tags import DETAIL_TAG, REASONS_TAG
from retrain_plugins.demo import scenarios
from retrain_plugins.layout import state_path
from retrain_plugins.partitions import PartitionKey, cohorts

from .conftest import CONFIG, Project
from .helpers import make_spec

RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _requests(result) -> list[tuple[str, str, dict]]:
    return [(r.tags[RANGE[0]], r.tags[RANGE[1]], json.loads(r.tags[REASONS_TAG])) for r in result.run_requests]


def _settled(project: Project) -> Project:
    first = tick(project.defs, project.sensor, project.instance)
    assert first.run_requests == [], first
    return project


def _with_spec(project: Project, **overrides) -> Project:
    spec = make_spec(project.root, **overrides)
    return project._replace(spec=spec, defs=build_definitions(spec))


def test_new_cohort_adds_partitions_and_trains_them_in_the_same_tick(make_project):
    project = make_project(dynamic_cohorts=True)
    assert materialize_all(project.defs, project.spec, project.instance).success
    _settled(project)
    scenarios.new_cohort(CONFIG, project.data, "central", months=2)
    result = tick(project.defs, project.sensor, project.instance)
    assert cohorts(project.spec, project.instance) == ["east", "north", "south", "west", "central"]
    assert _requests(result) == [
        (
            "central|2025-02-01",
            "central|2025-03-01",
            {"2025-02-01/central": "new_cohort", "2025-03-01/central": "new_cohort"},
        )
    ]
    before = project.artifact_digests()
    assert all(r.success for r in execute(project.defs, project.spec, result.run_requests, project.instance))
    after = project.artifact_digests()
    assert set(after) - set(before) == {PartitionKey("2025-02-01", "central"), PartitionKey("2025-03-01", "central")}
    assert all(after[k] == before[k] for k in before)


def test_static_cohorts_report_unknown_and_vanished_cohorts(materialized):
    _settled(materialized)
    scenarios.new_cohort(CONFIG, materialized.data, "central", months=1)
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert result.run_requests == []
    assert "cohorts in the data but not in the spec (not trained): ['central']" in result.skip_message

    for path in (materialized.data / "sources" / "labels").rglob("*.parquet"):
        frame = pl.read_parquet(path)
        frame.filter(pl.col("region") != "west").write_parquet(path)
    spec = materialized.spec
    report = detect_changes(spec, load_feature_service_view(spec), state_store(spec), spec.cohorts)
    assert report.vanished_cohorts == ["west"]
    assert "cohorts no longer in the data (their sub-models are kept): ['west']" in describe(report)
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert _requests(result) == [
        ("west|2025-01-01", "west|2025-03-01", {f"2025-0{m}-01/west": "edited_rows" for m in (1, 2, 3)})
    ]
    # West's partitions lost all their rows: they are requested, trained as "skipped", and the
    # previous sub-models keep serving.
    before = materialized.artifact_digests()
    assert all(r.success for r in execute(materialized.defs, materialized.spec, result.run_requests, materialized.instance))
    assert materialized.artifact_digests() == before
    states = {i["partition"]: i["state"] for i in partition_states(materialized.spec, materialized.instance)}
    assert states[PartitionKey("2025-01-01", "west")] == "skipped"


def test_definition_change_marks_stale_without_retraining(materialized):
    _settled(materialized)
    changed = _with_spec(materialized, trainer={"name": "catboost", "params": {"iterations": 30, "depth": 4}})
    result = tick(changed.defs, changed.sensor, changed.instance)
    assert result.run_requests == []
    assert "12 sub-model(s) stale by definition change (policy mark_stale)" in result.skip_message
    states = {i["partition"]: i["state"] for i in partition_states(changed.spec, changed.instance)}
    assert set(states.values()) == {"stale: definition changed"}
    # A real data change still retrains the partition it reaches, with the new definition.
    scenarios.edit_rows(changed.data, "2025-01", "south")
    result = tick(changed.defs, changed.sensor, changed.instance)
    assert _requests(result) == [("south|2025-01-01", "south|2025-01-01", {"2025-01-01/south": "edited_rows"})]
    assert all(r.success for r in execute(changed.defs, changed.spec, result.run_requests, changed.instance))
    states = {i["partition"]: i["state"] for i in partition_states(changed.spec, changed.instance)}
    assert states.pop(PartitionKey("2025-01-01", "south")) == "current"
    assert set(states.values()) == {"stale: definition changed"}


def test_definition_change_with_retrain_all_requests_everything_once(materialized):
    _settled(materialized)
    changed = _with_spec(
        materialized,
        trainer={"name": "catboost", "params": {"iterations": 30, "depth": 4}},
        change_detection={"definition_change": "retrain_all"},
    )
    result = tick(changed.defs, changed.sensor, changed.instance)
    assert [(s, e) for s, e, _ in _requests(result)] == [("east|2025-01-01", "west|2025-03-01")]
    assert set(_requests(result)[0][2].values()) == {"definition_change"}
    assert len(_requests(result)[0][2]) == 12
    assert tick(changed.defs, changed.sensor, changed.instance).run_requests == []


def test_drift_in_one_cohort_is_requested_with_reason_and_top_features(materialized):
    drifting = _with_spec(materialized, change_detection={"drift": {"min_rows": 20, "threshold": 0.2}})
    _settled(drifting)
    scenarios.drift(CONFIG, drifting.data, "east", "2025-03", shift=2.5)
    result = tick(drifting.defs, drifting.sensor, drifting.instance)
    assert _requests(result) == [("east|2025-03-01", "east|2025-03-01", {"2025-03-01/east": "drift"})]
    detail = json.loads(result.run_requests[0].tags[DETAIL_TAG])["2025-03-01/east"]
    assert "PSI" in detail
    assert all(r.success for r in execute(drifting.defs, drifting.spec, result.run_requests, drifting.instance))
    entry = drifting.models()[PartitionKey("2025-03-01", "east")]
    assert entry["reason"] == "drift" and "PSI" in entry["change"]


def test_unreadable_file_is_skipped_with_its_name_and_others_still_evaluated(materialized):
    _settled(materialized)
    bad = materialized.data / "sources/labels/month=2025-02/part-0.parquet"
    original = bad.read_bytes()
    bad.write_bytes(original[: len(original) // 2])  # truncated parquet
    scenarios.edit_rows(materialized.data, "2025-03", "north")
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert _requests(result) == [("north|2025-03-01", "north|2025-03-01", {"2025-03-01/north": "edited_rows"})]
    skipped = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert skipped.run_requests == []
    assert f"unreadable, skipped until fixed: {bad}" in skipped.skip_message
    bad.write_bytes(original)  # fixed: identical content, nothing to retrain
    fixed = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert fixed.run_requests == [] and "unreadable" not in fixed.skip_message


def test_explain_status_and_savings_ledger(materialized):
    _settled(materialized)
    scenarios.edit_rows(materialized.data, "2025-02", "east")
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    key = PartitionKey("2025-02-01", "east")
    pending = {i["partition"]: i["state"] for i in partition_states(materialized.spec, materialized.instance)}
    assert pending[key] == "stale: data changed (1 of 3 requests made)"  # requested, its run not done yet
    assert all(r.success for r in execute(materialized.defs, materialized.spec, result.run_requests, materialized.instance))
    text = explain(materialized.spec, key, materialized.instance)
    assert "2025-02-01/east of 'churn': current" in text and "edited_rows" in text
    untouched = explain(materialized.spec, PartitionKey("2025-02-01", "west"))
    assert "never requested by the change sensor" in untouched
    (row,) = savings(materialized.spec, materialized.instance)
    assert row[2:7] == (1, 1, 0, 0, 11) and row[7] > 0 and row[8] == "edited_rows"


def test_schema_changes_are_held_with_the_file_and_column_named(materialized):
    _settled(materialized)
    path = materialized.data / "sources/activity/month=2025-02/part-0.parquet"
    frame = pl.read_parquet(path)
    frame.drop("spend_30d").write_parquet(path)
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert result.run_requests == []
    assert f"{path}: missing column(s) ['spend_30d']" in result.skip_message
    frame.with_columns(pl.col("spend_30d").cast(pl.String)).write_parquet(path)
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert f"{path}: column 'spend_30d' is VARCHAR, expected numeric" in result.skip_message
    frame.write_parquet(path)  # back to the original rows
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []


def test_small_samples_never_report_drift(materialized):
    strict = _with_spec(materialized, change_detection={"drift": {"min_rows": 1000, "threshold": 0.2}})
    _settled(strict)
    scenarios.drift(CONFIG, strict.data, "east", "2025-03", shift=2.5)
    result = tick(strict.defs, strict.sensor, strict.instance)
    assert _requests(result) == [("east|2025-03-01", "east|2025-03-01", {"2025-03-01/east": "edited_rows"})]


def _detect(project: Project):
    """One detection pass, not committed (the sensor would commit it)."""
    view = load_feature_service_view(project.spec)
    return detect_changes(project.spec, view, state_store(project.spec), cohorts(project.spec, project.instance))


def test_a_label_only_change_joins_features_for_the_changed_cohorts_only(materialized):
    _settled(materialized)
    scenarios.edit_rows(materialized.data, "2025-02", "north")
    report = _detect(materialized)
    assert [(c.partition, c.reason) for c in report.changes] == [(PartitionKey("2025-02-01", "north"), "edited_rows")]
    assert report.cells_joined == 1  # the label file holds all four cohorts; only north's rows differ
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert _requests(result) == [("north|2025-02-01", "north|2025-02-01", {"2025-02-01/north": "edited_rows"})]
    # The tick recorded what it saw: no cell changed since. Its request was never run here, so the
    # partition is still unsettled: reconciliation offers it again (the sensor decides when).
    again = _detect(materialized)
    assert [(c.partition, c.reason) for c in again.changes] == [(PartitionKey("2025-02-01", "north"), "retry")]
    assert again.cells_joined == 0
    # edits in two windows and two cohorts: two cells joined, not the 2 x 2 rectangle around them
    scenarios.edit_rows(materialized.data, "2025-01", "east")
    scenarios.edit_rows(materialized.data, "2025-03", "west")
    report = _detect(materialized)
    assert [c.partition for c in report.changes if c.reason != "retry"] == [
        PartitionKey("2025-01-01", "east"),
        PartitionKey("2025-03-01", "west"),
    ]
    assert report.cells_joined == 2


def test_a_store_without_label_digests_joins_the_whole_window_once(materialized):
    """Cells recorded before label digests were kept (schema 1) are treated as changed, then recorded."""
    _settled(materialized)
    with sqlite3.connect(state_path(materialized.spec)) as con:
        con.execute("UPDATE cells SET label_digest = NULL")
    scenarios.edit_rows(materialized.data, "2025-02", "south")
    report = _detect(materialized)
    assert report.cells_joined == 4  # every cohort of the window: no digest to compare with
    assert [c.partition for c in report.changes] == [PartitionKey("2025-02-01", "south")]  # still exact
    report.commit()
    scenarios.edit_rows(materialized.data, "2025-02", "east")
    report = _detect(materialized)
    assert report.cells_joined == 1
    # south's change was committed but never run: offered again by reconciliation, as a retry
    assert [(c.partition, c.reason) for c in report.changes] == [
        (PartitionKey("2025-02-01", "east"), "edited_rows"),
        (PartitionKey("2025-02-01", "south"), "retry"),
    ]
