"""Feast retrieval of one partition equals an independent DuckDB ASOF join, without leakage."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from retrain_plugins import asof_training_set, feast_training_set, load_feature_service_view
from retrain_plugins.demo.generate import write_parquet
from retrain_plugins.partitions import windows
from retrain_plugins.labels import label_rows


def test_feast_training_set_equals_duckdb_asof(project):
    view = load_feature_service_view(project.spec)
    window = windows(project.spec)[1:2]
    feast_frame = feast_training_set(project.spec, view, window, "north")
    asof_frame = asof_training_set(project.spec, view, window, ["north"])
    assert feast_frame.height == asof_frame.height > 20
    assert feast_frame["region"].unique().to_list() == ["north"]
    assert_frame_equal(feast_frame, asof_frame.select(feast_frame.columns), check_dtypes=False)
    # The demo data always has a snapshot inside the TTL, so every feature is present.
    assert feast_frame.select(view.feature_columns).null_count().sum_horizontal().item() == 0


def test_scattered_cells_join_exactly_as_in_the_whole_frame(project):
    """What the sensor joins after scattered edits: per-window cohorts, ranges scanned apart."""
    view = load_feature_service_view(project.spec)
    all_windows = windows(project.spec)
    first, last = all_windows[0].key, all_windows[2].key  # activity TTL 7 days: two separate ranges
    only = {first: {"north"}, last: None}
    part = asof_training_set(project.spec, view, all_windows, None, only=only)
    whole = asof_training_set(project.spec, view, all_windows, None)
    expected = whole.filter(
        ((pl.col("window") == first) & (pl.col("region") == "north")) | (pl.col("window") == last)
    )
    assert set(part["region"].unique()) == {"north", "south", "east", "west"} and part.height > 40
    key = ["window", "region", "customer_id", "label_timestamp"]
    assert_frame_equal(part.drop("row_id").sort(key), expected.drop("row_id").sort(key))
    assert part.select(view.feature_columns).null_count().sum_horizontal().item() == 0


def test_no_feature_from_after_the_label_time_and_ttl_respected(project):
    """Plant rows just after, exactly at, and just beyond the TTL of some label times."""
    spec = project.spec
    view = load_feature_service_view(spec)
    window = windows(spec)[2:3]
    labels = label_rows(spec, window, ["south"]).head(6)
    t = pl.col("label_timestamp")
    rows = pl.concat(
        [
            # after the label time: must never be used
            labels.slice(0, 2).select("customer_id", (t + timedelta(hours=1)).alias("event_timestamp"), pl.lit(-1).alias("sessions_7d")),
            # exactly at the label time: is used (Feast joins ts <= label time)
            labels.slice(2, 2).select("customer_id", t.alias("event_timestamp"), pl.lit(-2).alias("sessions_7d")),
        ]
    )
    planted = rows.with_columns(
        pl.lit(0, pl.Int64).alias("orders_30d"),
        pl.lit(0.0).alias("spend_30d"),
        pl.lit(0, pl.Int64).alias("support_tickets_30d"),
        pl.lit(0, pl.Int64).alias("days_since_last_order"),
        pl.lit(0.0).alias("discount_rate"),
        pl.col("sessions_7d").cast(pl.Int64),
    )
    month = window[0].key[:7]
    write_parquet(planted, project.data / "sources" / "activity" / f"month={month}" / "planted.parquet")
    frame = feast_training_set(spec, view, window, "south")
    reference = asof_training_set(spec, view, window, ["south"])
    assert_frame_equal(frame, reference.select(frame.columns), check_dtypes=False)
    by_entity = dict(zip(frame["customer_id"], frame["sessions_7d"]))
    assert -1 not in frame["sessions_7d"].to_list()
    for customer in labels.slice(2, 2)["customer_id"]:
        assert by_entity[customer] == -2


def test_feature_older_than_ttl_is_null(project):
    """Remove the activity of the weeks before a label month: TTL (7 days) leaves those labels without features."""
    spec = project.spec
    view = load_feature_service_view(spec)
    window = windows(spec)[1:2]  # February labels
    activity_dir = project.data / "sources" / "activity"
    # Keep only activity older than 7 days before the earliest February label.
    first_label = label_rows(spec, window, ["east"])["label_timestamp"].min()
    for path in activity_dir.rglob("*.parquet"):
        frame = pl.read_parquet(path).filter(pl.col("event_timestamp") < first_label - timedelta(days=8))
        write_parquet(frame, path)
    frame = feast_training_set(spec, view, window, "east")
    assert frame.height > 0
    assert frame["sessions_7d"].null_count() == frame.height  # 7-day TTL: all stale
    assert frame["tenure_days"].null_count() < frame.height  # 62-day TTL: profile still joins
    reference = asof_training_set(spec, view, window, ["east"])
    assert_frame_equal(frame, reference.select(frame.columns), check_dtypes=False)


@pytest.mark.parametrize("cohort", ["north", "west"])
def test_training_set_is_deterministic_and_sorted(project, cohort):
    view = load_feature_service_view(project.spec)
    window = windows(project.spec)[:1]
    first = feast_training_set(project.spec, view, window, cohort)
    second = feast_training_set(project.spec, view, window, cohort)
    assert_frame_equal(first, second)
    assert first["label_timestamp"].is_sorted()


def test_duckdb_asof_retrieval_path_writes_the_same_training_sets_as_feast(materialized, materialized_copy):
    """retrieval: duckdb_asof is selectable in the spec and yields Feast's frames exactly."""
    from retrain_plugins.layout import training_set_path
    from retrain_plugins.partitions import all_partitions

    fast = materialized_copy("asof", retrieval="duckdb_asof")  # a fresh project fully materialized with it
    for key in all_partitions(fast.spec):
        via_feast = pl.read_parquet(training_set_path(materialized.spec, key))
        via_asof = pl.read_parquet(training_set_path(fast.spec, key))
        assert_frame_equal(via_asof, via_feast)
    assert {k: e["fingerprint"] for k, e in fast.models().items()} == {
        k: e["fingerprint"] for k, e in materialized.models().items()
    }


_ASOF_RUN = """
import json, sys
from pathlib import Path
from dagster import DagsterInstance
from retrain_plugins import RetrainingSpec, build_definitions
from retrain_plugins.dagster.execution import execute, tick
spec = RetrainingSpec.model_validate_json(Path(sys.argv[1]).read_text())
defs, instance = build_definitions(spec), DagsterInstance.ephemeral()
requests = tick(defs, f"{spec.name}_change_sensor", instance).run_requests
results = execute(defs, spec, requests, instance)
print(json.dumps({"runs": [r.success for r in results], "feast_imported": "feast" in sys.modules}))
"""


def test_duckdb_asof_runs_never_import_feast(materialized_copy):
    """Importing Feast costs seconds per launched run: a duckdb_asof run that needs no online
    refresh (labels changed, not features) trains without it, in a fresh interpreter."""
    import json
    import subprocess
    import sys

    from retrain_plugins.dagster.execution import tick
    from retrain_plugins.demo import scenarios

    fast = materialized_copy("asof", retrieval="duckdb_asof")  # fully materialized with duckdb_asof
    assert tick(fast.defs, fast.sensor, fast.instance).run_requests == []  # records the listing
    scenarios.edit_rows(fast.data, "2025-02", "west")
    spec_file = fast.root / "spec.json"
    spec_file.write_text(fast.spec.model_dump_json())
    before = fast.models()
    out = subprocess.run([sys.executable, "-c", _ASOF_RUN, str(spec_file)], check=True, capture_output=True, text=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"runs": [True], "feast_imported": False}
    changed = {k for k, e in fast.models().items() if before.get(k) != e}
    assert {str(k) for k in changed} == {"2025-02-01/west"}
    # the same request with retrieval: feast does import it (the check above can fail)
    feast_file = fast.root / "spec-feast.json"
    feast_file.write_text(fast.spec.model_copy(update={"retrieval": "feast"}).model_dump_json())
    scenarios.edit_rows(fast.data, "2025-03", "west")
    out = subprocess.run([sys.executable, "-c", _ASOF_RUN, str(feast_file)], check=True, capture_output=True, text=True)
    assert json.loads(out.stdout.strip().splitlines()[-1])["feast_imported"] is True
